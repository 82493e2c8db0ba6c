"""A `kit cv` killed mid-way continues where it stopped when the same command runs again.

Each finished fold is durable: its OOF rows are flushed into the run's temporary score matrix
and its record lands in `progress.json` (atomic rename) only after that. The run is found again
by a key over everything that decides its numbers (data, holdout, folds, config, refit options),
so a rerun under the default timestamped name still finds it. A lock held while the run works
keeps two identical commands started together from writing into one directory; a killed
process releases its lock with it. At most the fold in flight is lost.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recsys_kit import files
from recsys_kit.runs import store
from recsys_kit.files import ScoreFile

PROGRESS = "progress.json"
LOCK = "progress.lock"


def run_key(*parts) -> str:
    """Hash of the JSON of what decides a run's numbers."""
    text = json.dumps([part if isinstance(part, (str, int, float, dict, list)) else str(part) for part in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class Progress:
    key: str
    folds_done: list[dict] = field(default_factory=list)  # the finished folds' records, in order
    fold_mean_clean: bool = True  # False while a fold's share is being added to the fold mean

    def save(self, run_dir: Path) -> None:
        files.write_json(Path(run_dir) / PROGRESS, asdict(self))

    def done(self, fold: int) -> bool:
        return any(record["fold"] == fold for record in self.folds_done)


def _lock(run_dir: Path):
    """An exclusive lock on run_dir, or None when another live process holds it."""
    handle = open(Path(run_dir) / LOCK, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _read_progress(run_dir: Path) -> Progress | None:
    try:
        payload = json.loads((Path(run_dir) / PROGRESS).read_text())
        return Progress(payload["key"], list(payload.get("folds_done", [])), bool(payload.get("fold_mean_clean")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _unfinished(run_dir: Path, key: str) -> Progress | None:
    if (run_dir / "metrics.json").exists():
        return None
    progress = _read_progress(run_dir)
    return progress if progress is not None and progress.key == key else None


class RunHandle:
    """The run directory, its progress and the lock held on it while the run works."""

    def __init__(self, run_dir: Path, progress: Progress, lock):
        self.run_dir, self.progress, self._lock = run_dir, progress, lock

    def release(self) -> None:
        if self._lock is not None:
            if (self.run_dir / "metrics.json").exists():  # finished: nobody will resume it
                (self.run_dir / LOCK).unlink(missing_ok=True)
            self._lock.close()
            self._lock = None


def claim_run(runs_dir: Path, name: str | None, default_name: str, key: str) -> RunHandle:
    """An unfinished run with this key (the named one, else the newest in runs_dir) to continue,
    or a new run directory (never an existing one)."""
    runs_dir = Path(runs_dir)
    candidates = [runs_dir / name] if name else sorted(runs_dir.glob("*/" + PROGRESS), key=os.path.getmtime,
                                                       reverse=True)
    for candidate in candidates:
        run_dir = candidate if name else candidate.parent
        if not run_dir.is_dir():
            continue
        progress = _unfinished(run_dir, key)
        if progress is None:
            continue
        lock = _lock(run_dir)
        if lock is None:
            continue  # another process is working on it
        if not progress.fold_mean_clean:
            progress = Progress(key)  # killed while adding to the fold mean: it cannot be trusted
        return RunHandle(run_dir, progress, lock)
    run_dir = store.create_run_dir(runs_dir, name or default_name)
    lock = _lock(run_dir)
    progress = Progress(key)
    progress.save(run_dir)
    return RunHandle(run_dir, progress, lock)


def _reopen(run_dir: Path, name: str, shape: tuple[int, int]) -> ScoreFile | None:
    """A killed run's temporary score matrix as it was left (or its published copy, when the kill
    came after the folds), or None when there is none of that shape."""
    try:
        scores = files.reopen_scores(Path(run_dir) / name)
    except (ValueError, OSError, SyntaxError, EOFError):  # not a float32 matrix's .npy header
        return None
    expected = scores.offset + int(np.prod(shape, dtype=np.int64)) * 4
    if scores.shape == tuple(shape) and scores.path.stat().st_size == expected:
        return scores
    scores.close()
    return None


def open_fold_scores(run_dir: Path, progress: Progress, shape: tuple[int, int], fold_mean_name: str | None):
    """(OOF scores, fold-mean scores or None): reopened when folds are done, else new. When a
    matrix cannot be reopened the finished folds are forgotten and every fold runs again."""
    if progress.folds_done:
        oof = _reopen(run_dir, "oof_scores.npy", shape)
        fold_mean = _reopen(run_dir, fold_mean_name, shape) if fold_mean_name else None
        if oof is not None and (fold_mean is not None or not fold_mean_name):
            return oof, fold_mean
        progress.folds_done.clear()
    oof = files.open_scores(Path(run_dir) / "oof_scores.npy", shape)
    return oof, files.open_scores(Path(run_dir) / fold_mean_name, shape) if fold_mean_name else None
