"""The Dataset: one contest's interactions as a users x items CSR matrix, with ids, times and item features."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


@dataclass
class Dataset:
    matrix: sp.csr_matrix  # users x items, float32 ones, duplicates collapsed
    user_ids: np.ndarray  # original ids, row i <-> user_ids[i], ascending
    item_ids: np.ndarray  # original ids, column j <-> item_ids[j], ascending
    times: sp.csr_matrix | None = None  # float64, same sparsity pattern and order as matrix
    item_features: dict[str, sp.csr_matrix] = field(default_factory=dict)  # name -> items x values
    feature_values: dict[str, np.ndarray] = field(default_factory=dict)  # name -> value labels
    summary: dict = field(default_factory=dict)
    # Digest of the files it was parsed from (recsys_kit.data.cache), None when built in memory:
    # results derived from it (the holdout) are cached under it instead of a hash of every array.
    source: str | None = None

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    def fingerprint(self) -> str:
        """Hash of ids and interactions: runs on the same data have the same fingerprint."""
        digest = hashlib.sha256()
        for array in (self.user_ids, self.item_ids, self.matrix.indptr, self.matrix.indices):
            digest.update(np.ascontiguousarray(array).astype(np.int64).tobytes())
        if self.times is not None:
            digest.update(np.ascontiguousarray(self.times.data).tobytes())
        return digest.hexdigest()[:16]


def _unique_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(ids, return_inverse=True), by counting when the ids are dense enough (a contest's
    usually are: a sort of five million ids costs a second, a count a tenth of that)."""
    if len(ids) == 0:
        return np.unique(ids, return_inverse=True)
    low, high = int(ids.min()), int(ids.max())
    if high - low > 4 * len(ids) + 1_000_000:
        return np.unique(ids, return_inverse=True)
    present = np.zeros(high - low + 1, dtype=bool)
    present[ids - low] = True
    position = np.cumsum(present) - 1
    return np.flatnonzero(present) + low, position[ids - low]


def _latest_of_each_pair(rows: np.ndarray, cols: np.ndarray, times: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Line indices, sorted by (row, col), of each pair's latest line (ties: the later line): exactly
    the last of each pair in np.lexsort((times, key)) order, key = row * items + col."""
    # Most logs hold each pair once: scipy's counting sort into CSR, carrying each line's index,
    # is then the whole answer (a third of a stable sort of the keys at contest scale).
    lines = sp.coo_matrix((np.arange(len(rows), dtype=np.int64), (rows, cols)), shape=shape).tocsr()
    if lines.nnz == len(rows):
        return lines.data
    key = rows.astype(np.int64) * shape[1] + cols
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    repeated = np.flatnonzero(key_sorted[1:] == key_sorted[:-1])
    positions = np.union1d(repeated, repeated + 1)
    group = order[positions]  # in (key, line) order
    order[positions] = group[np.lexsort((times[group], key[group]))]
    key_sorted = key[order]
    return order[np.r_[key_sorted[1:] != key_sorted[:-1], True]]


def from_interactions(users, items, times=None) -> Dataset:
    """Build a Dataset from parallel id arrays (tests and converters use this too)."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    times = np.arange(len(users), dtype=np.float64) if times is None else np.asarray(times, np.float64)
    user_ids, rows = _unique_ids(users)
    item_ids, cols = _unique_ids(items)
    # Collapse duplicate (user, item) rows, keeping the latest time: the pair is one event.
    shape = (len(user_ids), len(item_ids))
    keep = _latest_of_each_pair(rows, cols, times, shape)
    duplicates = len(users) - len(keep)
    # keep is sorted by (row, col) because key is; build CSR directly in that order.
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=shape[0]), out=indptr[1:])
    indices = cols[keep].astype(np.int32)
    matrix = sp.csr_matrix((np.ones(len(keep), np.float32), indices, indptr), shape=shape)
    time_matrix = sp.csr_matrix((times[keep], indices.copy(), indptr.copy()), shape=shape)
    summary = {"users": shape[0], "items": shape[1], "interactions": int(len(keep)),
               "duplicates_collapsed": int(duplicates)}
    return Dataset(matrix, user_ids, item_ids, time_matrix, summary=summary)
