"""The fold split as values: what a model may see, and nothing else.

A model never receives the Dataset (its matrix still holds every user's hidden targets). It
gets `Interactions` (CSR rows plus each entry's time and its place in the user's time order,
ties broken as the holdout broke them) and `ItemSide` (item features and value labels, no
interactions). `fold_splits` hands the cv loop, per fold, the rows to fit on, the validation
pairs, and the rows to score; the fold's targets stay with the loop, for its metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from recsys_kit.holdout import Holdout, contest_holdout, derive_seed


def row_entries(indptr: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Flat entry positions of `users`' rows, row after row (a vectorised concatenation of ranges)."""
    starts, stops = indptr[users], indptr[np.asarray(users) + 1]
    lengths = stops - starts
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    return np.arange(lengths.sum(), dtype=np.int64) + offsets


@dataclass(frozen=True)
class Interactions:
    """Users' rows (CSR, users x items) with each entry's time and order key, aligned with rows.data.

    `order` sorts a user's entries from first to latest (a strict order: ties in time broken by the
    holdout); None means the entries' CSR order. `times` is None when the log has no times.
    """

    rows: sp.csr_matrix
    times: np.ndarray | None = None
    order: np.ndarray | None = None

    def __post_init__(self):
        for name in ("times", "order"):
            value = getattr(self, name)
            if value is not None and len(value) != self.rows.nnz:
                raise ValueError(f"Interactions.{name} has {len(value)} entries, rows have {self.rows.nnz}")

    @classmethod
    def of(cls, value, n_items: int | None = None, what: str = "rows") -> "Interactions":
        """An Interactions as is, or a scipy sparse matrix wrapped (no times; CSR order)."""
        if isinstance(value, Interactions):
            result = value
        elif sp.issparse(value):
            result = cls(value.tocsr())
        else:
            raise TypeError(f"{what} must be Interactions or a scipy sparse CSR matrix, got {type(value).__name__}")
        if n_items is not None and result.rows.shape[1] != n_items:
            raise ValueError(f"{what} has {result.rows.shape[1]} item columns, the model was fitted on {n_items}")
        return result

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.shape

    @property
    def n_users(self) -> int:
        return self.rows.shape[0]

    @property
    def n_items(self) -> int:
        return self.rows.shape[1]

    def take(self, users) -> "Interactions":
        """The rows of `users` (an index array or a slice), times and order kept."""
        users = np.arange(self.n_users)[users] if isinstance(users, slice) else np.asarray(users, dtype=np.int64)
        entries = row_entries(self.rows.indptr, users)
        indptr = np.r_[0, np.cumsum(np.diff(self.rows.indptr)[users])].astype(self.rows.indptr.dtype)
        rows = sp.csr_matrix((self.rows.data[entries], self.rows.indices[entries], indptr),
                             shape=(len(users), self.n_items))
        pick = (lambda array: None if array is None else array[entries])
        return Interactions(rows, pick(self.times), pick(self.order))

    __getitem__ = take

    def time_order(self) -> np.ndarray:
        """Entry positions sorted by user, then from each user's first entry to their latest."""
        row_of_entry = np.repeat(np.arange(self.n_users), np.diff(self.rows.indptr))
        # Without an order, times decide (ties in entry order: lexsort is stable); without either, entry order.
        key = (self.order if self.order is not None else
               self.times if self.times is not None else np.arange(self.rows.nnz))
        return np.lexsort((key, row_of_entry))

    def recency(self) -> np.ndarray:
        """Per entry (aligned with rows.data): 0 for the user's latest item, 1 for the one before, ..."""
        lengths = np.diff(self.rows.indptr)
        ordered = self.time_order()
        position = np.arange(self.rows.nnz) - np.repeat(self.rows.indptr[:-1], lengths)  # 0 = first
        recency = np.empty(self.rows.nnz, dtype=np.int64)
        recency[ordered] = np.repeat(lengths, lengths) - 1 - position
        return recency

    def sequences(self, max_len: int, pad: int) -> np.ndarray:
        """int64 users x max_len: each user's last `max_len` items in time order, latest in the last
        column, left-padded with `pad`."""
        lengths = np.diff(self.rows.indptr)
        items = self.rows.indices[self.time_order()].astype(np.int64)
        out = np.full((self.n_users, max_len), pad, dtype=np.int64)
        # Position of each ordered entry counted back from its row's end; keep the last max_len.
        from_end = np.repeat(self.rows.indptr[1:], lengths) - np.arange(self.rows.nnz) - 1
        keep = from_end < max_len
        row = np.repeat(np.arange(self.n_users), lengths)[keep]
        out[row, max_len - 1 - from_end[keep]] = items[keep]
        return out


@dataclass(frozen=True)
class ItemSide:
    """Item side information, no interactions: name -> items x values CSR, and the value labels."""

    features: dict[str, sp.csr_matrix] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, dataset) -> "ItemSide":
        return cls(dict(dataset.item_features), dict(dataset.feature_values or {}))


def holdout_inputs(holdout: Holdout) -> Interactions:
    """Every user's input rows (the holdout's public part) as a model may see them."""
    return Interactions(holdout.input, holdout.input_times.data, holdout.input_order)


def public_rows(dataset, holdout: Holdout) -> Interactions:
    """Every public row of every user (the contest's own training set), in the holdout's order."""
    times = None if dataset.times is None else dataset.times.data
    return Interactions(dataset.matrix, times, holdout.order)


@dataclass(frozen=True)
class FoldSplit:
    fold: int
    train: Interactions  # input rows of the fold's fitting users (other folds, minus validation users)
    valid: tuple[Interactions, sp.csr_matrix] | None  # validation users' inner inputs and targets
    users: np.ndarray  # the fold's users, scored from their input rows
    inputs: Interactions  # their input rows
    target: sp.csr_matrix  # their hidden items: for the loop's metrics, never handed to a model


def validation_slice(holdout: Holdout, train_users: np.ndarray, config, fold: int):
    """Carve early-stopping users out of the fold's training users; hide their tails too.

    Returns (fit_users, (valid inputs, valid targets) or None)."""
    rng = np.random.default_rng(derive_seed(config.seed, "valid", fold))
    n_valid = int(round(len(train_users) * config.train.valid_fraction))
    if n_valid == 0:
        return train_users, None
    valid_users = np.sort(rng.choice(train_users, size=n_valid, replace=False))
    fit_users = np.setdiff1d(train_users, valid_users)
    inner = contest_holdout(holdout.input[valid_users], holdout.input_times[valid_users],
                            config.holdout, derive_seed(config.seed, "valid-holdout", fold))
    keep = np.flatnonzero(inner.has_target)
    if len(keep) == 0:
        return train_users, None
    return fit_users, (holdout_inputs(inner).take(keep), inner.target[keep])


def fold_splits(holdout: Holdout, fold_of_user: np.ndarray, config) -> Iterator[FoldSplit]:
    """Per fold: what the fold's model fits on, validates on and scores (see the module docstring)."""
    inputs = holdout_inputs(holdout)
    for fold in range(int(fold_of_user.max()) + 1):
        users = np.flatnonzero(fold_of_user == fold)
        fit_users, valid = validation_slice(holdout, np.flatnonzero(fold_of_user != fold), config, fold)
        yield FoldSplit(fold, inputs.take(fit_users), valid, users, inputs.take(users), holdout.target[users])
