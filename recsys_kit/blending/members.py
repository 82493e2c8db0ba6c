"""A blend's members: run directories checked to line up (same data, holdout and folds), their rows read."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys_kit import files
from recsys_kit.errors import DataError
from recsys_kit.runs import store
from recsys_kit.runs.run_dir import RunDir

# What every member shares (the blend refuses members that differ) and a run built on them copies.
SHARED = ("data.json", "folds.npy", "user_ids.npy", "item_ids.npy", "holdout_input.npz", "holdout_target.npz")


def _load(path: Path):
    if not path.exists():
        raise DataError(f"{path}: missing; {path.parent} is not a complete run directory (rerun `kit cv`)")
    return store.read_json(path) if path.suffix == ".json" else store.load_ids(path.parent, path.name)


def member_rows(run_dir: Path, name: str, index, users: int | None = None) -> np.ndarray:
    """Rows of a score matrix as float32, read into memory this call owns (recsys_kit.files);
    `users`: the matrix's row count when it holds a user sample, not every user."""
    with store.load_scores(run_dir, name, users) as scores:
        return scores[index]


# ------------------------------------------------------------------------------ compatibility

def check_compatible(run_dirs) -> list[RunDir]:
    """The members, or a DataError naming the first run whose OOF rows would not line up."""
    paths = [Path(p) for p in run_dirs]
    if len(paths) < 2:
        raise DataError("a blend needs at least two run directories; pass two or more `kit cv` runs")
    seen: dict[Path, Path] = {}
    for path in paths:
        if not path.is_dir():
            raise DataError(f"{path}: not a directory; pass run directories written by `kit cv`")
        if path.resolve() in seen:
            raise DataError(f"{path}: listed twice (also as {seen[path.resolve()]}); pass each run once")
        seen[path.resolve()] = path
    members = [RunDir(p, _load(p / "data.json"), _load(p / "metrics.json")) for p in paths]
    ref = members[0]
    ref_arrays = {n: _load(ref.path / n) for n in ("user_ids.npy", "item_ids.npy", "folds.npy")}
    for member in members:
        shape = (member.data.get("users"), member.data.get("items"))
        for name in ("oof_scores.npy", "test_scores.npy"):
            scores = store.load_scores(member.path, name)
            if scores.shape != shape or scores.dtype != np.float32:
                raise DataError(f"{member.path / name}: {scores.dtype} {scores.shape}, data.json says float32 "
                                f"{shape}; the run is damaged or unfinished, rerun `kit cv`")
        if member is ref:
            continue
        ids = [what for what, n in (("user ids", "user_ids.npy"), ("item ids", "item_ids.npy"))
               if not np.array_equal(_load(member.path / n), ref_arrays[n])]
        differ = (ids + [what for what, key in (("data fingerprint", "fingerprint"),
                                                ("holdout", "holdout_fingerprint"))
                         if member.data.get(key) != ref.data.get(key)])
        if not np.array_equal(_load(member.path / "folds.npy"), ref_arrays["folds.npy"]):
            differ.append("fold assignment")
        if differ:
            fix = ("the same --data" if ids or "data fingerprint" in differ else
                   "the same seed and [holdout] settings" if "holdout" in differ else
                   "the same --folds and --seed")
            raise DataError(f"{member.path}: OOF rows do not line up with {ref.path}: {' and '.join(differ)} "
                            f"differ; rerun `kit cv` for it with {fix} as {ref.path}")
    return members


def copy_shared_files(first: Path, run_dir: Path) -> None:
    """The first member's shared files (and its time-filter arrays, when it has them) into `run_dir`."""
    from recsys_kit.protocol import time_filter

    for file_name in SHARED + ((time_filter.FILE,) if (first / time_filter.FILE).exists() else ()):
        files.copy_file(first / file_name, run_dir / file_name)
