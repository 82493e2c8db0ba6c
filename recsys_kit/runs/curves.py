"""Training curves of a `kit cv` run: `curves.json`, each fold's per-epoch records.

A record is what the model's fit loop reports per epoch (recsys_kit.train.fit_net: epoch, loss,
valid_recall@10 on evaluated epochs) plus `seconds` since the fold started. The file is rewritten
by atomic rename before each finished fold becomes durable in progress.json, so every fold a
resumed run skips has its curve already; the fold in flight at a kill is dropped with its scores.
Closed-form models (EASE, popularity, transition) have no epochs: their folds hold empty lists
and the file's note says so, so a reader never mistakes them for a lost curve.
"""
from __future__ import annotations

from pathlib import Path

from recsys_kit import files
from recsys_kit.runs import store
from recsys_kit.errors import DataError

FILE = "curves.json"


class Curves:
    """The run's curves so far; `add` per epoch, `save` once a fold has finished."""

    def __init__(self, run_dir: Path, model_name: str, folds: dict[int, list[dict]] | None = None):
        self.run_dir, self.model_name, self.folds = Path(run_dir), model_name, dict(folds or {})

    @classmethod
    def resume(cls, run_dir: Path, model_name: str, kept_folds) -> "Curves":
        """The curves of `kept_folds` (finished before a kill) from an earlier curves.json."""
        try:
            saved = (load_curves(run_dir) or {}).get("folds", {})
        except DataError:
            saved = {}  # damaged: the kept folds' curves are lost, never their scores
        kept = {int(fold): records for fold, records in saved.items() if int(fold) in set(kept_folds)}
        return cls(run_dir, model_name, kept)

    def add(self, fold: int, record: dict, seconds: float) -> None:
        self.folds.setdefault(fold, []).append({**record, "seconds": round(seconds, 2)})

    def save(self, finished_fold: int) -> None:
        self.folds.setdefault(finished_fold, [])  # a closed-form fit: no epoch came
        payload = {"model": self.model_name, "folds": {str(f): self.folds[f] for f in sorted(self.folds)},
                   "note": "fold numbers start at 0, as in metrics.json folds_detail; seconds: since the "
                           "fold started; valid_recall@10: on the fold's early-stopping users"}
        if any(not records for records in self.folds.values()):
            payload["closed_form"] = (f"{self.model_name} is fitted in closed form: no training epochs, "
                                      f"so no curve to plot")
        files.write_json(self.run_dir / FILE, payload)


def load_curves(run_dir: Path) -> dict | None:
    """curves.json as written, or None when the run has none (made before curves were saved);
    DataError naming the file when it is damaged."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    payload = store.read_json(path)
    folds = payload.get("folds")
    if not isinstance(folds, dict) or not all(isinstance(r, list) and str(f).isdigit() for f, r in folds.items()):
        raise DataError(f"{path}: no per-fold lists of epoch records; the run directory is damaged, "
                        f"rerun `kit cv` for it")
    return payload
