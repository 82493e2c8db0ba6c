"""Every run under a runs directory as one row: which run is best, on which data, with what settings.

Read-only: a run is never changed by being listed. A run without metrics.json is listed as
unfinished (with its folds done when progress.json says so), a run whose files cannot be read
as damaged, so nothing is hidden.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

SORT_KEYS = {"recall": "recall", "lb": "lb_estimate", "ndcg": "ndcg", "wall": "wall_seconds", "date": "date",
             "name": "name"}


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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


def _metric(metrics: dict, name: str, field: str = "mean"):
    value = (metrics.get(name) or {}).get(field)
    return value if isinstance(value, (int, float)) else None


def run_row(run_dir: Path, root: Path) -> dict:
    """One run's row; status finished | unfinished | damaged."""
    row = {"name": str(run_dir.relative_to(root)), "path": str(run_dir)}
    data = _read(run_dir / "data.json") or {}
    row["data"] = data.get("fingerprint")
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        progress = _read(run_dir / "progress.json") or {}
        done = len(progress.get("folds_done", []))
        row.update(status="unfinished", note=f"{done} fold(s) done; rerun the same `kit cv` to continue"
                   if progress else "no metrics.json")
        return row
    metrics, config = _read(metrics_path), _read(run_dir / "config.json") or {}
    if not isinstance(metrics, dict):
        row.update(status="damaged", note="metrics.json is not readable JSON")
        return row
    is_blend = metrics.get("model") == "ensemble"
    row.update({
        "status": "finished",
        "model": f"ensemble ({metrics.get('method')})" if is_blend else metrics.get("model"),
        "folds": len((metrics.get("recall@10") or {}).get("folds") or []),
        "recall": _metric(metrics, "recall@10"), "recall_std": _metric(metrics, "recall@10", "std"),
        "lb_estimate": (metrics.get("lb_estimate") or {}).get("recall@10"),
        "ndcg": _metric(metrics, "ndcg@10"),
        "wall_seconds": metrics.get("wall_seconds"),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(metrics_path.stat().st_mtime)),
        "changes": ({"members": len(metrics.get("members") or [])} if is_blend
                    else config_changes(config) if config else {}),
    })
    if is_blend:
        row["holdout_half"] = (metrics.get("holdout_half") or {}).get("recall@10")
    return row


def collect_runs(runs_dir: Path, fingerprint: str | None = None, sort: str = "recall") -> list[dict]:
    """Rows for every run directory under runs_dir (finished first, by `sort`, then the rest);
    only runs on data with `fingerprint` when given."""
    root = Path(runs_dir)
    candidates = sorted({p.parent for pattern in ("*/data.json", "*/config.json", "*/progress.json")
                         for p in root.glob(pattern)})
    rows = [run_row(path, root) for path in candidates]
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
