"""The blend methods and row normalisations `kit ensemble` can use, each registered by name.

A method is two functions: `fit` finds a `Blend` on the OOF candidate cache (None: nothing to
fit, equal weights), `combine` applies blends to a chunk of the members' raw rows. Every
combine keeps an entry masked in any member at -inf and never makes NaN.

`slots` is the contest teams' way of adding a sequential model: the top `s` of the 10 slots are
one member's own top-s, the other 10 - s the weighted blend's best items not already taken.
It is written as a score matrix whose plain top-10 is that list: the reserved items are lifted
above every blend score of their row, so `kit submit` needs to know nothing about slots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable

import numpy as np

from recsys_kit.blending.weights import CandidateCache, bagged_weights
from recsys_kit.protocol.metrics import K
from recsys_kit.blending.arithmetic import blend_blocks, normalize_rows, vote_blocks
from recsys_kit.protocol.ranking import top_k

# ----------------------------------------------------------------------------- normalisations


def minmax_rows(block: np.ndarray) -> np.ndarray:
    """A new float32 block, each row mapped to [0, 1] over its finite entries: (x - min) / (max - min).

    Non-finite entries (the -inf mask; NaN or +inf from a broken model) come out -inf, as in
    `scores.normalize_rows`. A row whose finite entries are all equal (a lone one included) has
    no spread to scale and gets 0.5, the value rank normalisation gives it; a row with no finite
    entry stays all -inf.
    """
    block = np.asarray(block, dtype=np.float32)
    if block.ndim != 2:
        raise ValueError(f"expected a users x items block, got shape {block.shape}")
    finite = np.isfinite(block)
    values = np.where(finite, block, np.float32(0))
    low = np.where(finite, block, np.inf).min(axis=1, keepdims=True, initial=np.inf)
    high = np.where(finite, block, -np.inf).max(axis=1, keepdims=True, initial=-np.inf)
    empty = ~finite.any(axis=1, keepdims=True)
    low[empty] = high[empty] = 0  # nothing finite: no bounds, and nothing to scale either
    half = np.float32(0.5)
    with np.errstate(under="ignore"):  # denormal scores may round when halved: harmless
        # Halved before subtracting: max - min of scores near +-3.4e38 overflows float32, halves never do.
        # Rounding is monotone, so x <= max still gives a numerator <= the spread: results stay in [0, 1].
        spread = high * half - low * half
        out = values * half - low * half
        flat = (spread <= 0).ravel()
        spread[flat] = 1
        out /= spread
    out[flat] = 0.5
    out[~finite] = -np.inf
    return out


NORMALIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rank": partial(normalize_rows, method="rank"),
    "zscore": partial(normalize_rows, method="zscore"),
    "softmax": partial(normalize_rows, method="softmax"),
    "minmax": minmax_rows,
    "none": partial(normalize_rows, method="none"),
}


def normalize(block: np.ndarray, name: str) -> np.ndarray:
    """The block normalised per user by the registered normalisation `name`."""
    if name not in NORMALIZERS:
        raise ValueError(f"unknown normalisation {name!r}; choose one of {', '.join(NORMALIZERS)}")
    return NORMALIZERS[name](block)


# ----------------------------------------------------------------------------- what a fit finds

@dataclass(frozen=True, eq=False)
class Blend:
    """One blend: member weights on the simplex, and optionally the top `slots` of the 10 slots
    reserved for member `reserved`'s own best items."""
    weights: np.ndarray = field(repr=False)
    slots: int = 0
    reserved: int = 0


def as_blends(blends) -> list[Blend]:
    """A Blend, a list of Blends, or plain weights (a vector, or blends x members) -> list of Blends."""
    if isinstance(blends, Blend):
        return [blends]
    if isinstance(blends, (list, tuple)) and blends and all(isinstance(b, Blend) for b in blends):
        return list(blends)
    return [Blend(np.asarray(row, dtype=np.float64)) for row in np.atleast_2d(np.asarray(blends, dtype=np.float64))]


def reserve_slots(blend: np.ndarray, own: np.ndarray, slots: int) -> np.ndarray:
    """A copy of `blend` (rows x items) whose plain top-k puts `own`'s best `slots` items first, in
    `own`'s order, then the blend's best of the rest. Only items finite in `blend` are reserved,
    so a masked entry stays -inf; a row with fewer such items reserves fewer."""
    if slots <= 0 or blend.shape[1] == 0:
        return blend.copy()
    own = np.where(np.isfinite(blend), own, -np.inf)
    picks = top_k(own, slots)
    return _lift(blend, picks, np.isfinite(np.take_along_axis(own, picks, axis=1)))


def _lift(blend: np.ndarray, picks: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """`blend` with the items `picks` (rows x s, best first; only where `ok`) set above every other
    finite entry of their row, in that order."""
    out = np.array(blend, dtype=np.float32)
    finite = np.isfinite(out)
    top = np.where(finite, out, -np.inf).max(axis=1, keepdims=True)
    top[~np.isfinite(top)] = 0
    # Raw ('none') blends may sit near float32's limit: scale such rows down so the lift stays finite.
    crowded = (top > np.finfo(np.float32).max / 4).ravel()
    out[crowded] *= np.float32(0.25)
    top[crowded] *= np.float32(0.25)
    # Steps of |top| / 16 (at least 1/16) are far above float32 rounding at any magnitude.
    unit = np.maximum(np.abs(top.astype(np.float64)), 1.0) / 16
    lifted = (top + unit * (picks.shape[1] - np.arange(picks.shape[1]))).astype(np.float32)
    rows = np.arange(len(out))[:, None]
    out[rows, picks] = np.where(ok, lifted, out[rows, picks])
    return out


# ----------------------------------------------------------------------------- combining rows

def _weighted(raw_blocks: Iterable[np.ndarray], blends: list[Blend], options) -> np.ndarray:
    """Weighted sums of the normalised rows (blends x rows x items), slots reserved where a blend has
    them. Members are read one at a time; only the reserved members' raw rows are kept."""
    wanted = {b.reserved for b in blends if b.slots}
    kept: dict[int, np.ndarray] = {}

    def normalised():
        for m, raw in enumerate(raw_blocks):
            if m in wanted:
                kept[m] = raw
            yield normalize(raw, options.normalize)

    out = blend_blocks(normalised(), np.vstack([b.weights for b in blends]))
    for i, b in enumerate(blends):
        if b.slots:
            out[i] = reserve_slots(out[i], kept[b.reserved], b.slots)
    return out


def _vote(raw_blocks: Iterable[np.ndarray], blends: list[Blend], options) -> np.ndarray:
    """Hard voting over the members' top-N: one result, the same for every (weightless) blend."""
    n_members = len(blends[0].weights)
    votes = vote_blocks(raw_blocks, n_members, options.top_n, options.rank_weighted)
    return np.broadcast_to(votes, (len(blends), *votes.shape))


# ----------------------------------------------------------------------------- fitting on the cache

def _fit_weights(cache: CandidateCache, options, seed: int) -> tuple[Blend, float]:
    weights, recall = bagged_weights(cache, cache.scores.shape[0], options.steps, options.bags, seed)
    return Blend(weights), recall


def _fit_slots(cache: CandidateCache, options, seed: int) -> tuple[Blend, float]:
    """Bagged weights as for `fit`, then the (slots, member) reservation that maximises the cache's
    Recall@10 given those weights; 0 slots (the plain blend) unless a reservation is strictly better."""
    weights, _ = bagged_weights(cache, cache.scores.shape[0], options.steps, options.bags, seed)
    slots, member, recall = best_slots(cache, weights)
    return Blend(weights, slots, member), recall


def best_slots(cache: CandidateCache, weights: np.ndarray) -> tuple[int, int, float]:
    """(slots, member, Recall@10) of the best reservation on the cache, 0..K slots per member."""
    blended = np.tensordot(np.asarray(weights, np.float32), cache.scores, axes=1)
    blended[~cache.valid] = -np.inf
    best = (0, 0, _cache_recall(cache, blended))
    for member in range(cache.scores.shape[0]):
        own = np.where(cache.valid, cache.scores[member], -np.inf)
        picks = top_k(own, K)  # prefixes of one top-K: s slots take its first s
        ok = np.isfinite(np.take_along_axis(own, picks, axis=1))
        for slots in range(1, picks.shape[1] + 1):
            recall = _cache_recall(cache, _lift(blended, picks[:, :slots], ok[:, :slots]))
            if recall > best[2] + 1e-12:  # first best wins ties: fewer slots, earlier member
                best = (slots, member, recall)
    return best


def _cache_recall(cache: CandidateCache, blended: np.ndarray) -> float:
    k = min(K, blended.shape[1])
    best = np.argpartition(-blended, k - 1, axis=1)[:, :k]
    hits = np.take_along_axis(cache.hits & cache.valid, best, axis=1).sum(axis=1)
    return float(np.mean(hits / cache.denominator))


# ----------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class BlendMethod:
    combine: Callable[[Iterable[np.ndarray], list[Blend], object], np.ndarray]  # raw rows -> blends x rows x items
    fit: Callable[[CandidateCache, object, int], tuple[Blend, float]] | None = None  # None: equal weights
    fitted: str = ""  # what `fit` fits, for metrics.json
    normalize: str | None = None  # a normalisation the method always uses, whatever --normalize says


METHODS: dict[str, BlendMethod] = {
    "fit": BlendMethod(_weighted, _fit_weights, "weights"),
    "slots": BlendMethod(_weighted, _fit_slots, "weights and reserved slots"),
    "vote": BlendMethod(_vote, normalize="rank"),
    "mean": BlendMethod(_weighted),
}
