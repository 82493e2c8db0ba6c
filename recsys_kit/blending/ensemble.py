"""Blends of `kit cv` runs: weights fitted on out-of-fold scores, blended in user chunks.

Every member's OOF row for a user comes from the one fold model that never saw that user, so
a blend fitted on OOF rows is fitted on honest scores. Two extra guards keep the figure honest:
  - the weights are first fitted on a seeded half A of the users and scored on half B
    (`metrics.json` "holdout_half"), then refitted on all users for the final weights;
  - the search runs on a cache of each member's top candidates for a seeded user sample, and
    every figure reported is then measured exactly on full blended rows.
Memory stays flat: score matrices are read a chunk of users at a time (recsys_kit.files)
and written by streaming, so neither the members nor the output ever sit in memory (or in the
resident set as mapped pages) whole. The methods and normalisations
themselves are registered in `recsys_kit.blend_methods`.
"""
from __future__ import annotations

import dataclasses
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

from recsys_kit import files
from recsys_kit.runs import store
from recsys_kit.runs.run_dir import RunDir
from recsys_kit.blending.members import check_compatible, copy_shared_files, member_rows
from recsys_kit.protocol import time_filter
from recsys_kit.blending.methods import METHODS, NORMALIZERS, Blend, as_blends, normalize
from recsys_kit.blending.weights import CandidateCache, choose_blend
from recsys_kit.errors import DataError
from recsys_kit.seeds import derive_seed
from recsys_kit.protocol.metrics import K, build_metrics, ndcg_per_user, recall_per_user, summarize
from recsys_kit.cv.refit import LB_FILES, depth_estimate
from recsys_kit.protocol.ranking import top_k

EventCallback = Callable[[dict], None]
FALLBACK_RULES = ("clear", "shrink")
DEFAULT_NORMALIZE = "zscore"  # beat rank on held-out Recall@10 on ml-1m (see the issue note)

@dataclass(frozen=True)
class EnsembleOptions:
    method: str = "fit"  # a blend_methods.METHODS name: fit | slots | vote | mean ("fit:" below: slots too)
    normalize: str = DEFAULT_NORMALIZE  # per-user normalisation before blending (vote always ranks)
    seed: int = 0  # base seed of the half split and the fitting sample
    top_n: int = 10  # vote: each member's top-N items get a vote
    rank_weighted: bool = False  # vote: a vote is worth (N - position) / N instead of 1
    candidates: int = 200  # fit: cached candidates per user, split among members (>= 10 each)
    fit_users: int = 16_000  # fit: users (with a target) sampled for the weight search
    steps: tuple[float, ...] = (0.2, 0.1, 0.05)  # fit: coordinate-ascent steps, coarse to fine
    chunk: int = 1024  # users per block: a float32 block is chunk x items x 4 bytes
    bags: int = 8  # fit: weights averaged over fits on this many bootstrap resamples of the users
    fallback: bool = True  # fit: fall back toward the best member unless the held-out gain is clear of zero
    fallback_rule: str = "shrink"  # shrink: weights times P(gain > 0), rest on the best member; clear: all or nothing
    bootstrap: int = 1000  # resamples of half B's users for the gain's paired interval

    def check(self) -> None:
        if self.method not in METHODS:
            raise DataError(f"--method {self.method!r}: unknown; choose one of {', '.join(METHODS)}")
        if self.normalize not in NORMALIZERS:
            raise DataError(f"--normalize {self.normalize!r}: unknown; choose one of "
                            f"{', '.join(NORMALIZERS)}")
        for name in ("top_n", "candidates", "fit_users", "chunk", "bags", "bootstrap"):
            if getattr(self, name) < 1:
                raise DataError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.fallback_rule not in FALLBACK_RULES:
            raise DataError(f"--fallback-rule {self.fallback_rule!r}: unknown; choose one of "
                            f"{', '.join(FALLBACK_RULES)}")
        if not self.steps or not all(0 < s <= 1 for s in self.steps):
            raise DataError(f"ensemble steps must lie in (0, 1], got {list(self.steps)}")


def _notify(on_event: EventCallback | None, kind: str, **payload) -> None:
    if on_event is not None:
        on_event({"kind": kind, **payload})


# ------------------------------------------------------------------------------ weight fitting

def build_cache(members: list[RunDir], users: np.ndarray, target: sp.csr_matrix, options: EnsembleOptions,
                on_step: Callable[[], None] | None = None) -> CandidateCache:
    """Normalised OOF scores of every member on the union of the members' top candidates.

    The cache is members x users x `options.candidates` floats, so it grows linearly with the
    members (13 MB each at 16,000 users), never with the catalogue."""
    n_members = len(members)
    n = min(max(10, options.candidates // n_members), target.shape[1])
    step = _cache_step(options, n_members)
    width = n_members * n
    scores = np.zeros((n_members, len(users), width), dtype=np.float32)
    valid = np.zeros((len(users), width), dtype=bool)
    hits = np.zeros((len(users), width), dtype=bool)
    for start in range(0, len(users), step):
        index = users[start:start + step]
        blocks = [normalize(member_rows(m.path, "oof_scores.npy", index), options.normalize) for m in members]
        items = np.sort(np.concatenate([top_k(b, n) for b in blocks], axis=1), axis=1)
        ok = np.ones(items.shape, dtype=bool)
        ok[:, 1:] = items[:, 1:] != items[:, :-1]  # the same item picked by two members counts once
        rows = slice(start, start + len(index))
        for m, block in enumerate(blocks):
            picked = np.take_along_axis(block, items, axis=1)
            ok &= np.isfinite(picked)
            scores[m, rows] = np.where(np.isfinite(picked), picked, 0)
        valid[rows] = ok
        hits[rows] = np.take_along_axis(target[index].toarray() > 0, items, axis=1)
        if on_step is not None:
            on_step()
    denominator = np.minimum(K, np.diff(target.indptr)[users]).astype(np.float64)
    return CandidateCache(scores, valid, hits, denominator)


def _cache_step(options: EnsembleOptions, n_members: int) -> int:
    # Every member's block is held at once while caching, so the step shrinks as members grow.
    return max(64, options.chunk // n_members)


# ------------------------------------------------------------------------------ chunked blending

def blend_chunk(members: list[RunDir], name: str, index, blends, options: EnsembleOptions,
                on_member: Callable[[int, np.ndarray], None] | None = None, users: int | None = None) -> np.ndarray:
    """The blends (Blends, or weights: a vector or blends x members) of the members' rows `index`
    by `options.method`, shape blends x rows x items; members are read one at a time (`users`:
    the matrices' row count when they hold a user sample)."""

    def raw_blocks():
        for m, member in enumerate(members):
            raw = member_rows(member.path, name, index, users)
            if on_member is not None:
                on_member(m, raw)
            yield raw

    return METHODS[options.method].combine(raw_blocks(), as_blends(blends), options)


def blend_file(members: list[RunDir], name: str, out: Path | None, blends, options: EnsembleOptions,
               target: sp.csr_matrix | None = None, on_chunk: Callable[[], None] | None = None) -> dict:
    """Blend score matrix `name` of the members into `out` (the first of `blends`: Blends, or
    weights as a vector or blends x members), chunk by chunk. With `target`: per-user Recall@10 /
    NDCG@10 of every blend ("recall", "ndcg": blends x users) and of every member's own top-10
    ("member_recall", "member_ndcg")."""
    n_users, n_items = members[0].data["users"], members[0].data["items"]
    blends = as_blends(blends)
    n_blends = len(blends)
    per_user = {key: np.full((count, n_users), np.nan) for key, count in (
        ("recall", n_blends), ("ndcg", n_blends), ("member_recall", len(members)), ("member_ndcg", len(members)))}
    # Rows are written block by block (recsys_kit.files.ScoreFile), never held or mapped whole.
    writer = files.open_scores(out, (n_users, n_items)) if out is not None else None
    try:
        for start in range(0, n_users, options.chunk):
            rows = slice(start, min(start + options.chunk, n_users))
            chunk_target = target[rows] if target is not None else None

            def on_member(m: int, raw: np.ndarray) -> None:
                if chunk_target is not None:  # the member's own top-10, as its own run measured it
                    _score_into(per_user, "member_", raw, chunk_target, (m, rows))

            block = blend_chunk(members, name, rows, blends, options, on_member)
            if writer is not None:
                writer[rows] = block[0]
            for b in range(n_blends if chunk_target is not None else 0):
                _score_into(per_user, "", block[b], chunk_target, (b, rows))
            del block
            if on_chunk is not None:
                on_chunk()
        if writer is not None:
            files.finish_scores(out, writer)
    finally:
        if writer is not None and not writer.closed:  # failed half-way: no temporary left behind
            files.discard_scores(out, writer)
    return per_user


def _score_into(per_user: dict, prefix: str, block: np.ndarray, target: sp.csr_matrix, where) -> None:
    best = top_k(block, K)
    per_user[f"{prefix}recall"][where] = recall_per_user(best, target, K)
    per_user[f"{prefix}ndcg"][where] = ndcg_per_user(best, target, K)


# ------------------------------------------------------------------------------ the run

def split_halves(n_users: int, seed: int) -> np.ndarray:
    """bool per user: True = half B (scored, never fitted on), False = half A (fitted on)."""
    rng = np.random.default_rng(derive_seed(seed, "ensemble-half"))
    half_b = np.zeros(n_users, dtype=bool)
    half_b[rng.permutation(n_users)[: n_users // 2]] = True
    return half_b


def fit_sample(has_target: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted users (with a target) the weight search looks at; all of them if few enough."""
    users = np.flatnonzero(has_target)
    if len(users) > size:
        users = np.sort(np.random.default_rng(derive_seed(seed, "ensemble-fit")).choice(users, size, replace=False))
    return users


def run_ensemble(run_dirs, runs_dir: Path, name: str | None = None, options: EnsembleOptions = EnsembleOptions(),
                 on_event: EventCallback | None = None) -> Path:
    """Blend the runs' OOF and test scores into a new run directory; returns its path."""
    started = time.time()
    options.check()
    members = check_compatible(run_dirs)
    first = members[0].path
    target = store.load_sparse(first, "holdout_target.npz")
    n_users = target.shape[0]
    half_b = split_halves(n_users, options.seed)
    _notify(on_event, "start", members=[str(m.path) for m in members], users=n_users,
            items=target.shape[1], method=options.method, normalize=options.normalize)
    fitted = _fit_blend(members, target, half_b, options, on_event)
    run_dir = _start_run_dir(members, runs_dir, name, options)

    chunks = -(-n_users // options.chunk)
    _notify(on_event, "stage", stage="oof", total=chunks)
    # First: the final blend (written, scored on everyone); last: the half-A fit, for half B.
    blends = [fitted.final, fitted.half_a] if fitted.info else [fitted.final]
    per_user = blend_file(members, "oof_scores.npy", run_dir / "oof_scores.npy", blends, options, target=target,
                          on_chunk=lambda: _notify(on_event, "advance", stage="oof"))
    _notify(on_event, "stage", stage="test", total=chunks)
    blend_file(members, "test_scores.npy", run_dir / "test_scores.npy", [fitted.final], options,
               on_chunk=lambda: _notify(on_event, "advance", stage="test"))

    metrics = _ensemble_metrics(members, fitted, per_user, target, half_b, options)
    metrics["wall_seconds"] = round(time.time() - started, 2)
    metrics["time_filter"] = time_filter.margin_report(store.load_scores(run_dir, "oof_scores.npy"), target,
                                                       time_filter.load_times(run_dir))
    files.write_json(run_dir / "metrics.json", metrics)  # last: its presence marks a finished run
    _notify(on_event, "end", run_dir=str(run_dir), metrics=metrics)
    return run_dir


@dataclass(frozen=True)
class FittedBlend:
    final: Blend  # what is written: the blend fitted on all users, or the best member alone (the fallback)
    half_a: Blend  # fitted on half A only, scored on half B
    info: dict  # the fit's figures for metrics.json ({} for a method that fits nothing)
    choice: dict  # blend or best member, and why


def _fit_blend(members: list[RunDir], target: sp.csr_matrix, half_b: np.ndarray, options: EnsembleOptions,
               on_event: EventCallback | None) -> FittedBlend:
    """Weights fitted on a cache of the members' top candidates (half A, then all users), the half-A
    fit checked on half B, and the fallback's choice; equal weights for a method that fits nothing."""
    method, n_members = METHODS[options.method], len(members)
    final = Blend(np.full(n_members, 1.0 / n_members))
    if method.fit is None:
        return FittedBlend(final, final, {}, {"used": "blend",
                                              "reason": f"method {options.method}: no fitted weights to check"})
    users = fit_sample(np.diff(target.indptr) > 0, options.fit_users, options.seed)
    _notify(on_event, "stage", stage="cache", total=-(-len(users) // _cache_step(options, n_members)))
    cache = build_cache(members, users, target, options, on_step=lambda: _notify(on_event, "advance", stage="cache"))
    _notify(on_event, "stage", stage="fit", total=2)
    in_a = ~half_b[users]
    half_a, sample_a = method.fit(cache.subset(in_a), options, derive_seed(options.seed, "bags-half-a"))
    _notify(on_event, "advance", stage="fit", weights=half_a.weights.tolist())
    final, sample_all = method.fit(cache, options, derive_seed(options.seed, "bags"))
    _notify(on_event, "advance", stage="fit", weights=final.weights.tolist())
    del cache
    info = {"users": len(users), "users_half_a": int(in_a.sum()), "bags": options.bags,
            "sample_recall@10_half_a": sample_a, "sample_recall@10": sample_all, "slots": _slots(final, members)}
    _notify(on_event, "stage", stage="check", total=-(-target.shape[0] // options.chunk))
    check = blend_file(members, "oof_scores.npy", None, [half_a], options, target=target,
                       on_chunk=lambda: _notify(on_event, "advance", stage="check"))
    choice = choose_blend(members, check, half_b, final.weights, options)
    if choice["used"] != "blend":  # the best member alone (its own top-10) or the shrunk weights; no slots
        final = Blend(np.asarray(choice["weights"]))
    return FittedBlend(final, half_a, info, choice)


def _start_run_dir(members: list[RunDir], runs_dir: Path, name: str | None, options: EnsembleOptions) -> Path:
    """The blend's new run directory with its config, environment and the members' shared files."""
    first = members[0].path
    run_dir = store.create_run_dir(runs_dir, name or store.default_run_name("ensemble"))
    normalize = METHODS[options.method].normalize or options.normalize
    files.write_json(run_dir / "config.json", {"kind": "ensemble", "members": [str(m.path) for m in members],
                                              **dataclasses.asdict(options), "normalize": normalize})
    # Not store.environment(): it imports torch (~0.3 GB resident) to name a device a blend never uses.
    files.write_json(run_dir / "environment.json", {"python": platform.python_version(), "numpy": np.__version__,
                                                   "platform": platform.platform(), "argv": sys.argv})
    copy_shared_files(first, run_dir)
    return run_dir


def _ensemble_metrics(members: list[RunDir], fitted: FittedBlend, per_user: dict, target: sp.csr_matrix,
                      half_b: np.ndarray, options: EnsembleOptions) -> dict:
    """metrics.json of the blend: OOF figures, members and weights, the held-out half, the estimate."""
    method = METHODS[options.method]
    first = members[0].path
    activity = np.diff(store.load_sparse(first, "holdout_input.npz").indptr)
    fold_of_user = store.load_ids(first, "folds.npy")
    weights, weights_a = np.asarray(fitted.final.weights), np.asarray(fitted.half_a.weights)
    half_recall, half_ndcg = (np.where(half_b, per_user[k][-1], np.nan) for k in ("recall", "ndcg"))
    estimate = blend_lb_estimate(members, fitted.final, options)
    members_report = [{
        "path": str(member.path), "name": member.name, "model": member.metrics.get("model"),
        "weight": float(weights[m]), "weight_half_a": float(weights_a[m]),
        **{metric: _brief(member.metrics.get(metric)) for metric in ("recall@10", "ndcg@10")},
        "holdout_half": {"recall@10": summarize(per_user["member_recall"][m][half_b]),
                         "ndcg@10": summarize(per_user["member_ndcg"][m][half_b])}}
        for m, member in enumerate(members)]
    metrics = build_metrics(per_user["recall"][0], per_user["ndcg"][0], activity, fold_of_user,
                            np.diff(target.indptr) > 0)
    metrics.update({
        "model": "ensemble", "method": options.method, "normalize": method.normalize or options.normalize,
        "weights": weights.tolist(), "slots": _slots(fitted.final, members), "members": members_report,
        "fit": fitted.info, "choice": fitted.choice, "lb_estimate": estimate,
        "holdout_half": {"recall@10": summarize(half_recall), "ndcg@10": summarize(half_ndcg),
                         "users_evaluated": int((~np.isnan(half_recall)).sum()),
                         "weights": weights_a.tolist(), "slots": _slots(fitted.half_a, members), "seed": options.seed,
                         "note": f"{method.fitted} fitted on half A of the users, scored on half B" if
                         method.fit is not None else "no fitting: the same blend, scored on half B"}})
    metrics["recall@10"]["lb_estimate"] = estimate.get("recall@10")
    return metrics


def blend_lb_estimate(members: list[RunDir], blend, options: EnsembleOptions) -> dict:
    """The members' leaderboard-estimate rows (one and two levels of hiding down), blended as the
    final `blend` (a Blend, or its weights) and extrapolated as for one model (recsys_kit.refit)."""
    if not all((m.path / name).exists() for m in members for name in LB_FILES):
        return {"recall@10": None, "reason": "a member has no leaderboard-estimate rows (cv --no-lb-estimate)"}
    sample = np.load(members[0].path / "lb_users.npy")
    if any(not np.array_equal(np.load(m.path / "lb_users.npy"), sample) for m in members[1:]):
        return {"recall@10": None, "reason": "the members' estimate samples differ (other seed or holdout)"}
    recall = {}
    for level in ("level2", "level3"):
        target = sp.load_npz(members[0].path / f"lb_{level}_target.npz").tocsr()
        recall[level] = np.full(len(sample), np.nan)
        for start in range(0, len(sample), options.chunk):
            rows = slice(start, min(start + options.chunk, len(sample)))
            block = blend_chunk(members, f"lb_{level}_scores.npy", rows, as_blends(blend)[:1], options,
                                users=len(sample))[0]
            recall[level][rows] = recall_per_user(top_k(block, K), target[rows], K)
    # The sample holds level-2 users only: the share of all users with a level-2 target is the members'.
    level2_users = (members[0].metrics.get("lb_estimate") or {}).get("users_level2")
    coverage2 = level2_users / members[0].data["users"] if level2_users else None
    entry = depth_estimate(recall["level2"], recall["level3"], 200, options.seed, coverage2=coverage2)
    return {**entry, "method": "depth extrapolation R2 * R2/R3 on the members' sample rows"}


def _slots(blend: Blend, members: list[RunDir]) -> dict:
    """The slots a blend reserves, and for which member, as metrics.json reports them."""
    return {"slots": blend.slots, "member": members[blend.reserved].name if blend.slots else None}


def _brief(metric: dict | None) -> dict | None:
    return None if metric is None else {k: metric[k] for k in ("mean", "std", "lb_estimate") if k in metric}
