"""What a model may see: `Interactions` (users' rows with each entry's time and order) and `ItemSide`.

A model never receives the Dataset (its matrix still holds every user's hidden targets). It
gets `Interactions` (CSR rows plus each entry's time and its place in the user's time order,
ties broken as the holdout broke them) and `ItemSide` (item features and value labels, no
interactions).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


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
