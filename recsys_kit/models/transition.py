"""Item-to-item transitions: the user's last few items -> the next one (a windowed Markov chain).

Fit: in every training user's time-ordered sequence, each item b that follows item a within
`window` steps adds decay^(d-1) to C[a, b] (d = steps from a to b). The window bridges the
holes the holdout leaves in a sequence (its random hidden items) and catches "a few steps later".
`backward` adds the reversed pairs at that share: the contest hides random earlier items too,
and those sit before a user's input items as often as after them (0 = a strict next-item model).
Columns are divided by popularity^pop_damping, then each row is normalised to sum 1, so T[a]
is a next-item distribution: every source item has the same mass whatever its popularity
(raw counts would let one popular recent item drown the user's latest one), and the score
below is a mixture of distributions. (Damping measured worse on every set tried; default 0.)

Score: the user's last `k_recent` input items, the latest weighted 1, the one before
recent_decay, ..., times T. Items with no transition evidence for a user score a tiny negative
popularity term instead of 0: below every item with evidence, and among themselves by popularity
(a user whose recent items were never followed by anything gets the popular items, not ids 0..9).

T is sparse (items x items CSR, float32): its size is the number of distinct pairs seen
within the window, never the full catalogue squared.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys_kit.config import check_at_least
from recsys_kit.errors import DataError
from recsys_kit.models.base import Recommender
from recsys_kit.data.interactions import Interactions

# Scale of the zero-evidence items' popularity order: negligible beside real scores in a blend.
TIE_BREAK = 1e-6
PRODUCT_USERS = 512  # users per sparse product when scoring (bounds its sparse temporary)


def check_unit_interval(key: str, value: float, low_open: bool = True) -> None:
    """value in (0, 1] (or [0, 1] with low_open=False)."""
    low_ok = value > 0 if low_open else value >= 0
    if not (low_ok and value <= 1):
        raise DataError(f"[model] {key} must be in {'(0' if low_open else '[0'}, 1], got {value}")


@dataclass(frozen=True)
class TransitionConfig:
    name: str = "transition"
    window: int = 3  # b counts as following a when it comes 1..window steps after a
    decay: float = 0.5  # a pair d steps apart counts decay^(d-1)
    k_recent: int = 20  # the user's last k input items vote for the next one
    recent_decay: float = 0.8  # the item r steps before the latest votes recent_decay^r
    pop_damping: float = 0.0  # columns divided by item popularity^pop_damping before row-normalising
    backward: float = 0.5  # a counts as following b with this weight too (0: strictly forward)

    def __post_init__(self):
        check_at_least("model", "window", self.window, 1)
        check_at_least("model", "k_recent", self.k_recent, 1)
        check_unit_interval("decay", self.decay)
        check_unit_interval("recent_decay", self.recent_decay)
        check_unit_interval("pop_damping", self.pop_damping, low_open=False)
        check_unit_interval("backward", self.backward, low_open=False)


def ordered_items(inputs: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """(item, user) of every entry, users one after another, each from first to latest."""
    order = inputs.time_order()
    users = np.repeat(np.arange(inputs.n_users), np.diff(inputs.rows.indptr))
    return inputs.rows.indices[order].astype(np.int64), users  # users are already sorted


def transition_counts(inputs: Interactions, window: int, decay: float) -> sp.csr_matrix:
    """C[a, b] = sum over users of decay^(d-1) for each b d <= window steps after a."""
    items, users = ordered_items(inputs)
    n = inputs.n_items
    counts = sp.csr_matrix((n, n), dtype=np.float64)
    for distance in range(1, window + 1):
        same_user = users[:-distance] == users[distance:]
        if not same_user.any():
            break
        source, target = items[:-distance][same_user], items[distance:][same_user]
        weight = np.full(len(source), decay ** (distance - 1), dtype=np.float64)
        counts = counts + sp.csr_matrix((weight, (source, target)), shape=(n, n))  # duplicates summed
    return counts


def row_normalise(matrix: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    inverse = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.diags(inverse) @ matrix


def recent_weights(inputs: Interactions, k_recent: int, recent_decay: float) -> sp.csr_matrix:
    """users x items: recent_decay^r for each of the user's last k_recent items (r = 0 latest)."""
    recency = inputs.recency()
    keep = recency < k_recent
    weights = np.power(recent_decay, recency[keep], dtype=np.float64).astype(np.float32)
    users = np.repeat(np.arange(inputs.n_users), np.diff(inputs.rows.indptr))[keep]
    return sp.csr_matrix((weights, (users, inputs.rows.indices[keep])), shape=inputs.shape)


class Transition(Recommender):
    name = "transition"
    deterministic = True  # counting: the same fit for every seed
    iterative = False  # counting: no epochs
    Config = TransitionConfig

    def fit(self, train, side=None, valid=None, on_epoch=None):
        # No epochs and no early stopping: valid and on_epoch have nothing to act on.
        train = Interactions.of(train, None, "train")
        self.n_items = train.n_items
        cfg = self.config
        popularity = np.bincount(train.rows.indices, minlength=self.n_items).astype(np.float64)
        counts = transition_counts(train, cfg.window, cfg.decay)
        if cfg.backward > 0:
            counts = counts + cfg.backward * counts.T.tocsr()
        if cfg.pop_damping > 0:
            damping = np.power(np.maximum(popularity, 1.0), -cfg.pop_damping)
            counts = counts @ sp.diags(damping)
        self.transitions = row_normalise(counts).astype(np.float32).tocsr()
        # In [-TIE_BREAK, 0]: 0 for the most popular item, below it by popularity.
        self.tie_break = (-TIE_BREAK * (1.0 - popularity / max(popularity.max(), 1.0))).astype(np.float32)
        self.summary.update({"items": self.n_items, "pairs": int(self.transitions.nnz),
                             "transitions_mb": round((self.transitions.data.nbytes
                                                      + self.transitions.indices.nbytes) / 2**20, 2)})
        return self

    def _raw_scores(self, inputs: Interactions) -> np.ndarray:
        votes = recent_weights(inputs, self.config.k_recent, self.config.recent_decay)
        scores = np.empty(inputs.shape, dtype=np.float32)
        # A few users at a time: their product is nearly dense but stored sparse (12 bytes a cell).
        for start in range(0, inputs.n_users, PRODUCT_USERS):
            stop = start + PRODUCT_USERS
            scores[start:stop] = (votes[start:stop] @ self.transitions).toarray()
        np.copyto(scores, self.tie_break, where=scores <= 0)  # broadcast over users
        return scores
