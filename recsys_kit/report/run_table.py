"""Every run under a runs directory as one row: which run is best, on which data, with what settings.

Read-only: a run is never changed by being listed. A run another `kit cv` is computing is listed
as running, one without metrics.json as unfinished (with its folds done when progress.json says
so), a run whose files cannot be read as damaged, so nothing is hidden (RunDir decides which).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from recsys_kit.errors import DataError

SORT_KEYS = {"recall": "recall", "lb": "lb_estimate", "public": "public", "ndcg": "ndcg", "wall": "wall_seconds", "date": "date",
             "name": "name"}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def config_changes(config: dict) -> dict:
    """The config keys where a cv run differs from its model's defaults (dotted keys)."""
    from recsys_kit import models  # noqa: F401  (registers the model configs)
    from recsys_kit.config import from_dict

    name = (config.get("model") or {}).get("name")
    try:
        defaults = json.loads(from_dict({"model": {"name": name}}, "defaults").to_json())
    except Exception:  # an unknown or retired model: show every key
        return _flatten(config)
    ours, theirs = _flatten(config), _flatten(defaults)
    return {key: value for key, value in ours.items() if theirs.get(key, object()) != value}


def run_row(run_dir: Path, root: Path) -> dict:
    """One run's row; status finished | running | unfinished | damaged (recsys_kit.runs.run_dir)."""
    from recsys_kit.runs.run_dir import RunDir  # numpy and scipy: not for `kit --help`, which imports SORT_KEYS

    run = RunDir(run_dir)
    row = {"name": str(run.path.relative_to(root)), "path": str(run.path)}
    try:
        row["data"] = run.data.get("fingerprint")
    except DataError:
        row["data"] = None
    if run.status in ("running", "unfinished"):
        row.update(status=run.status, note=run.why)
        return row
    if run.status != "finished":
        row.update(status="damaged" if run.status == "damaged" else "unfinished",
                   note="metrics.json is not readable JSON" if run.status == "damaged" else run.why)
        return row
    figures = run.figures
    is_blend = run.kind == "ensemble"
    try:
        config = run.config
    except DataError:
        config = {}
    row.update({
        "status": "finished",
        "model": f"ensemble ({figures.method})" if is_blend else figures.model,
        "folds": len(figures.recall_folds), "recall": figures.recall, "recall_std": figures.recall_std,
        "lb_estimate": (run.metrics.get("lb_estimate") or {}).get("recall@10"), "ndcg": figures.ndcg,
        "wall_seconds": run.metrics.get("wall_seconds"),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime((run.path / "metrics.json").stat().st_mtime)),
        "changes": ({"members": len(run.metrics.get("members") or [])} if is_blend
                    else config_changes(config) if config else {}),
    })
    if is_blend:
        row["holdout_half"] = (run.metrics.get("holdout_half") or {}).get("recall@10")
    return row


def collect_runs(runs_dir: Path, fingerprint: str | None = None, sort: str = "recall") -> list[dict]:
    """Rows for every run directory under runs_dir (finished first, by `sort`, then the rest);
    only runs on data with `fingerprint` when given."""
    root = Path(runs_dir)
    candidates = sorted({p.parent for pattern in ("*/data.json", "*/config.json", "*/progress.json")
                         for p in root.glob(pattern)})
    rows = [run_row(path, root) for path in candidates]
    add_public_scores(rows, root)
    if fingerprint is not None:
        rows = [row for row in rows if row.get("data") == fingerprint]
    key = SORT_KEYS[sort]
    finished = [row for row in rows if row["status"] == "finished"]
    rest = [row for row in rows if row["status"] != "finished"]
    descending = key not in ("name", "wall_seconds")
    present = [row for row in finished if row.get(key) is not None]
    missing = [row for row in finished if row.get(key) is None]
    present.sort(key=lambda row: row[key], reverse=descending)
    return present + missing + sorted(rest, key=lambda row: row["name"])


def add_public_scores(rows: list[dict], root: Path) -> None:
    """Each finished row's recorded public score ("public") and its estimate calibrated on the other
    runs' public scores on the same data ("calibrated", with "calibration": pairs, interval, family)."""
    from recsys_kit.submission.ledger import Pair, calibrate, public_scores

    public = public_scores(root)
    finished = [row for row in rows if row["status"] == "finished"]
    for row in finished:
        row["public"] = public.get(str(Path(row["path"]).resolve()))

    for row in finished:
        # What is calibrated: the estimate, else OOF Recall@10; the pairs' ratios on the same basis
        # (a stack without an estimate scaled by public / estimate of EASE was 16% low on ml-1m).
        basis = "lb_estimate" if row["lb_estimate"] is not None else "recall"
        pairs = [Pair(str(Path(other["path"]).resolve()), other["model"], other[basis], other["public"])
                 for other in finished if other["public"] is not None and other[basis] is not None
                 and other["data"] == row["data"]]
        fitted = calibrate(row[basis], row["model"], pairs, run=str(Path(row["path"]).resolve()))
        row["calibrated"] = None if fitted is None else fitted.value
        row["calibration"] = None if fitted is None else {"pairs": fitted.pairs, "interval90": fitted.interval90,
                                                          "family": fitted.family,
                                                          "basis": "estimate" if basis == "lb_estimate" else "oof"}
