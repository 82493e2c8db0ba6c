"""A `kit tune` study directory as `kit report` shows it: trial counts, the best trials, and the
history and importance plots (drawn by `kit tune`'s own plotting code). Read-only."""
from __future__ import annotations

import base64
import csv
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StudyView:
    counts: dict  # trial state -> number of trials
    top: list  # the best five complete trials: {"number", "value", "params"}
    images: list  # (file name, base64 PNG): history.png, importances.png
    note: str | None  # why a plot is missing


def read_study(study_dir: Path) -> StudyView:
    """A study's trials and plots. A journal study is read again (trials since the last `kit tune`
    summary count) and drawn by `kit tune`'s own plotting code; a database study falls back to the
    trials.csv and PNGs that tune last wrote into its directory."""
    journal = study_dir / "journal.log"
    if journal.exists():
        try:
            import optuna
        except ImportError:
            optuna = None
        if optuna is not None:
            return _journal_study(optuna, study_dir, journal)
    counts, top = _trials_csv(study_dir / "trials.csv")
    images = [(name, base64.b64encode((study_dir / name).read_bytes()).decode("ascii"))
              for name in ("history.png", "importances.png") if (study_dir / name).exists()]
    return StudyView(counts, top, images, None if images else "no journal.log and no plots saved by `kit tune` "
                                                               "in this directory")


def _journal_study(optuna, study_dir: Path, journal: Path) -> StudyView:
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna.trial import TrialState

    storage = JournalStorage(JournalFileBackend(str(journal)))
    names = optuna.get_all_study_names(storage)
    name = study_dir.name if study_dir.name in names else names[0] if len(names) == 1 else None
    if name is None:
        return StudyView({}, [], [], f"{journal}: holds {len(names)} studies, none named {study_dir.name!r}")
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    top = [{"number": t.number, "value": t.value, "params": dict(t.params)} for t in complete[:5]]
    if not complete:
        return StudyView(counts, top, [], "no complete trial yet: nothing to plot")
    with_importances = False
    if len(complete) >= 2 and complete[0].params:  # as tune.summarize decides
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.importance.get_param_importances(study)
            with_importances = True
        except (RuntimeError, ValueError, ZeroDivisionError):
            pass
    from recsys_kit.tune.summary import _plots

    with tempfile.TemporaryDirectory() as tmp:
        paths, note = _plots(study, Path(tmp), with_importances)
        images = [(path.name, base64.b64encode(path.read_bytes()).decode("ascii")) for path in paths]
    if not with_importances and note is None:
        note = "no importances: too few or too uniform complete trials to tell"
    return StudyView(counts, top, images, note)


def _trials_csv(path: Path) -> tuple[dict, list]:
    """(trials per state, the best five complete trials) from the trials.csv tune wrote."""
    if not path.exists():
        return {}, []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get("state", "?")] = counts.get(row.get("state", "?"), 0) + 1
    complete = sorted((row for row in rows if row.get("state") == "COMPLETE" and row.get("value")),
                      key=lambda row: -float(row["value"]))
    return counts, [{"number": row.get("number"), "value": float(row["value"]),
                     "params": {k[len("params_"):]: v for k, v in row.items() if k.startswith("params_")}}
                    for row in complete[:5]]
