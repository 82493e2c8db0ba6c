"""Time-consistency filter: an item that first appears in the log well after a user's last
interaction is unlikely to be among that user's hidden items. After any member's scores and
before the top-10, such items are pushed below every other unseen item (kept finite and in their
order, so a user with few other items still gets ten). "Well after" is the user's last time plus
a margin fitted on OOF scores: the hidden tail itself comes after the last public interaction,
so a margin of zero would also push away the items the tail holds.

The first appearance is read from the public log (every user's public rows), which the contest
gives in full; a user's last time from that user's public rows alone.
"""
from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from recsys_kit import files
from recsys_kit.errors import DataError
from recsys_kit.protocol.metrics import K, recall_per_user, summarize
from recsys_kit.protocol.ranking import top_k
from recsys_kit.data.interactions import Interactions

CHUNK = 4096
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.97)  # of the gaps of candidate items, as margins to try


FILE = "time_filter.npz"  # in a run: the first-seen and last times at the OOF level and the contest's


def save_times(path, inputs: Interactions, public: Interactions) -> dict[str, np.ndarray] | None:
    """What a run needs to fit the margin on OOF (every user's holdout inputs) and apply it to the
    test scores (every public row), written and returned; None (nothing written) without times."""
    if inputs.times is None or public.times is None:
        return None
    times = {"oof_first_seen": item_first_seen(inputs), "oof_last_time": user_last_time(inputs),
             "test_first_seen": item_first_seen(public), "test_last_time": user_last_time(public)}
    files.save_arrays(path, times)
    return times


def load_times(run_dir) -> dict[str, np.ndarray] | None:
    """The run's time arrays, or None when it has none (a log without times)."""
    path = os.path.join(run_dir, FILE)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {name: np.asarray(arrays[name], dtype=np.float64) for name in arrays.files}
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: not readable ({err}); the run is damaged, rerun `kit cv`") from None


def margin_report(scores, target: sp.csr_matrix, times: dict | None) -> dict:
    """metrics.json "time_filter": the fitted margin and its OOF gain, or why there is none."""
    if times is None:
        return {"margin": None, "reason": "the log has no times: the filter is off"}
    return fit_margin(scores, target, times["oof_last_time"], times["oof_first_seen"])


def apply_to_test(scores: np.ndarray, users: np.ndarray, times: dict, margin: float) -> np.ndarray:
    """Test score rows of `users` with the filter applied (a copy)."""
    block = np.array(scores, dtype=np.float32)
    return push_future(block, times["test_last_time"][users], times["test_first_seen"], margin)


def item_first_seen(public: Interactions) -> np.ndarray:
    """Per item, the earliest time anyone interacted with it (+inf if never)."""
    first = np.full(public.n_items, np.inf)
    np.minimum.at(first, public.rows.indices, public.times)
    return first


def user_last_time(inputs: Interactions) -> np.ndarray:
    """Per user, the time of their latest input interaction (-inf without one)."""
    last = np.full(inputs.n_users, -np.inf)
    rows = np.repeat(np.arange(inputs.n_users), np.diff(inputs.rows.indptr))
    np.maximum.at(last, rows, inputs.times)
    return last


def push_future(block: np.ndarray, last_time: np.ndarray, first_seen: np.ndarray, margin: float) -> np.ndarray:
    """block (users x items, seen at -inf) with items first seen after last_time + margin moved below
    every other unmasked item of the row; in place, returned."""
    future = first_seen[None, :] > (last_time + margin)[:, None]
    finite = np.isfinite(block)
    if not (future & finite).any():
        return block
    low = np.where(finite, block, np.inf).min(axis=1, initial=np.inf)
    high = np.where(finite, block, -np.inf).max(axis=1, initial=-np.inf)
    span = np.where(np.isfinite(high - low), high - low, 0.0) + 1.0
    shift = np.where(future & finite, span[:, None], 0.0).astype(block.dtype)
    block -= shift
    return block


def candidate_margins(scores, last_time: np.ndarray, first_seen: np.ndarray, users: np.ndarray,
                      depth: int = 50) -> list[float]:
    """Margins worth trying: quantiles of how long after each user's last time their top-`depth`
    items first appeared (only the items that did appear after it)."""
    gaps = []
    for start in range(0, len(users), CHUNK):
        index = users[start:start + CHUNK]
        best = top_k(np.asarray(scores[index]), depth)
        gap = first_seen[best] - last_time[index][:, None]
        gaps.append(gap[np.isfinite(gap) & (gap > 0)])
    gaps = np.concatenate(gaps) if gaps else np.zeros(0)
    if len(gaps) == 0:
        return []
    return sorted({0.0, *(float(q) for q in np.quantile(gaps, QUANTILES))})


def fit_margin(scores, target: sp.csr_matrix, last_time: np.ndarray, first_seen: np.ndarray) -> dict:
    """The margin that maximises OOF Recall@10 over the users with a target (None: the filter off
    wins or ties), with the Recall@10 of every margin tried. The gain is in-sample (the best of a
    few margins), so "holdout_half" also fits the margin on the users at even positions and scores
    it on the others: the figure to trust."""
    users = np.flatnonzero(np.diff(target.indptr) > 0)
    if len(users) == 0 or not np.isfinite(last_time[users]).any():
        return {"margin": None, "reason": "no user with both a target and a time"}
    margins = candidate_margins(scores, last_time, first_seen, users)
    per_user = {"off": _recall_per_user(scores, target, users, last_time, first_seen, None)}
    for margin in margins:
        per_user[margin] = _recall_per_user(scores, target, users, last_time, first_seen, margin)
    recall = {key: summarize(values) for key, values in per_user.items()}
    best = _best_margin(recall)
    half_a = np.arange(len(users)) % 2 == 0
    best_on_a = _best_margin({key: summarize(values[half_a]) for key, values in per_user.items()})
    on_b, off_b = summarize(per_user[best_on_a][~half_a]), summarize(per_user["off"][~half_a])
    return {"margin": None if best == "off" else best, "recall@10_off": recall["off"],
            "recall@10": recall[best], "gain": recall[best] - recall["off"],
            "holdout_half": {"margin": None if best_on_a == "off" else best_on_a, "recall@10_off": off_b,
                             "recall@10": on_b, "gain": on_b - off_b},
            "tried": [{"margin": key, "recall@10": value} for key, value in recall.items()]}


def _best_margin(recall: dict) -> float | str:
    # A tie keeps the filter off, else the widest margin: push no more items than the gain needs.
    return max(recall, key=lambda key: (recall[key], key == "off", -1 if key == "off" else key))


def _recall_per_user(scores, target, users, last_time, first_seen, margin) -> np.ndarray:
    per_user = np.empty(len(users))
    for start in range(0, len(users), CHUNK):
        index = users[start:start + CHUNK]
        block = np.array(scores[index], dtype=np.float32)
        if margin is not None:
            push_future(block, last_time[index], first_seen, margin)
        per_user[start:start + len(index)] = recall_per_user(top_k(block, K), target[index], K)
    return per_user
