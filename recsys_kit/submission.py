"""Top-10 per user -> contest CSV, and the validator that checks exactly the contest's rules."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_kit import runs
from recsys_kit.data import load_dataset
from recsys_kit.errors import DataError
from recsys_kit.scores import top_k_chunked

K = 10


def write_submission(run_dir: Path, out: Path, k: int = K, force: bool = False) -> dict:
    """The run's test scores -> `user,item` CSV, users ascending, k unseen items each."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and not force:
        raise DataError(f"{out}: already exists; pass another --out or --force to replace it")
    scores = runs.load_scores(run_dir, "test_scores.npy")
    user_ids = np.load(run_dir / "user_ids.npy")
    item_ids = np.load(run_dir / "item_ids.npy")
    best = top_k_chunked(scores, k)
    # A user with fewer than k unseen items cannot be filled: say who, instead of writing junk.
    short = _users_with_masked_picks(scores, best)
    if len(short):
        raise DataError(f"{run_dir}: user {user_ids[short[0]]} (and {len(short) - 1} more) has fewer "
                        f"than {k} unseen items; the contest needs {k} per user")
    order = np.argsort(user_ids, kind="stable")
    frame = pd.DataFrame({"user": np.repeat(user_ids[order], best.shape[1]),
                          "item": item_ids[best[order]].ravel()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return {"path": str(out), "users": len(user_ids), "rows": len(frame)}


def _users_with_masked_picks(scores, best: np.ndarray, chunk: int = 4096) -> np.ndarray:
    bad = []
    for start in range(0, best.shape[0], chunk):
        block = np.take_along_axis(np.asarray(scores[start:start + chunk]), best[start:start + chunk], 1)
        bad.append(start + np.flatnonzero(~np.isfinite(block).all(1)))
    return np.concatenate(bad) if bad else np.array([], dtype=np.int64)


def validate_submission(csv_path: Path, data_dir: Path, k: int = K) -> list[str]:
    """Every broken rule, as a list of one-line problems; empty means the file is valid."""
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise DataError(f"{csv_path}: file not found; pass the CSV written by `kit submit`")
    dataset = load_dataset(data_dir)
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        return [f"{csv_path}: cannot be read as CSV ({str(err).strip()})"]
    problems = []
    if list(frame.columns) != ["user", "item"]:
        return [f"{csv_path}:1: header must be exactly 'user,item', found {','.join(frame.columns)!r}"]
    users = pd.to_numeric(frame["user"], errors="coerce")
    items = pd.to_numeric(frame["item"], errors="coerce")
    bad = (users.isna() | items.isna()).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        return [f"{csv_path}:{row + 2}: non-integer id ({frame['user'].iloc[row]!r}, {frame['item'].iloc[row]!r})"]
    users, items = users.to_numpy(np.int64), items.to_numpy(np.int64)
    if (np.diff(users) < 0).any():
        row = int(np.flatnonzero(np.diff(users) < 0)[0]) + 1
        problems.append(f"{csv_path}:{row + 2}: users are not in ascending order (user {users[row]} after {users[row - 1]})")
    known_users = dataset.user_ids
    missing = np.setdiff1d(known_users, users)
    if len(missing):
        problems.append(f"{len(missing)} user(s) of the training data are missing, e.g. {missing[:5].tolist()}")
    extra = np.setdiff1d(np.unique(users), known_users)
    if len(extra):
        problems.append(f"{len(extra)} user(s) not in the training data, e.g. {extra[:5].tolist()}")
    unique_users, counts = np.unique(users, return_counts=True)
    wrong = unique_users[counts != k]
    if len(wrong):
        problems.append(f"{len(wrong)} user(s) do not have exactly {k} rows, e.g. user {wrong[0]} has "
                        f"{counts[counts != k][0]}")
    pairs = pd.DataFrame({"user": users, "item": items})
    duplicated = pairs.duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        problems.append(f"{csv_path}:{row + 2}: user {users[row]} recommends item {items[row]} twice")
    unknown_items = ~np.isin(items, dataset.item_ids)
    if unknown_items.any():
        row = int(np.flatnonzero(unknown_items)[0])
        problems.append(f"{csv_path}:{row + 2}: item {items[row]} is not in the catalogue "
                        f"({int(unknown_items.sum())} such rows)")
    seen = _seen_pairs(dataset, users, items)
    if seen.any():
        row = int(np.flatnonzero(seen)[0])
        problems.append(f"{csv_path}:{row + 2}: user {users[row]} already has item {items[row]} in the "
                        f"training data ({int(seen.sum())} such rows)")
    return problems


def _seen_pairs(dataset, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    rows = np.searchsorted(dataset.user_ids, users).clip(0, dataset.n_users - 1)
    cols = np.searchsorted(dataset.item_ids, items).clip(0, dataset.n_items - 1)
    known = (dataset.user_ids[rows] == users) & (dataset.item_ids[cols] == items)
    seen = np.zeros(len(users), dtype=bool)
    if known.any():
        seen[known] = np.asarray(dataset.matrix[rows[known], cols[known]]).ravel() > 0
    return seen
