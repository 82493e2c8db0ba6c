"""Score matrices: seen-item masking and chunked top-k.

Scores are float32 users x items; seen items are -inf so they can never be recommended.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def mask_seen(scores: np.ndarray, seen_rows: sp.csr_matrix) -> np.ndarray:
    """In place: scores[u, i] = -inf for every seen (u, i)."""
    seen_rows = seen_rows.tocsr()
    rows = np.repeat(np.arange(seen_rows.shape[0]), np.diff(seen_rows.indptr))
    scores[rows, seen_rows.indices] = -np.inf
    return scores


TOP_K_ROWS = 1024  # argpartition's int64 index copy is 2x the block: bound it, not the caller's block


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best columns per row, best first (deterministic for the same input)."""
    k = min(k, scores.shape[1])
    if scores.shape[0] > TOP_K_ROWS:
        out = np.empty((scores.shape[0], k), dtype=np.int64)
        for start in range(0, scores.shape[0], TOP_K_ROWS):
            out[start:start + TOP_K_ROWS] = top_k(scores[start:start + TOP_K_ROWS], k)
        return out
    # argpartition on the negated scores, then an exact sort of those k.
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part.sort(axis=1)  # equal scores then come out in column order
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def top_k_chunked(scores: np.ndarray, k: int, chunk: int = 2048, transform=None) -> np.ndarray:
    """top_k over a matrix on disk (a ScoreFile) or in memory, one user chunk at a time; `transform(block,
    users)` may rewrite each chunk's rows first (e.g. the time-consistency filter)."""
    out = np.empty((scores.shape[0], min(k, scores.shape[1])), dtype=np.int64)
    for start in range(0, scores.shape[0], chunk):
        block = np.asarray(scores[start:start + chunk], dtype=np.float32)
        if transform is not None:
            block = transform(block, np.arange(start, start + len(block)))
        out[start:start + chunk] = top_k(block, k)
    return out


def broken_rows(scores: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Rows holding NaN or +inf (a diverged model; -inf is the seen-item mask), one chunk at a time."""
    bad = [np.array([], dtype=np.int64)]
    for start in range(0, scores.shape[0], chunk):
        block = np.asarray(scores[start:start + chunk])
        bad.append(start + np.flatnonzero((np.isnan(block) | np.isposinf(block)).any(axis=1)))
    return np.concatenate(bad)
