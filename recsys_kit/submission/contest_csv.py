"""Top-10 per user -> contest CSV, and the validator that checks exactly the contest's rules."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys_kit.runs.run_dir import RunDir
from recsys_kit.submission.ledger import record_submission
from recsys_kit.data.load import load_dataset, read_text_table
from recsys_kit import files
from recsys_kit.errors import DataError, check_text_file, os_error
from recsys_kit.protocol.metrics import K
from recsys_kit.protocol.ranking import broken_rows, top_k_chunked



def check_submission_path(out: Path, force: bool = False) -> None:
    """Before any work: `out` can be written (not a directory, no file in its folder path) and is
    not the user's existing CSV unless `force`."""
    out = Path(out)
    if out.is_dir():
        raise DataError(f"--out {out}: is a directory; pass a file name, e.g. {out / 'submission.csv'}")
    files.check_output_dir(out.parent, "--out")
    if out.exists() and not force:
        raise DataError(f"{out}: already exists; pass another --out or --force to replace it")


def write_submission(run_dir: Path, out: Path, k: int = K, force: bool = False, time_filter: bool = False) -> dict:
    """The run's test scores -> `user,item` CSV, users ascending, k unseen items each. With
    `time_filter`, items first seen after a user's last time plus the run's fitted margin go below
    the others (recsys_kit.time_filter); the summary says what was applied."""
    run_dir, out = Path(run_dir), Path(out)
    check_submission_path(out, force)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a directory; pass a run directory written by `kit cv` or `kit ensemble`")
    run = RunDir(run_dir)
    scores = run.scores("test_scores.npy")
    user_ids, item_ids = run.ids()
    broken = broken_rows(scores)
    if len(broken):
        shown = ", ".join(str(u) for u in user_ids[broken[:5]])
        more = f" and {len(broken) - 5} more" if len(broken) > 5 else ""
        raise DataError(f"{run_dir / 'test_scores.npy'}: NaN or +inf scores for user(s) {shown}{more}; the "
                        f"model diverged (try a lower train.lr), rerun `kit cv`")
    transform, applied = _time_filter(run) if time_filter else (None, None)
    best = top_k_chunked(scores, k, transform=transform)
    # A user with fewer than k unseen items cannot be filled: say who, instead of writing junk.
    short = _users_with_masked_picks(scores, best)
    if len(short):
        raise DataError(f"{run_dir}: user {user_ids[short[0]]} (and {len(short) - 1} more) has fewer "
                        f"than {k} unseen items; the contest needs {k} per user")
    order = np.argsort(user_ids, kind="stable")
    frame = pd.DataFrame({"user": np.repeat(user_ids[order], best.shape[1]),
                          "item": item_ids[best[order]].ravel()})
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        files.write_frame(out, frame, index=False)
    except OSError as err:
        raise os_error(out, err, "pass a writable --out") from None
    try:  # the ledger finds this CSV's run again when its public score is recorded (kit lb)
        ledger = record_submission(run_dir, out)["digest"]
    except OSError as err:
        ledger = f"not recorded ({err.strerror}); record its score with kit lb {run_dir} SCORE"
    return {"path": str(out), "users": len(user_ids), "rows": len(frame), "time_filter": applied, "ledger": ledger}


def _time_filter(run: RunDir):
    """(chunk transform or None, what is applied) from the run's fitted margin."""
    from recsys_kit.protocol import time_filter

    run_dir = run.path
    fitted = run.require_finished().metrics.get("time_filter")
    if not fitted:
        raise DataError(f"{run_dir}: no fitted time-filter margin (a run made with --refit none, or before "
                        f"the filter existed); rerun `kit cv` or drop --time-filter")
    if fitted.get("margin") is None:
        return None, f"off: {fitted.get('reason') or 'it did not raise OOF Recall@10'}"
    times = time_filter.load_times(run_dir)
    if times is None:
        raise DataError(f"{run_dir / time_filter.FILE}: missing; rerun `kit cv` or drop --time-filter")
    margin = float(fitted["margin"])
    return ((lambda block, users: time_filter.apply_to_test(block, users, times, margin)),
            f"margin {margin:g} (OOF Recall@10 {fitted['recall@10_off']:.4f} -> {fitted['recall@10']:.4f})")


def _users_with_masked_picks(scores, best: np.ndarray, chunk: int = 4096) -> np.ndarray:
    bad = []
    for start in range(0, best.shape[0], chunk):
        block = np.take_along_axis(np.asarray(scores[start:start + chunk]), best[start:start + chunk], 1)
        bad.append(start + np.flatnonzero(~np.isfinite(block).all(1)))
    return np.concatenate(bad) if bad else np.array([], dtype=np.int64)


def validate_submission(csv_path: Path, data_dir: Path, k: int = K) -> list[str]:
    """Every broken rule, as a list of one-line problems; empty means the file is valid."""
    csv_path = Path(csv_path)
    fix = "pass the CSV written by `kit submit` (UTF-8 text, header user,item)"
    check_text_file(csv_path, fix)
    dataset = load_dataset(data_dir)
    frame = read_text_table(csv_path, ",", fix)  # unreadable is bad input (exit 2), not a broken rule
    problems = []
    if list(frame.columns) != ["user", "item"]:
        return [f"{csv_path}:1: header must be exactly 'user,item', found {','.join(frame.columns)!r}"]
    users, items = _integer_ids(frame["user"]), _integer_ids(frame["item"])
    bad = np.isnan(users) | np.isnan(items)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        return [f"{csv_path}:{row + 2}: non-integer id ({frame['user'].iloc[row]!r}, {frame['item'].iloc[row]!r}); "
                f"ids are the training data's integers"]
    users, items = users.astype(np.int64), items.astype(np.int64)
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


def _integer_ids(column: pd.Series) -> np.ndarray:
    """float64 ids, NaN where a cell is not an integer that int64 holds exactly (143.5, 1e23, 'x')."""
    values = pd.to_numeric(column.str.strip(), errors="coerce").to_numpy(np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    exact = finite & (np.where(finite, values, 0.0) % 1 == 0) & (np.abs(np.where(finite, values, 0.0)) < 2.0 ** 53)
    return np.where(exact, values, np.nan)


def _seen_pairs(dataset, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    rows = np.searchsorted(dataset.user_ids, users).clip(0, dataset.n_users - 1)
    cols = np.searchsorted(dataset.item_ids, items).clip(0, dataset.n_items - 1)
    known = (dataset.user_ids[rows] == users) & (dataset.item_ids[cols] == items)
    seen = np.zeros(len(users), dtype=bool)
    if known.any():
        seen[known] = np.asarray(dataset.matrix[rows[known], cols[known]]).ravel() > 0
    return seen
