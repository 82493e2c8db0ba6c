"""Fits on every user's rows after the folds: the submission's refit and the leaderboard estimate.

The contest trains on every public row of every user and scores the same users, one level of
hiding above the kit's holdout. Two things follow:
  - the submission comes from models fitted on all public rows (`refit full`; random models are
    bagged over a few seeds), not from the fold models, which each saw 80% of the users' inputs;
  - the leaderboard is estimated by depth extrapolation. Fit the same recipe one level down
    (every user's holdout input -> the holdout targets: R2) and two levels down (hide a second
    holdout from those inputs: R3). Each level of hiding costs about the same fraction, so the
    contest's level reads R1 ~ R2 * (R2 / R3), the ratio taken on users with targets at both
    levels. Nothing here trains on a holdout target, and OOF matrices stay as the folds made them.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from recsys_kit import files
from recsys_kit.errors import DataError
from recsys_kit.protocol.holdout import Holdout, contest_holdout
from recsys_kit.seeds import derive_seed
from recsys_kit.protocol.metrics import K, recall_per_user
from recsys_kit.models import REGISTRY, build_model
from recsys_kit.protocol.ranking import top_k
from recsys_kit.data.interactions import Interactions, ItemSide
from recsys_kit.protocol.split import holdout_inputs

REFIT_MODES = ("full", "folds", "both", "none")
AUTO_SEEDS = 3
SCORE_CHUNK = 4096
# The estimate is given when at least these shares of users have a target one level down and,
# of those, two levels down (MovieLens sets: 100% / 93-96%; S3-Rec Beauty: 13% / 31%).
MIN_COVERAGE = (0.8, 0.5)
# What a run keeps for a blend's leaderboard estimate (rows of a seeded user sample).
LB_FILES = ("lb_users.npy", "lb_level2_scores.npy", "lb_level3_scores.npy", "lb_level2_target.npz",
            "lb_level3_target.npz")


@dataclass(frozen=True)
class RefitOptions:
    # full: test scores from one model fitted on every public row | folds: the fold models' mean |
    # both: full into test_scores.npy and the fold mean into test_scores_folds.npy | none: no test scores
    mode: str = "full"
    # Refits averaged, each with its own seed (bagging), and as many fits per estimate level.
    # 0 = auto: AUTO_SEEDS for models whose fit is random, 1 for deterministic ones (EASE, popularity).
    seeds: int = 0
    lb_estimate: bool = True  # the two extra fits of the depth extrapolation
    # Fits per estimate level; 0 = as many as the refit bags. One fit was 3-18% low on five nested
    # contest rows where the bag missed by 2-9% (docs/results.md, the estimate's fits).
    estimate_seeds: int = 0
    estimate_users: int = 10_000  # users whose level-2/3 score rows are kept so blends get an estimate too
    bootstrap: int = 200  # resamples of the users for the estimate's interval

    def __post_init__(self):
        if self.mode not in REFIT_MODES:
            raise DataError(f"--refit {self.mode!r}: choose one of {', '.join(REFIT_MODES)}")
        if self.seeds < 0 or self.estimate_seeds < 0:
            raise DataError(f"--refit-seeds must be >= 1 (or 0 for auto), got {self.seeds}")
        if self.estimate_users < 1 or self.bootstrap < 1:
            raise DataError("estimate_users and bootstrap must be >= 1")


def resolved(options: RefitOptions, model_name: str) -> RefitOptions:
    """options with `seeds` auto resolved: one fit of a random model is noisy where a fold average is a
    bag of K (ml-latest-small Multi-DAE, LB: one refit 0.1525, fold mean 0.1574, three refits 0.1600)."""
    if options.seeds:
        return options
    return dataclasses.replace(options, seeds=1 if REGISTRY[model_name].deterministic else AUTO_SEEDS)


def refit_epochs(fold_records: list[dict], config) -> tuple[int, str]:
    """The epoch count for fits without a validation slice: the median of the folds' best epochs."""
    best = [r["model"]["best_epoch"] for r in fold_records if r["model"].get("best_epoch")]
    if not best:
        return config.train.epochs, "config (the model has no epochs or no early stopping ran)"
    return max(1, int(round(float(np.median(best))))), f"median of the folds' best epochs {best}"


def fixed_epoch_config(config, epochs: int):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))


def fit_bag(config, rows: Interactions, side: ItemSide, seeds: list[int], device: str, stage: str,
            notify: Callable[..., None]) -> list:
    """One model per seed on every user's `rows`, with no validation slice (the epochs are fixed)."""
    models = []
    for index, seed in enumerate(seeds):
        notify("stage_start", stage=stage + (f" {index + 1}/{len(seeds)}" if len(seeds) > 1 else ""),
               epochs=config.train.epochs)
        model = build_model(config, seed=seed, device=device)
        models.append(model.fit(rows, side, valid=None,
                                on_epoch=lambda record: notify("epoch", fold=stage, **record)))
    return models


def refit_full(public: Interactions, side: ItemSide, config, epochs: int, device: str, base_seed: int,
               seeds: int, run_dir, notify: Callable[..., None]) -> dict:
    """test_scores.npy from models fitted on every public row (the contest's own training set),
    averaged over `seeds` refits; autoencoders train for the folds' median best epoch."""
    started = time.time()
    models = fit_bag(fixed_epoch_config(config, epochs), public, side,
                     [derive_seed(base_seed, "refit", index) for index in range(seeds)], device, "refit", notify)
    test_scores = files.open_scores(run_dir / "test_scores.npy", public.shape)
    score_rows(models, public, test_scores)
    files.finish_scores(run_dir / "test_scores.npy", test_scores)
    return {"seeds": seeds, "seconds": round(time.time() - started, 2)}


def score_rows(models: list, rows: Interactions, out, out_rows: np.ndarray | None = None, scale: float = 1.0,
               accumulate: bool = False) -> None:
    """out[out_rows] (= or +=) scale x the models' mean score of every row of `rows`, a chunk of users
    at a time (out_rows defaults to 0..n-1: rows and out aligned)."""
    out_rows = np.arange(rows.shape[0]) if out_rows is None else out_rows
    for start in range(0, rows.shape[0], SCORE_CHUNK):
        index = out_rows[start:start + SCORE_CHUNK]
        block = mean_score(models, rows.take(slice(start, start + SCORE_CHUNK)))
        if scale != 1.0:
            block *= scale
        if accumulate:
            out[index] += block
        else:
            out[index] = block


def mean_score(models: list, rows: Interactions) -> np.ndarray:
    block = models[0].score(rows)
    for model in models[1:]:
        block += model.score(rows)
    return block / len(models) if len(models) > 1 else block


def recall_of(models: list, inputs: Interactions, target: sp.csr_matrix, keep_rows: np.ndarray | None = None,
              kept=None) -> np.ndarray:
    """Per-user Recall@10 of the models' mean score (NaN without a target); the score rows of the
    sorted `keep_rows` go to `kept`."""
    recall = np.full(inputs.shape[0], np.nan)
    for start in range(0, inputs.shape[0], SCORE_CHUNK):
        stop = min(start + SCORE_CHUNK, inputs.shape[0])
        block = mean_score(models, inputs.take(slice(start, stop)))
        recall[start:stop] = recall_per_user(top_k(block, K), target[start:stop], K)
        if kept is not None:
            low, high = np.searchsorted(keep_rows, [start, stop])
            kept[low:high] = block[keep_rows[low:high] - start]
    return recall


def depth_estimate(recall2: np.ndarray, recall3: np.ndarray, bootstrap: int, seed: int,
                   coverage2: float | None = None) -> dict:
    """R2 * R2/R3 (ratio on users with targets at both levels), with a bootstrap interval over users.

    The extrapolation assumes each level scores much the same users. When most users cannot be
    hidden from again (short histories: the holdout already took all but `min_input` items), the
    deeper levels score only the heavy users, and the chain says nothing about the rest: then no
    estimate is given, with the reason (S3-Rec Beauty: 13% of users at level 2, estimate +57%).
    `coverage2`: the share of all users with a level-2 target (default: from recall2's NaNs)."""
    has2 = ~np.isnan(recall2)
    both = has2 & ~np.isnan(recall3)
    coverage2 = float(has2.mean()) if coverage2 is None else coverage2
    coverage3 = float(both.sum() / max(has2.sum(), 1))
    if coverage2 < MIN_COVERAGE[0] or coverage3 < MIN_COVERAGE[1]:
        return withheld(coverage2, coverage3)

    def estimate(r2, r3, r2_all):
        return float(np.mean(r2_all) * np.mean(r2) / max(np.mean(r3), 1e-12))

    r2b, r3b, r2a = recall2[both], recall3[both], recall2[has2]
    value = estimate(r2b, r3b, r2a)
    rng = np.random.default_rng(derive_seed(seed, "lb-bootstrap"))
    draws = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(r2b), len(r2b))
        draws.append(estimate(r2b[pick], r3b[pick], r2a[rng.integers(0, len(r2a), len(r2a))]))
    low, high = np.percentile(draws, [5, 95])
    return {"recall@10": value, "interval90": [float(low), float(high)], "level2": float(np.mean(r2a)),
            "level2_common": float(np.mean(r2b)), "level3_common": float(np.mean(r3b)),
            "ratio": float(np.mean(r2b) / max(np.mean(r3b), 1e-12)),
            "users_level2": int(has2.sum()), "users_both_levels": int(both.sum()),
            "coverage": [coverage2, coverage3]}


def withheld(coverage2: float, coverage3: float) -> dict:
    """No estimate: too few users can be hidden from twice for the depth chain to speak for them."""
    return {"recall@10": None, "coverage": [coverage2, coverage3],
            "reason": f"too few users keep items for two more levels of hiding ({coverage2:.0%} have a "
                      f"target one level down, {coverage3:.0%} of those two levels down; needs "
                      f"{MIN_COVERAGE[0]:.0%} and {MIN_COVERAGE[1]:.0%}), so the depth extrapolation "
                      f"would speak for the heaviest users only; read the OOF figure"}


def estimate_sample(has_target: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted users (with a level-2 target) whose level-2/3 rows are kept for blend estimates;
    derived from the seed and the holdouts alone, so every run on the same holdout picks the same."""
    users = np.flatnonzero(has_target)
    if len(users) > size:
        users = np.sort(np.random.default_rng(derive_seed(seed, "lb-sample")).choice(users, size, replace=False))
    return users


def level3_holdout(holdout: Holdout, config) -> Holdout:
    """A second contest-like holdout taken from the first one's inputs (the same rules)."""
    return contest_holdout(holdout.input, holdout.input_times, config.holdout,
                           derive_seed(config.seed, "lb-level3"))


def run_lb_estimate(side: ItemSide, holdout: Holdout, config, epochs: int, device: str, base_seed: int,
                    options: RefitOptions, run_dir, notify: Callable[..., None]) -> dict:
    """The estimate's two fits; writes the sample rows a blend's estimate needs (LB_FILES) into
    run_dir and returns the metrics entry."""
    started = time.time()
    level3 = level3_holdout(holdout, config)
    # Coverage is known from the holdouts alone: when it withholds the estimate, fit nothing.
    has2 = holdout.has_target
    coverage = (float(has2.mean()), float((has2 & level3.has_target).sum() / max(has2.sum(), 1)))
    if coverage[0] < MIN_COVERAGE[0] or coverage[1] < MIN_COVERAGE[1]:
        return {**withheld(*coverage), "method": "depth extrapolation R2 * R2/R3", "epochs": epochs,
                "seconds": round(time.time() - started, 2)}
    fixed = fixed_epoch_config(config, epochs)
    # Users with a level-2 target (level 3 may have none): the sample stands for every user that
    # the level-2 figure counts, so a blend's estimate reads as its members' do.
    sample = estimate_sample(holdout.has_target, options.estimate_users, config.seed)
    files.save_npy(run_dir / "lb_users.npy", sample)
    files.save_sparse(run_dir / "lb_level2_target.npz", holdout.target[sample])
    files.save_sparse(run_dir / "lb_level3_target.npz", level3.target[sample])
    per_level, fits = {}, options.estimate_seeds or options.seeds
    for level, (inputs, target) in (("level2", (holdout_inputs(holdout), holdout.target)),
                                    ("level3", (holdout_inputs(level3), level3.target))):
        # By default as many fits as the refit bags, so the estimate is of the model that is submitted.
        seeds = [derive_seed(base_seed, "lb", level, index) if index else derive_seed(base_seed, "lb", level)
                 for index in range(fits)]
        models = fit_bag(fixed, inputs, side, seeds, device, f"estimate {level}", notify)
        path = run_dir / f"lb_{level}_scores.npy"
        kept = files.open_scores(path, (len(sample), inputs.shape[1])) if len(sample) else None
        per_level[level] = recall_of(models, inputs, target, sample, kept)
        if kept is not None:
            files.finish_scores(path, kept)
        del models, kept
    entry = depth_estimate(per_level["level2"], per_level["level3"], options.bootstrap, config.seed)
    entry.update({"method": "depth extrapolation R2 * R2/R3", "epochs": epochs, "fits_per_level": fits,
                  "seconds": round(time.time() - started, 2)})
    return entry
