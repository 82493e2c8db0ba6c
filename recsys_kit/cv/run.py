"""User K-fold cross-validation: OOF and test score matrices plus metrics, in a run directory.

Fold f's model trains on the INPUT rows of the other folds' users (minus a validation slice
for early stopping) and scores fold f's users from their input rows, so every OOF row comes
from the one model that never saw that user, and no hidden item is ever trained on.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

from recsys_kit import files
from recsys_kit.runs import store
from recsys_kit.protocol import time_filter
from recsys_kit.config import RunConfig
from recsys_kit.runs.curves import Curves
from recsys_kit.data.dataset import Dataset
from recsys_kit.protocol.holdout import Holdout, assign_folds, contest_holdout, folds_fingerprint, input_shortfall
from recsys_kit.seeds import derive_seed
from recsys_kit.protocol.metrics import K, build_metrics, ndcg_per_user, recall_per_user, summarize
from recsys_kit.models import build_model
from recsys_kit.models.precision import run_precision
from recsys_kit.runs.resume import Progress, RunHandle, claim_run, open_fold_scores, run_key
from recsys_kit.cv.refit import RefitOptions, refit_epochs, refit_full, resolved, run_lb_estimate, score_rows
from recsys_kit.errors import DataError
from recsys_kit.protocol.ranking import broken_rows, top_k
from recsys_kit.data.interactions import Interactions, ItemSide
from recsys_kit.protocol.split import fold_splits, holdout_inputs, public_rows

EventCallback = Callable[[dict], None]


def _notify(on_event: EventCallback | None, kind: str, **payload) -> None:
    if on_event is not None:
        on_event({"kind": kind, **payload})


TARGET_KINDS = {"last": True, "random": False}  # the time tail the contest hides, and its random picks


def _fold_metrics(scores: np.ndarray, target: sp.csr_matrix, target_by_kind: dict) -> tuple:
    """Per-user Recall@10 and NDCG@10, and Recall@10 against each kind of target alone."""
    best = top_k(scores, K)
    by_kind = {kind: recall_per_user(best, part, K) for kind, part in target_by_kind.items()}
    return recall_per_user(best, target, K), ndcg_per_user(best, target, K), by_kind


def by_target_kind(recall_by_kind: dict[str, np.ndarray]) -> dict:
    """metrics.json "by_target": where a model's hits come from (sequential members should win "last")."""
    out = {}
    for kind, per_user in recall_by_kind.items():
        users = int((~np.isnan(per_user)).sum())
        out[kind] = {"recall@10": summarize(per_user) if users else None, "users": users}
    out["note"] = ("Recall@10 against one kind of hidden item alone: last = the time tail (n_last), "
                   "random = the random earlier picks (n_random); hits / min(10, items of that kind)")
    return out


def run_cv(dataset: Dataset, config: RunConfig, folds: int, runs_dir: Path, name: str | None = None,
           device: str = "cpu", fold_of_user: np.ndarray | None = None,
           on_event: EventCallback | None = None,
           on_fold_end: Callable[[int, float], None] | None = None, fit_seed: int | None = None,
           refit: RefitOptions = RefitOptions()) -> Path:
    """Run K-fold CV; returns the run directory. `on_fold_end(fold, running_mean)` may raise to stop.

    After the folds, `refit` decides the test scores (one model on every public row by default)
    and whether the leaderboard estimate's two extra fits run (see recsys_kit.refit).

    `fit_seed` (tuning trials; else `config.train.fit_seed` when >= 0) replaces `config.seed` for
    model fitting only, so the holdout, folds and validation users stay those of `config.seed`.
    """
    started = time.time()
    refit = resolved(refit, config.model_name)
    holdout = contest_holdout(dataset.matrix, dataset.times, config.holdout, config.seed, dataset.source)
    if fold_of_user is None:
        fold_of_user = assign_folds(dataset.n_users, folds, config.seed)
    if len(fold_of_user) != dataset.n_users:
        raise ValueError(f"fold assignment has {len(fold_of_user)} users, data has {dataset.n_users}")
    folds = int(fold_of_user.max()) + 1
    base_seed = fit_seed if fit_seed is not None else (
        config.train.fit_seed if config.train.fit_seed >= 0 else config.seed)
    data_info = {"fingerprint": dataset.fingerprint(), "holdout_fingerprint": holdout.fingerprint(),
                 "folds_fingerprint": folds_fingerprint(fold_of_user), "summary": dataset.summary,
                 "users": dataset.n_users, "items": dataset.n_items,
                 "users_without_target": int((~holdout.has_target).sum())}
    key = run_key(data_info["fingerprint"], data_info["holdout_fingerprint"], data_info["folds_fingerprint"],
                  config.to_json(), dataclasses.asdict(refit), base_seed)
    handle = claim_run(runs_dir, name, store.default_run_name(config.model_name), key)
    context = CvContext(dataset, config, holdout, fold_of_user, folds, handle, device, base_seed, refit, on_event)
    try:
        return _run_steps(context, data_info, started, on_fold_end)
    finally:
        handle.release()


@dataclass(frozen=True)
class CvContext:
    """What every step of one cv run reads: the data, its holdout and folds, the open run, where
    and with which seeds models fit, the refit options and the event callback."""
    dataset: Dataset
    config: RunConfig
    holdout: Holdout
    fold_of_user: np.ndarray
    folds: int  # fold_of_user's count of folds
    handle: RunHandle
    device: str
    base_seed: int  # model fitting's seed (fit_seed, train.fit_seed or config.seed)
    refit: RefitOptions  # resolved: seeds >= 1
    on_event: EventCallback | None

    @property
    def run_dir(self) -> Path:
        return self.handle.run_dir

    @property
    def progress(self) -> Progress:
        return self.handle.progress

    def notify(self, kind: str, **payload) -> None:
        _notify(self.on_event, kind, **payload)


@dataclass
class FoldState:
    """What the fold loop fills and the steps after it read: the OOF and fold-mean score matrices,
    the per-user metrics, the folds' records and curves, and the public rows every refit scores."""
    oof_scores: files.ScoreFile
    fold_mean: files.ScoreFile | None  # the fold models' mean on every user's full row (--refit folds/both)
    fold_mean_file: str | None
    resumed_folds: list[int]  # folds trained before a kill
    curves: Curves
    inputs: dict  # the holdout's rows against the public rows (protocol.holdout.input_shortfall)
    recall: np.ndarray
    ndcg: np.ndarray
    recall_by_kind: dict[str, np.ndarray]
    target_by_kind: dict[str, sp.csr_matrix]
    side: ItemSide
    public: Interactions
    records: list[dict] = field(default_factory=list)  # metrics.json "folds_detail"

    def evaluate(self, split) -> tuple[np.ndarray, np.ndarray]:
        """The fold users' metrics from their OOF rows, into the per-user arrays."""
        fold_recall, fold_ndcg, fold_by_kind = _fold_metrics(
            np.asarray(self.oof_scores[split.users]), split.target,
            {kind: part[split.users] for kind, part in self.target_by_kind.items()})
        self.recall[split.users], self.ndcg[split.users] = fold_recall, fold_ndcg
        for kind, values in fold_by_kind.items():
            self.recall_by_kind[kind][split.users] = values
        return fold_recall, fold_ndcg


def _run_steps(context: CvContext, data_info: dict, started: float,
               on_fold_end: Callable[[int, float], None] | None) -> Path:
    """The run's steps, in order: inputs written, folds, OOF metrics, estimate and refit, metrics.json."""
    write_run_inputs(context, data_info)
    state = start_folds(context)
    run_folds(context, state, on_fold_end)
    metrics = finish_metrics(context, state)
    epochs, epochs_from = refit_epochs(state.records, context.config)
    if context.refit.lb_estimate:
        add_lb_estimate(context, state, metrics, epochs)
    metrics["refit"] = refit_test_scores(context, state, epochs, epochs_from)
    metrics.update({"model": context.config.model_name, "folds_detail": state.records,
                    "resumed_folds": state.resumed_folds,
                    "wall_seconds": round(time.time() - started, 2)})
    if run_precision([record["model"] for record in state.records]):  # train.precision's pick (torch members)
        metrics["precision"] = run_precision([record["model"] for record in state.records])
    files.write_json(context.run_dir / "metrics.json", metrics)
    context.notify("end", run_dir=str(context.run_dir), metrics=metrics)
    return context.run_dir


def write_run_inputs(context: CvContext, data_info: dict) -> None:
    """The run's config, environment, folds, ids, holdout and data facts, into the run directory."""
    run_dir, dataset, holdout = context.run_dir, context.dataset, context.holdout
    files.write_text(run_dir / "config.json", context.config.to_json() + "\n")
    files.write_json(run_dir / "environment.json", {**store.environment(), "device": context.device})
    files.save_npy(run_dir / "folds.npy", context.fold_of_user)
    files.save_npy(run_dir / "user_ids.npy", dataset.user_ids)
    files.save_npy(run_dir / "item_ids.npy", dataset.item_ids)
    files.save_sparse(run_dir / "holdout_input.npz", holdout.input)
    files.save_sparse(run_dir / "holdout_target.npz", holdout.target)
    files.write_json(run_dir / "data.json", data_info)


def start_folds(context: CvContext) -> FoldState:
    """The score matrices (reopened with the folds done before a kill) and curves, the "start"
    event, then empty per-user metrics."""
    dataset, holdout, progress = context.dataset, context.holdout, context.progress
    # The fold models' mean on every user's full row: the submission under --refit folds.
    fold_mean_file = {"folds": "test_scores.npy", "both": "test_scores_folds.npy"}.get(context.refit.mode)
    oof_scores, fold_mean = open_fold_scores(context.run_dir, progress, dataset.matrix.shape, fold_mean_file)
    resumed_folds = [record["fold"] for record in progress.folds_done]  # trained before a kill
    curves = Curves.resume(context.run_dir, context.config.model_name, resumed_folds)  # per-epoch records
    inputs = input_shortfall(np.diff(dataset.matrix.indptr), holdout, context.config.holdout)
    context.notify("start", run_dir=str(context.run_dir), folds=context.folds, users=dataset.n_users,
                   items=dataset.n_items, users_without_target=int((~holdout.has_target).sum()),
                   resumed_folds=resumed_folds, inputs=inputs)
    return FoldState(
        oof_scores, fold_mean, fold_mean_file, resumed_folds, curves, inputs,
        recall=np.full(dataset.n_users, np.nan), ndcg=np.full(dataset.n_users, np.nan),
        recall_by_kind={kind: np.full(dataset.n_users, np.nan) for kind in TARGET_KINDS},
        target_by_kind={kind: holdout.target_part(last) for kind, last in TARGET_KINDS.items()},
        side=ItemSide.of(dataset), public=public_rows(dataset, holdout))


def run_folds(context: CvContext, state: FoldState, on_fold_end: Callable[[int, float], None] | None) -> None:
    """Every fold: skipped (its metrics re-read) when done before a kill, else fitted and recorded;
    progress.json marks each finished fold durable."""
    progress = context.progress
    for split in fold_splits(context.holdout, context.fold_of_user, context.config):
        fold = split.fold
        if progress.done(fold):  # finished before a kill: its rows are in the score matrix already
            state.evaluate(split)
            state.records.append(next(r for r in progress.folds_done if r["fold"] == fold))
            continue
        record = fit_fold(context, state, split)
        state.records.append(record)
        state.curves.save(fold)  # before progress: a fold a rerun skips has its curve
        progress.folds_done.append(record)
        progress.save(context.run_dir)  # the fold is durable from here: a rerun skips it
        context.notify("fold_end", **record)
        if on_fold_end is not None:
            on_fold_end(fold, float(np.mean([r["recall@10"] for r in state.records])))


def fit_fold(context: CvContext, state: FoldState, split) -> dict:
    """One fold's model: fitted, its OOF rows scored and evaluated, its share added to the fold
    mean; returns the fold's record."""
    fold, fold_users, fold_started = split.fold, split.users, time.time()
    context.notify("fold_start", fold=fold, fit_users=split.train.n_users, fold_users=len(fold_users),
                   valid_users=0 if split.valid is None else split.valid[0].n_users,
                   epochs=context.config.train.epochs)
    model = build_model(context.config, seed=derive_seed(context.base_seed, "fit", fold), device=context.device)

    def on_epoch(record):
        state.curves.add(fold, record, time.time() - fold_started)
        context.notify("epoch", fold=fold, **record)

    model.fit(split.train, state.side, valid=split.valid, on_epoch=on_epoch)
    score_rows([model], split.inputs, state.oof_scores, out_rows=fold_users)
    broken = broken_rows(state.oof_scores[fold_users])
    if len(broken):  # a diverged fit must not print a Recall as if it had trained
        raise DataError(f"fold {fold + 1}: the model's scores are NaN or +inf for {len(broken):,} of "
                        f"{len(fold_users):,} users (training diverged); lower train.lr or check the config")
    fold_recall, fold_ndcg = state.evaluate(split)
    state.oof_scores.flush()
    if state.fold_mean is not None:
        add_to_fold_mean(context, state, model)
    return {"fold": fold, "recall@10": summarize(fold_recall), "ndcg@10": summarize(fold_ndcg),
            "users_evaluated": int((~np.isnan(fold_recall)).sum()),
            "seconds": round(time.time() - fold_started, 2), "model": dict(model.summary)}


def add_to_fold_mean(context: CvContext, state: FoldState, model) -> None:
    """1/K of the fold model's scores on every public row, added to the fold mean; progress.json
    says the fold mean is unclean while the add runs (a kill then redoes every fold)."""
    progress = context.progress
    progress.fold_mean_clean = False
    progress.save(context.run_dir)
    score_rows([model], state.public, state.fold_mean, scale=1.0 / context.folds, accumulate=True)
    state.fold_mean.flush()
    progress.fold_mean_clean = True


def finish_metrics(context: CvContext, state: FoldState) -> dict:
    """The OOF metrics (and the time filter's margin when test scores will follow), with the OOF
    and fold-mean matrices published."""
    run_dir, holdout = context.run_dir, context.holdout
    if context.refit.mode != "none":  # a submission will come of it: fit the time-consistency filter's margin
        times = time_filter.save_times(run_dir / time_filter.FILE, holdout_inputs(holdout), state.public)
        time_report = time_filter.margin_report(state.oof_scores, holdout.target, times)
    files.finish_scores(run_dir / "oof_scores.npy", state.oof_scores)
    if state.fold_mean is not None:
        files.finish_scores(run_dir / state.fold_mean_file, state.fold_mean)
    activity = np.diff(holdout.input.indptr)
    metrics = build_metrics(state.recall, state.ndcg, activity, context.fold_of_user, holdout.has_target)
    metrics["by_target"] = by_target_kind(state.recall_by_kind)
    metrics["inputs"] = state.inputs
    if context.refit.mode != "none":
        metrics["time_filter"] = time_report
    return metrics


def add_lb_estimate(context: CvContext, state: FoldState, metrics: dict, epochs: int) -> None:
    """The leaderboard estimate's two deeper fits (recsys_kit.cv.refit), into metrics."""
    estimate = run_lb_estimate(state.side, context.holdout, context.config, epochs, context.device,
                               context.base_seed, context.refit, context.run_dir, context.notify)
    metrics["lb_estimate"] = estimate
    metrics["recall@10"]["lb_estimate"] = estimate["recall@10"]


def refit_test_scores(context: CvContext, state: FoldState, epochs: int, epochs_from: str) -> dict:
    """metrics.json "refit": test_scores.npy from fits on every public row under --refit full/both."""
    refit = context.refit
    entry = {"mode": refit.mode, "epochs": epochs, "epochs_from": epochs_from}
    if refit.mode in ("full", "both"):
        entry.update(refit_full(state.public, state.side, context.config, epochs, context.device,
                                context.base_seed, refit.seeds, context.run_dir, context.notify))
    return entry
