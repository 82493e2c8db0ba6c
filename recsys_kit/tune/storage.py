"""Where a `kit tune` study lives: a journal file (the default, in the study directory) or a
SQLAlchemy database (sqlite, PostgreSQL) shared by workers on many hosts.

Workers are started together (a job array): on a new storage they all race to create the same
tables, version rows and study row. The loser of each race only finds done what it was about to
do, so those errors are retried, never shown; any other error is one DataError line.
"""
from __future__ import annotations

import importlib.util
import re
import time
import warnings
from pathlib import Path

import optuna

from recsys_kit import files
from recsys_kit.errors import DataError

RACE_RETRIES = 8  # backing off 0.2 s, 0.4 s ...: about 6 s in all, far more than a schema takes


def open_storage(storage: str | None, study_dir: Path, heartbeat_interval: int, grace_period: int,
                 on_stale) -> tuple[optuna.storages.BaseStorage, str]:
    """(storage, where it is, for messages): `storage` None -> study_dir/journal.log, a path -> that
    journal file, a URL -> an RDB storage with heartbeats (`on_stale` re-queues a lost worker's trial)."""
    if storage is None or "://" not in storage:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(storage) if storage else study_dir / "journal.log"
        if path.is_dir():
            raise DataError(f"--storage {path}: is a directory; pass a journal file path or a database URL")
        files.check_output_dir(path.parent, "--storage" if storage else "--runs-dir")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path))), str(path)

    url = _with_driver(storage)
    for attempt in range(RACE_RETRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat
                return optuna.storages.RDBStorage(
                    url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period, heartbeat_stale_trial_callback=on_stale), _masked(url)
        except Exception as err:  # sqlalchemy / driver errors: a bad URL or an unreachable server
            if not _creation_race(err) or attempt == RACE_RETRIES - 1:
                raise DataError(f"--storage {_masked(url)}: cannot open ({type(err).__name__}: "
                                f"{_first_line(err)}); check the URL, server and credentials") from None
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def open_study(storage, where: str, name: str, pruner, sampler) -> optuna.Study:
    """The study `name` in `storage`, created by whichever worker gets there first."""
    for attempt in range(RACE_RETRIES):
        try:
            study = optuna.create_study(study_name=name, storage=storage, direction="maximize", pruner=pruner,
                                        sampler=sampler, load_if_exists=True)
            break
        except Exception as err:
            if not _creation_race(err) or attempt == RACE_RETRIES - 1:
                raise DataError(f"study {name!r} in {where}: cannot create or load ({type(err).__name__}: "
                                f"{_first_line(err)}); check the storage") from None
            time.sleep(0.2 * (attempt + 1))
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise DataError(f"study {name!r} in {where} does not maximise; pass another --study")
    return study


def _creation_race(err: BaseException) -> bool:
    """Does `err` only mean another worker created the same schema or row a moment earlier (or
    held SQLite's write lock while doing so)?"""
    import sqlalchemy.exc

    while err.__cause__ is not None and not isinstance(err, sqlalchemy.exc.SQLAlchemyError):
        err = err.__cause__  # optuna wraps some in StorageInternalError
    if isinstance(err, sqlalchemy.exc.IntegrityError):
        return True  # a unique key (a table's type, the version row, the study name) inserted twice
    text = str(err).lower()
    return (isinstance(err, (sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError,
                             sqlalchemy.exc.InternalError))
            and any(words in text for words in ("already exists", "duplicate", "database is locked")))


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def _with_driver(url: str) -> str:
    """`postgresql://` means SQLAlchemy's default driver (psycopg 3 since 2.1); use whichever is installed."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import sqlalchemy.dialects.postgresql as pg

    drivers = [pg.dialect.driver] + [d for d in ("psycopg", "psycopg2") if d != pg.dialect.driver]
    for driver in drivers:
        if importlib.util.find_spec(driver) is not None:
            return f"postgresql+{driver}://{rest}"
    raise DataError(f"--storage {_masked(url)}: no PostgreSQL driver installed; "
                    f"pip install psycopg2-binary (or 'psycopg[binary]')")


def _masked(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
