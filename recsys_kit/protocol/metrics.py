"""Recall@k and NDCG@k per user, and their breakdown by user-activity group.

Recall@k = hits / min(k, |target|) (the contest's definition); NDCG@k as in Liang et al. 2018.
Users without a target get NaN and are left out of every mean. A mean over no user is NaN in
memory and null in metrics.json, with a "reason" beside it: never a number that hides it.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

K = 10  # the contest's cut-off: Recall@K and NDCG@K over each user's top K items
GROUP_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
GROUP_NAMES = ("0-20%", "20-40%", "40-60%", "60-80%", "80-100%")


def hits_matrix(top_items: np.ndarray, target_rows: sp.csr_matrix) -> np.ndarray:
    """bool users x k: is the item at each rank in the user's target."""
    target_rows = target_rows.tocsr()
    n_users, k = top_items.shape
    hits = np.zeros((n_users, k), dtype=bool)
    for start in range(0, n_users, 4096):  # chunked so a 31k x 6.8k dense target never exists
        stop = min(start + 4096, n_users)
        dense = target_rows[start:stop].toarray() > 0
        hits[start:stop] = np.take_along_axis(dense, top_items[start:stop], axis=1)
    return hits


def recall_per_user(top_items: np.ndarray, target_rows: sp.csr_matrix, k: int = K) -> np.ndarray:
    n_target = np.diff(target_rows.tocsr().indptr)
    hits = hits_matrix(top_items[:, :k], target_rows).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = hits / np.minimum(k, n_target)
    recall[n_target == 0] = np.nan
    return recall


def ndcg_per_user(top_items: np.ndarray, target_rows: sp.csr_matrix, k: int = K) -> np.ndarray:
    n_target = np.diff(target_rows.tocsr().indptr)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits_matrix(top_items[:, :k], target_rows) * discount).sum(1)
    ideal = np.cumsum(discount)[np.clip(np.minimum(n_target, k) - 1, 0, k - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = dcg / ideal
    ndcg[n_target == 0] = np.nan
    return ndcg


def activity_groups(activity: np.ndarray) -> np.ndarray:
    """Group index 0..4 of each user by quantile of activity (input length); ties share a group."""
    ranks = np.argsort(np.argsort(activity, kind="stable"), kind="stable")
    position = ranks / max(len(activity), 1)
    return np.minimum(np.searchsorted(GROUP_EDGES[1:], position, side="right"), len(GROUP_NAMES) - 1)


def summarize(per_user: np.ndarray) -> float:
    valid = per_user[~np.isnan(per_user)]
    return float(valid.mean()) if len(valid) else float("nan")


def group_breakdown(per_user: np.ndarray, activity: np.ndarray) -> dict[str, dict]:
    groups = activity_groups(activity)
    out = {}
    for index, name in enumerate(GROUP_NAMES):
        member = (groups == index) & ~np.isnan(per_user)
        out[name] = {"mean": summarize(per_user[groups == index]), "users": int(member.sum()),
                     "activity_range": [int(activity[groups == index].min()) if member.any() else 0,
                                        int(activity[groups == index].max()) if member.any() else 0]}
        if not member.any():
            out[name].update(mean=None, reason="no user of this group has a hidden target")
    return out


def build_metrics(recall: np.ndarray, ndcg: np.ndarray, activity: np.ndarray,
                  fold_of_user: np.ndarray, has_target: np.ndarray) -> dict:
    """The metrics.json layout shared by cv and ensemble runs."""
    folds = int(fold_of_user.max()) + 1
    out = {}
    for metric, per_user in (("recall@10", recall), ("ndcg@10", ndcg)):
        per_fold = [summarize(per_user[fold_of_user == f]) for f in range(folds)]
        out[metric] = {"mean": float(np.mean(per_fold)), "std": float(np.std(per_fold)),
                       "folds": per_fold, "pooled": summarize(per_user)}
        empty = [f + 1 for f, value in enumerate(per_fold) if np.isnan(value)]
        if empty:
            out[metric] = {"mean": None, "std": None, "pooled": summarize(per_user),
                           "folds": [None if np.isnan(v) else v for v in per_fold],
                           "reason": f"fold(s) {', '.join(map(str, empty))} have no user with a hidden target"}
        out.setdefault("groups", {})[metric] = group_breakdown(per_user[has_target], activity[has_target])
    out["users_evaluated"] = int((~np.isnan(recall)).sum())
    out["users_without_target"] = int((~has_target).sum())
    return out
