"""Blend weights fitted to out-of-fold Recall@10: a candidate cache and a coordinate ascent on the simplex.

Pure NumPy and independent of run directories, so the search itself is testable on planted members;
`recsys_kit.ensemble` builds the cache from real runs and measures the result on full rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from recsys_kit.seeds import derive_seed
from recsys_kit.protocol.metrics import K, summarize



@dataclass(frozen=True)
class CandidateCache:
    """Per sampled user, the union of the members' top candidates: what a blend's top-10 is
    (almost always) drawn from, so a weight vector is scored without touching full rows."""
    scores: np.ndarray  # members x users x candidates, normalised (0 where invalid)
    valid: np.ndarray  # users x candidates: a real, unseen, not duplicated item
    hits: np.ndarray  # users x candidates: the item is in the user's target
    denominator: np.ndarray  # users: min(10, |target|)

    def subset(self, keep: np.ndarray) -> "CandidateCache":
        return CandidateCache(self.scores[:, keep], self.valid[keep], self.hits[keep], self.denominator[keep])

    def recall(self, weights: np.ndarray) -> float:
        blended = np.tensordot(np.asarray(weights, np.float32), self.scores, axes=1)
        blended[~self.valid] = -np.inf
        k = min(K, blended.shape[1])
        best = np.argpartition(-blended, k - 1, axis=1)[:, :k]
        hits = np.take_along_axis(self.hits & self.valid, best, axis=1).sum(axis=1)
        return float(np.mean(hits / self.denominator))


def fit_weights(objective: Callable[[np.ndarray], float], n_members: int,
                steps=(0.2, 0.1, 0.05), max_sweeps: int = 10) -> tuple[np.ndarray, float, int]:
    """Coordinate ascent on the simplex: move one weight, rescale the rest, keep strict gains.

    Deterministic (no sampler to seed) and cheap; Recall@10 is a step function of the weights,
    which gives a surrogate-model sampler little to learn from at a few hundred evaluations.
    The first step scans each coordinate's whole line, finer steps look +-1 and +-2 steps away.
    """
    memo: dict[tuple, float] = {}

    def score(w: np.ndarray) -> float:
        key = tuple(np.round(w, 6))
        if key not in memo:
            memo[key] = objective(w)
        return memo[key]

    starts = [np.full(n_members, 1.0 / n_members)] + list(np.eye(n_members))
    weights = max(starts, key=score)  # first best wins ties: equal weights before any single member
    best = score(weights)
    for level, step in enumerate(steps):
        for _ in range(max_sweeps):
            improved = False
            for j in range(n_members):
                if level == 0:
                    values = np.linspace(0, 1, int(round(1 / step)) + 1)
                else:
                    values = weights[j] + step * np.array([-2, -1, 1, 2])
                for value in np.clip(values, 0, 1):
                    candidate = _move(weights, j, float(value))
                    gain = score(candidate)
                    if gain > best + 1e-12:
                        weights, best, improved = candidate, gain, True
            if not improved:
                break
    return weights, best, len(memo)


def _move(weights: np.ndarray, j: int, value: float) -> np.ndarray:
    """weights with w_j = value and the others rescaled to sum to 1 - value."""
    out = weights.astype(np.float64).copy()
    rest = 1.0 - out[j]
    out[j] = 0
    out = out * ((1.0 - value) / rest) if rest > 1e-12 else np.full(len(out), (1.0 - value) / (len(out) - 1))
    out[j] = value
    return out


def bagged_weights(cache: CandidateCache, n_members: int, steps, bags: int, seed: int) -> tuple[np.ndarray, float]:
    """The mean of the weights fitted on `bags` bootstrap resamples of the cached users.

    One fit on a few hundred users chases the noise of which items those users happen to hit;
    averaging fits on resamples keeps what they agree on (bagging, Breiman 1996). Returns the
    weights and their Recall@10 on the whole cache."""
    if bags <= 1:
        weights, best, _ = fit_weights(cache.recall, n_members, steps)
        return weights, best
    rng = np.random.default_rng(seed)
    n_users = cache.hits.shape[0]
    fitted = [fit_weights(cache.subset(rng.integers(0, n_users, n_users)).recall, n_members, steps)[0]
              for _ in range(bags)]
    weights = np.mean(fitted, axis=0)
    return weights / weights.sum(), cache.recall(weights)


def bootstrap_means(difference: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Means of `draws` bootstrap resamples over users of a per-user paired difference (NaNs dropped)."""
    values = difference[~np.isnan(difference)]
    if len(values) == 0:
        return np.full(1, np.nan)
    rng = np.random.default_rng(seed)
    return np.array([values[rng.integers(0, len(values), len(values))].mean() for _ in range(draws)])


def paired_interval(difference: np.ndarray, draws: int, seed: int, level: float = 0.90) -> tuple[float, float]:
    """Bootstrap interval over users of the mean of a per-user paired difference (NaNs dropped)."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(bootstrap_means(difference, draws, seed), [tail, 100 - tail])
    return float(low), float(high)


def shrink_share(means: np.ndarray) -> float:
    """How much of the fitted blend to keep when its gain is not clear of zero: P(gain > 0) over the
    bootstrap means, so a gain as likely negative as positive keeps half and no evidence keeps none."""
    return float(np.mean(means > 0)) if np.all(np.isfinite(means)) else 0.0


def choose_blend(members: list, check: dict, half_b: np.ndarray, weights: np.ndarray, options) -> dict:
    """The blend, or, when the blend's gain on half B is not clear of zero, the best member alone
    (fallback rule "clear") or the blend's weights times P(gain > 0), the rest on it ("shrink").

    The gain is paired per user: the half-A blend against the member that was best on half A,
    both scored on half B, with a bootstrap interval over half B's users."""
    member_a = [summarize(check["member_recall"][m][~half_b]) for m in range(len(members))]
    rival = int(np.argmax(member_a))
    gain = np.where(half_b, check["recall"][0] - check["member_recall"][rival], np.nan)
    means = bootstrap_means(gain, options.bootstrap, derive_seed(options.seed, "gain"))
    low, high = (float(v) for v in np.percentile(means, [5, 95]))
    out = {"gain_half_b": summarize(gain), "gain_interval90": [low, high], "rival": members[rival].name}
    if low > 0 or not options.fallback:
        reason = "the gain's 90% interval lies above zero" if low > 0 else "--no-fallback"
        return {**out, "used": "blend", "weights": [float(w) for w in weights], "reason": reason}
    best = int(np.argmax([(m.metrics.get("recall@10") or {}).get("mean", -1.0) for m in members]))
    alone = np.eye(len(members))[best]
    # Shrinking mixes weights only: a slots blend's reserved slots have no half-way.
    shrink = options.fallback_rule == "shrink" and options.method == "fit"
    share = shrink_share(means) if shrink else 0.0
    if share > 0:
        return {**out, "used": f"blend shrunk toward {members[best].name}", "shrink_share": share,
                "weights": (share * np.asarray(weights) + (1 - share) * alone).tolist(),
                "fitted_weights": [float(w) for w in weights],
                "reason": f"the gain's 90% interval reaches 0 (P(gain > 0) = {share:.2f}): "
                          f"{share:.0%} the fitted weights, the rest on the best member by OOF"}
    return {**out, "used": f"best member {members[best].name}", "weights": alone.tolist(),
            "fitted_weights": [float(w) for w in weights],
            "reason": "the blend's gain over the best member on half B is not clear of zero "
                      "(90% interval reaches 0): submitting the best member by OOF alone"}
