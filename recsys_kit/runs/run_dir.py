"""RunDir: the one reader of a run directory, for the API, blends, reports, the runs table and submit.

A run directory is a `kit cv` run, a `kit ensemble` run or a `kit tune` study. Whether it is
finished, still running (another process holds its lock), unfinished (killed; rerun to continue)
or damaged is decided here once, with the reason in words, so no reader decides it on its own.
Opening a RunDir reads nothing; each part (data.json, metrics.json, config.json, score files) is
read and checked when first asked for (recsys_kit.runs.store checks every file against data.json).
"""
from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_kit.errors import DataError
from recsys_kit.files import ScoreFile
from recsys_kit.runs import store
from recsys_kit.runs.resume import LOCK, PROGRESS

STUDY_FILES = ("journal.log", "best.toml", "trials.csv")  # any of them marks a `kit tune` study directory



@dataclass(frozen=True)
class RunMetrics:
    """metrics.json's headline figures, typed; `RunDir.metrics` keeps the whole file."""

    model: str | None  # the model's name, "ensemble" for a blend
    recall: float | None  # mean OOF Recall@10 over the folds (None: no user had a hidden item)
    recall_std: float | None
    recall_folds: list
    ndcg: float | None
    lb_estimate: float | None  # the leaderboard estimate of Recall@10, when the run made one
    users_evaluated: int | None
    wall_seconds: float | None
    method: str | None  # a blend's method

    @classmethod
    def of(cls, metrics: dict) -> "RunMetrics":
        recall, ndcg = metrics.get("recall@10") or {}, metrics.get("ndcg@10") or {}
        return cls(model=metrics.get("model"), recall=_number(recall.get("mean")),
                   recall_std=_number(recall.get("std")), recall_folds=list(recall.get("folds") or []),
                   ndcg=_number(ndcg.get("mean")), lb_estimate=_number(recall.get("lb_estimate")),
                   users_evaluated=metrics.get("users_evaluated"), wall_seconds=_number(metrics.get("wall_seconds")),
                   method=metrics.get("method"))


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _lock_held(path: Path) -> bool:
    """Another live process holds the run's lock (a `kit cv` computing it right now)."""
    try:
        with open(path) as handle:  # read-only: listing a run never writes to it
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


class RunDir:
    """One run directory. `status` is finished | running | unfinished | damaged | not a run, `why`
    says why in words when it is not finished; `require_finished()` turns that into a DataError."""

    def __init__(self, path: str | Path, data: dict | None = None, metrics: dict | None = None):
        """`data`, `metrics`: data.json and metrics.json already read (or made up, in tests)."""
        self.path = Path(path)
        for name, value in (("data", data), ("metrics", metrics)):
            if value is not None:
                self.__dict__[name] = value  # what cached_property would have read

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # ------------------------------------------------------------------ what it is

    @cached_property
    def metrics(self) -> dict | None:
        """metrics.json as written (its presence marks a finished run), None when absent."""
        path = self.path / "metrics.json"
        return store.read_json(path) if path.exists() else None

    @cached_property
    def data(self) -> dict:
        """data.json: the data's fingerprint, users, items, holdout."""
        return store.read_json(self.path / "data.json")

    @cached_property
    def config(self) -> dict:
        """config.json (a cv run's model config, an ensemble's options), {} when absent."""
        path = self.path / "config.json"
        return store.read_json(path) if path.exists() else {}

    @property
    def figures(self) -> RunMetrics:
        return RunMetrics.of(self.metrics or {})

    @property
    def kind(self) -> str | None:
        """cv | ensemble | tune, or None when the directory is none of them (yet)."""
        if (self.path / "metrics.json").exists():
            try:
                return "ensemble" if (self.metrics or {}).get("model") == "ensemble" else "cv"
            except DataError:
                return "cv"
        if any((self.path / name).exists() for name in STUDY_FILES):
            return "tune"
        if (self.path / PROGRESS).exists() or (self.path / "data.json").exists():
            return "cv"
        return None

    @cached_property
    def _state(self) -> tuple[str, str]:
        if not self.path.exists():
            return "missing", "no such run directory"
        if not self.path.is_dir():
            return "not a run", "a file, not a run directory"
        if (self.path / "metrics.json").exists():
            try:
                metrics = self.metrics
            except DataError as err:
                return "damaged", str(err)
            recall = metrics.get("recall@10")
            if not isinstance(recall, dict) or not isinstance(recall.get("folds"), list):
                return "damaged", "no recall@10 folds"
            return "finished", ""
        if self.kind == "tune":
            return "finished", ""
        progress = self.path / PROGRESS
        if progress.exists():
            if _lock_held(self.path / LOCK):
                return "running", "another `kit cv` is computing it now"
            try:
                done = len(json.loads(progress.read_text()).get("folds_done", []))
            except (OSError, ValueError, AttributeError):
                done = 0
            return "unfinished", f"{done} fold(s) done; rerun the same `kit cv` to continue"
        return "not a run", "no metrics.json"

    @property
    def status(self) -> str:
        return self._state[0]

    @property
    def why(self) -> str:
        return self._state[1]

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def require_finished(self, fix: str = "pass a finished `kit cv` or `kit ensemble` run directory") -> "RunDir":
        """This run, or a DataError naming it, what is wrong, and `fix`."""
        status, why = self._state
        if status == "finished":
            return self
        if status == "damaged":
            raise DataError(why if why.startswith(str(self.path)) else
                            f"{self.path / 'metrics.json'}: {why}; the run directory is damaged, rerun `kit cv` "
                            f"(or `kit ensemble`) for it")
        if status == "running":
            raise DataError(f"{self.path}: still running ({why}); wait for it to finish")
        if status == "unfinished":
            raise DataError(f"{self.path}: an unfinished run (no metrics.json yet); rerun the same `kit cv` "
                            f"command to finish it, or leave it out")
        if status == "missing":
            raise DataError(f"{self.path}: {why}; {fix}")
        raise DataError(f"{self.path}: not a run directory ({why}); {fix}")

    # ------------------------------------------------------------------ its arrays

    def scores(self, name: str = "oof_scores.npy", users: int | None = None) -> ScoreFile:
        """A users x items float32 score matrix (oof_scores.npy, test_scores.npy, ...), read on demand."""
        return store.load_scores(self.path, name, users)

    def ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(user_ids, item_ids): the original ids of the score matrices' rows and columns."""
        return store.load_ids(self.path, "user_ids.npy"), store.load_ids(self.path, "item_ids.npy")

    def folds(self) -> np.ndarray:
        return store.load_ids(self.path, "folds.npy")

    def holdout(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(input, target): every user's holdout input rows and hidden items."""
        return store.load_sparse(self.path, "holdout_input.npz"), store.load_sparse(self.path, "holdout_target.npz")
