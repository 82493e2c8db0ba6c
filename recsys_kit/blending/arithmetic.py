"""Blend arithmetic on blocks of score rows: mask-aware per-user normalisation, weighted sums, votes.

Seen items are -inf in every member; every function here keeps them -inf and never makes NaN.
"""
from __future__ import annotations

import numpy as np

from recsys_kit.protocol.ranking import top_k


NORMALIZATIONS = ("rank", "zscore", "softmax", "none")


def normalize_rows(block: np.ndarray, method: str) -> np.ndarray:
    """A new float32 block, each row normalised over its finite (unmasked) entries only.

    Non-finite entries (the -inf mask; NaN or +inf from a broken model too) come out -inf,
    finite ones come out finite, whatever the row holds: no NaN, ever.
      rank    -> average rank among the row's finite entries, scaled to [0, 1], best = 1
      zscore  -> (x - mean) / std; a constant row gives 0
      softmax -> exp(x - max) / sum, in (0, 1]
      none    -> x unchanged
    A row with one finite entry, or all finite entries equal, is constant: 0.5, 0, 1/n, x.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {method!r}; choose one of {', '.join(NORMALIZATIONS)}")
    block = np.asarray(block, dtype=np.float32)
    if block.ndim != 2:
        raise ValueError(f"expected a users x items block, got shape {block.shape}")
    finite = np.isfinite(block)
    with np.errstate(under="ignore"):  # denormal scores may round to 0: harmless
        if method == "rank":
            out = _rank_rows(block, finite)
        elif method == "zscore":
            out = _zscore_rows(block, finite)
        elif method == "softmax":
            out = _softmax_rows(block, finite)
        else:
            out = block.copy()
    out[~finite] = -np.inf
    return out


def _rank_rows(block: np.ndarray, finite: np.ndarray) -> np.ndarray:
    n_rows, n_cols = block.shape
    out = np.empty_like(block)
    if n_cols == 0:
        return out
    keyed = np.where(finite, block, -np.inf)  # NaN would sort last; make every masked entry lowest
    order = np.argsort(keyed, axis=1)
    ordered = np.sort(keyed, axis=1)  # same values as keyed[order], cheaper than gathering
    del keyed
    n_masked = (n_cols - finite.sum(axis=1, dtype=np.int32))[:, None]
    position = np.broadcast_to(np.arange(n_cols, dtype=np.float32), (n_rows, n_cols))
    # Ties among finite entries get their average position, so column order cannot matter.
    # Model scores rarely tie; only rows that do (popularity counts) pay for the run search.
    tie = ordered[:, 1:] == ordered[:, :-1]
    tie &= np.isfinite(ordered[:, 1:])
    tied_rows = np.flatnonzero(tie.any(axis=1))
    value = position - n_masked
    if len(tied_rows):
        value[tied_rows] = _average_positions(tie[tied_rows]) - n_masked[tied_rows]
    del ordered, tie
    n_finite = n_cols - n_masked
    value /= np.maximum(n_finite - 1, 1).astype(np.float32)
    value[(n_finite == 1).ravel()] = 0.5  # a lone finite entry is ranked like a constant row
    np.put_along_axis(out, order, value, axis=1)
    return out


def _average_positions(tie: np.ndarray) -> np.ndarray:
    """Per sorted position, the mean position of its run of equal values (tie[:, j]: j+1 equals j)."""
    n_rows, n_cols = tie.shape[0], tie.shape[1] + 1
    position = np.broadcast_to(np.arange(n_cols, dtype=np.int32), (n_rows, n_cols))
    new_run = np.ones((n_rows, n_cols), dtype=bool)
    new_run[:, 1:] = ~tie
    run_start = np.maximum.accumulate(np.where(new_run, position, 0), axis=1)
    ends_run = np.ones((n_rows, n_cols), dtype=bool)
    ends_run[:, :-1] = ~tie
    last = n_cols - 1
    from_end = np.maximum.accumulate(np.where(ends_run, last - position, 0)[:, ::-1], axis=1)[:, ::-1]
    return (run_start + (last - from_end)).astype(np.float32) * 0.5


def _zscore_rows(block: np.ndarray, finite: np.ndarray) -> np.ndarray:
    values = np.where(finite, block, np.float32(0))
    # z-scores do not change under positive scaling: dividing by the row's largest |x| first
    # keeps squares far from float32 overflow even for scores near 3e38.
    scale = np.abs(values).max(axis=1, keepdims=True)
    scale[scale == 0] = 1
    values /= scale
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    mean = values.sum(axis=1, keepdims=True, dtype=np.float64) / count
    values -= mean.astype(np.float32)
    values[~finite] = 0
    std = np.sqrt(np.square(values, dtype=np.float64).sum(axis=1, keepdims=True) / count)
    # Constant rows (std 0, or rounding dust around it) have nothing to rank: all zero.
    std[std < 1e-12] = np.inf
    values /= std.astype(np.float32)
    return values


def _softmax_rows(block: np.ndarray, finite: np.ndarray) -> np.ndarray:
    values = np.where(finite, block, -np.inf)
    top = values.max(axis=1, keepdims=True) if values.shape[1] else np.zeros((values.shape[0], 1), np.float32)
    top[~np.isfinite(top)] = 0  # all-masked row: nothing finite to shift
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        values = np.exp(values - top)  # x - max <= 0: no overflow; -inf -> 0
    total = values.sum(axis=1, keepdims=True, dtype=np.float64)
    total[total == 0] = 1
    values /= total.astype(np.float32)
    return values


def blend_blocks(blocks, weights) -> np.ndarray:
    """sum_m weights[m] * blocks[m], -inf wherever ANY member is masked, never NaN.

    `blocks` may be a generator (one member block at a time, so memory holds one member chunk,
    not all of them). 2-D `weights` (blends x members) make several blends from the same pass,
    returned as blends x rows x items. An entry masked in a member stays masked even when its
    weight is 0 (the mask says "already seen", not "unsure"); masked entries never enter the
    sum, which is what keeps 0 * -inf = NaN out.
    """
    weights = np.asarray(weights, dtype=np.float64)
    matrix = np.atleast_2d(weights)
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        raise ValueError(f"blend weights must be a finite vector or blends x members matrix, got {weights}")
    out = masked = None
    used = 0
    blocks = iter(blocks)
    for column, block in zip(matrix.T, blocks):
        block = np.asarray(block, dtype=np.float32)
        if out is None:
            out = np.zeros((len(matrix), *block.shape), dtype=np.float32)
            masked = np.zeros(block.shape, dtype=bool)
        elif block.shape != masked.shape:
            raise ValueError(f"member block shape {block.shape} differs from {masked.shape}")
        bad = ~np.isfinite(block)
        masked |= bad
        clean = np.where(bad, np.float32(0), block)
        del bad
        with np.errstate(over="ignore", invalid="ignore"):
            for row, weight in enumerate(column):
                if weight != 0:
                    out[row] += clean * np.float32(weight)
        used += 1
    if out is None or used != matrix.shape[1] or next(blocks, None) is not None:
        raise ValueError(f"{matrix.shape[1]} weights per blend for {used} member blocks")
    # Only raw ('none') scores near float32's limit can overflow; saturate instead of NaN.
    big = np.finfo(np.float32).max
    np.nan_to_num(out, copy=False, nan=0.0, posinf=big, neginf=-big)
    out[:, masked] = -np.inf
    return out[0] if weights.ndim == 1 else out



def vote_blocks(blocks, n_members: int, top_n: int = 10, rank_weighted: bool = False) -> np.ndarray:
    """Hard voting over raw member blocks (a generator is fine: one member at a time).

    Each member's top-N unseen items get a vote, worth (N - position) / N when rank-weighted.
    Votes decide; equal totals, and the items nobody voted for, are ordered by mean rank
    (= summed rank), scaled below the smallest gap between two vote totals. Entries masked
    in any member stay -inf.
    """
    votes: list[np.ndarray] = []

    def ranked():
        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            n = min(top_n, block.shape[1])
            best = top_k(block, n)
            value = (n - np.arange(n, dtype=np.float32)) / n if rank_weighted else np.ones(n, np.float32)
            value = np.where(np.isfinite(np.take_along_axis(block, best, axis=1)), value, 0)  # no seen item
            if not votes:
                votes.append(np.zeros(block.shape, dtype=np.float32))
            votes[0][np.arange(len(block))[:, None], best] += value
            yield normalize_rows(block, "rank")

    mean_rank = blend_blocks(ranked(), np.full(n_members, 1.0 / n_members))
    gap = 1.0 / top_n if rank_weighted else 1.0
    return votes[0] + np.float32(0.5 * gap) * mean_rank
