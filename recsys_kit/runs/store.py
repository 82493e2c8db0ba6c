"""Run directories: created once, never overwritten (files land through recsys_kit.files).

Reading a run back checks every file against the run's own data.json before use, so a damaged
or unfinished run (truncated, header-only, pickled or garbage .npy, wrong shape, corrupt JSON)
is one DataError naming the file, never a traceback or a memory map over the wrong bytes.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_kit.errors import DataError, os_error
from recsys_kit.files import ScoreFile, check_output_dir, check_run_name, npy_header

def create_run_dir(runs_dir: Path, name: str) -> Path:
    """runs_dir/name, or name-2, name-3 ... if taken: an existing run is never touched."""
    runs_dir = Path(runs_dir)
    check_run_name(name)
    check_output_dir(runs_dir, "--runs-dir")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 10_000):
            path = runs_dir / (name if attempt == 1 else f"{name}-{attempt}")
            try:
                path.mkdir()  # exclusive: fails if it exists, even under a racing process
                return path
            except FileExistsError:
                continue
    except OSError as err:
        raise os_error(runs_dir, err, "pass a writable --runs-dir") from None
    raise DataError(f"{runs_dir}: too many runs named {name!r}; pass another --name")


def default_run_name(model_name: str) -> str:
    return f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}"


# ----------------------------------------------------------------------------- reading a run back

def _damaged(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}; the run directory is damaged or unfinished, rerun `kit cv` "
                     f"(or `kit ensemble`) for it")


def run_shape(run_dir: Path) -> tuple[int, int]:
    """(users, items) as the run's data.json records them."""
    path = Path(run_dir) / "data.json"
    data = read_json(path)
    shape = (data.get("users"), data.get("items"))
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise _damaged(path, f"users/items are {shape[0]!r}/{shape[1]!r}, not positive integers")
    return shape


def _npy_header(path: Path) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, data offset) of a C-order .npy file; DataError for anything else."""
    if not path.is_file():
        raise _damaged(path, "missing" if not path.exists() else "not a regular file")
    try:
        shape, fortran_order, dtype, offset = npy_header(path)
    except (ValueError, OSError, SyntaxError, EOFError):
        raise _damaged(path, "not a NumPy .npy file (its header does not read)") from None
    if dtype.hasobject:
        raise _damaged(path, "holds pickled Python objects, which the kit never loads")
    if fortran_order:
        raise _damaged(path, "is in Fortran order; the kit writes C order")
    return shape, dtype, offset


def _check_npy(path: Path, shape: tuple, kinds: str, itemsize: int | None = None) -> np.dtype:
    """The header says `shape` and a dtype of one of `kinds` ('f', 'iu'...), and the file is exactly
    that long: a truncated or header-only copy fails here, before any memory map is made."""
    found, dtype, offset = _npy_header(path)
    if found != tuple(shape):
        raise _damaged(path, f"shape {found}, but data.json says {tuple(shape)}")
    if dtype.kind not in kinds or (itemsize is not None and dtype.itemsize != itemsize):
        raise _damaged(path, f"dtype {dtype}, expected {'float32' if kinds == 'f' else 'integers'}")
    size = path.stat().st_size
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        raise _damaged(path, f"{size:,} bytes where the header promises {expected:,} (truncated?)")
    return dtype


def load_scores(run_dir: Path, name: str, users: int | None = None) -> ScoreFile:
    """A float32 users x items score matrix, opened read-only (rows read on demand, see
    recsys_kit.files) once its header and size match the run's data.json (`users` rows
    instead of every user for a matrix of a user sample, such as the leaderboard estimate's)."""
    path = Path(run_dir) / name
    if not path.exists():
        if name.startswith("test_scores") and _refit_mode(run_dir) == "none":
            raise DataError(f"{Path(run_dir)}: made with `kit cv --refit none`, so it has OOF scores but no "
                            "test scores to blend or submit; rerun that `kit cv` without --refit none")
        raise DataError(f"{path}: missing; {Path(run_dir)} is not a finished run (rerun `kit cv`)")
    shape = run_shape(run_dir)
    _check_npy(path, shape if users is None else (users, shape[1]), "f", itemsize=4)
    return ScoreFile(path)


def _refit_mode(run_dir: Path) -> str | None:
    try:  # only to word the error: a damaged metrics.json gets the plain "missing" message
        return (json.loads((Path(run_dir) / "metrics.json").read_text()).get("refit") or {}).get("mode")
    except (OSError, ValueError, AttributeError):
        return None


def load_ids(run_dir: Path, name: str) -> np.ndarray:
    """user_ids.npy / item_ids.npy / folds.npy: integers, one per user (folds, user ids) or item."""
    users, items = run_shape(run_dir)
    path = Path(run_dir) / name
    _check_npy(path, (items,) if name == "item_ids.npy" else (users,), "iu")
    return np.load(path, allow_pickle=False)


def load_sparse(run_dir: Path, name: str) -> sp.csr_matrix:
    """holdout_input.npz / holdout_target.npz: a users x items CSR matrix."""
    import zipfile

    shape = run_shape(run_dir)
    path = Path(run_dir) / name
    if not path.is_file():
        raise _damaged(path, "missing" if not path.exists() else "not a regular file")
    try:
        matrix = sp.load_npz(path).tocsr()
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise _damaged(path, f"not a SciPy .npz matrix ({type(err).__name__})") from None
    if matrix.shape != tuple(shape):
        raise _damaged(path, f"shape {matrix.shape}, but data.json says {tuple(shape)}")
    return matrix


def read_json(path: Path) -> dict:
    """A JSON object from a run directory; DataError if missing or damaged."""
    path = Path(path)
    fix = f"is {path.parent} a run directory written by `kit cv`? (rerun it if damaged)"
    if not path.exists():
        raise DataError(f"{path}: missing; {fix}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({str(err).splitlines()[0]}); {fix}") from None
    except OSError as err:
        raise os_error(path, err, fix) from None
    if not isinstance(payload, dict):
        raise DataError(f"{path}: holds {type(payload).__name__}, not a JSON object; {fix}")
    return payload


def environment() -> dict:
    import torch

    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "numpy": np.__version__, "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_threads": torch.get_num_threads(), "argv": sys.argv}
