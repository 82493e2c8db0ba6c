"""Run directories: created once, never overwritten; every file lands by atomic rename."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_kit.errors import DataError


def create_run_dir(runs_dir: Path, name: str) -> Path:
    """runs_dir/name, or name-2, name-3 ... if taken: an existing run is never touched."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        path = runs_dir / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            path.mkdir()  # exclusive: fails if it exists, even under a racing process
            return path
        except FileExistsError:
            continue
    raise DataError(f"{runs_dir}: too many runs named {name!r}; pass another --name")


def default_run_name(model_name: str) -> str:
    return f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_json(path: Path, payload) -> None:
    tmp = _tmp(path)
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_text(path: Path, text: str) -> None:
    tmp = _tmp(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def save_npy(path: Path, array: np.ndarray) -> None:
    tmp = _tmp(path)
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def save_sparse(path: Path, matrix: sp.csr_matrix) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    sp.save_npz(tmp, matrix.tocsr())
    os.replace(tmp, path)


def open_scores(path: Path, shape: tuple[int, int]) -> np.memmap:
    """A float32 .npy memmap written under a temporary name; call `finish_scores` to publish."""
    return np.lib.format.open_memmap(_tmp(path), mode="w+", dtype=np.float32, shape=shape)


def finish_scores(path: Path, array: np.memmap) -> None:
    array.flush()
    del array
    os.replace(_tmp(path), path)


def load_scores(run_dir: Path, name: str) -> np.ndarray:
    path = Path(run_dir) / name
    if not path.exists():
        raise DataError(f"{path}: missing; {Path(run_dir)} is not a finished run (rerun `kit cv`)")
    return np.load(path, mmap_mode="r")


def read_json(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: missing; is {path.parent} a run directory written by `kit cv`?")
    return json.loads(path.read_text())


def environment() -> dict:
    import torch

    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "numpy": np.__version__, "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_threads": torch.get_num_threads(), "argv": sys.argv}
