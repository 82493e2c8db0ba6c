"""User K-fold cross-validation: OOF and test score matrices plus metrics, in a run directory.

Fold f's model trains on the INPUT rows of the other folds' users (minus a validation slice
for early stopping) and scores fold f's users from their input rows, so every OOF row comes
from the one model that never saw that user, and no hidden item is ever trained on.
"""
from __future__ import annotations

import dataclasses
import time
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
from recsys_kit.protocol.holdout import assign_folds, contest_holdout, folds_fingerprint
from recsys_kit.seeds import derive_seed
from recsys_kit.protocol.metrics import build_metrics, ndcg_per_user, recall_per_user, summarize
from recsys_kit.models import build_model
from recsys_kit.runs.resume import open_fold_scores, open_run, run_key
from recsys_kit.cv.refit import RefitOptions, refit_epochs, refit_full, resolved, run_lb_estimate, score_rows
from recsys_kit.errors import DataError
from recsys_kit.protocol.ranking import broken_rows, top_k
from recsys_kit.data.interactions import ItemSide
from recsys_kit.protocol.split import fold_splits, holdout_inputs, public_rows

EventCallback = Callable[[dict], None]


def _notify(on_event: EventCallback | None, kind: str, **payload) -> None:
    if on_event is not None:
        on_event({"kind": kind, **payload})


TARGET_KINDS = {"last": True, "random": False}  # the time tail the contest hides, and its random picks


def _fold_metrics(scores: np.ndarray, target: sp.csr_matrix, target_by_kind: dict) -> tuple:
    """Per-user Recall@10 and NDCG@10, and Recall@10 against each kind of target alone."""
    best = top_k(scores, 10)
    by_kind = {kind: recall_per_user(best, part, 10) for kind, part in target_by_kind.items()}
    return recall_per_user(best, target, 10), ndcg_per_user(best, target, 10), by_kind


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
    holdout = contest_holdout(dataset.matrix, dataset.times, config.holdout, config.seed)
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
    handle = open_run(runs_dir, name, store.default_run_name(config.model_name), key)
    try:
        return _run_folds_and_refit(dataset, config, holdout, fold_of_user, handle, data_info, device,
                                    base_seed, refit, started, on_event, on_fold_end)
    finally:
        handle.release()


def _run_folds_and_refit(dataset, config, holdout, fold_of_user, handle, data_info, device, base_seed,
                         refit, started, on_event, on_fold_end) -> Path:
    run_dir, progress = handle.run_dir, handle.progress
    folds = int(fold_of_user.max()) + 1
    has_target = holdout.has_target
    activity = np.diff(holdout.input.indptr)
    files.write_text(run_dir / "config.json", config.to_json() + "\n")
    files.write_json(run_dir / "environment.json", {**store.environment(), "device": device})
    files.save_npy(run_dir / "folds.npy", fold_of_user)
    files.save_npy(run_dir / "user_ids.npy", dataset.user_ids)
    files.save_npy(run_dir / "item_ids.npy", dataset.item_ids)
    files.save_sparse(run_dir / "holdout_input.npz", holdout.input)
    files.save_sparse(run_dir / "holdout_target.npz", holdout.target)
    files.write_json(run_dir / "data.json", data_info)
    shape = dataset.matrix.shape
    # The fold models' mean on every user's full row: the submission under --refit folds.
    fold_mean_file = {"folds": "test_scores.npy", "both": "test_scores_folds.npy"}.get(refit.mode)
    oof_scores, fold_mean = open_fold_scores(run_dir, progress, shape, fold_mean_file)
    resumed_folds = [record["fold"] for record in progress.folds_done]  # trained before a kill
    curves = Curves.resume(run_dir, config.model_name, resumed_folds)  # curves.json: per-epoch records
    _notify(on_event, "start", run_dir=str(run_dir), folds=folds, users=dataset.n_users,
            items=dataset.n_items, users_without_target=int((~has_target).sum()), resumed_folds=resumed_folds)
    recall = np.full(dataset.n_users, np.nan)
    ndcg = np.full(dataset.n_users, np.nan)
    recall_by_kind = {kind: np.full(dataset.n_users, np.nan) for kind in TARGET_KINDS}
    target_by_kind = {kind: holdout.target_part(last) for kind, last in TARGET_KINDS.items()}

    def evaluate(split):
        """The fold users' metrics from their OOF rows, into the per-user arrays."""
        fold_recall, fold_ndcg, fold_by_kind = _fold_metrics(
            np.asarray(oof_scores[split.users]), split.target,
            {kind: part[split.users] for kind, part in target_by_kind.items()})
        recall[split.users], ndcg[split.users] = fold_recall, fold_ndcg
        for kind, values in fold_by_kind.items():
            recall_by_kind[kind][split.users] = values
        return fold_recall, fold_ndcg

    fold_records = []
    side = ItemSide.of(dataset)
    public = public_rows(dataset, holdout)
    for split in fold_splits(holdout, fold_of_user, config):
        fold, fold_users, fold_started = split.fold, split.users, time.time()
        if progress.done(fold):  # finished before a kill: its rows are in the score matrix already
            evaluate(split)
            fold_records.append(next(r for r in progress.folds_done if r["fold"] == fold))
            continue
        _notify(on_event, "fold_start", fold=fold, fit_users=split.train.n_users, fold_users=len(fold_users),
                valid_users=0 if split.valid is None else split.valid[0].n_users, epochs=config.train.epochs)
        model = build_model(config, seed=derive_seed(base_seed, "fit", fold), device=device)

        def on_epoch(record, fold=fold, fold_started=fold_started):
            curves.add(fold, record, time.time() - fold_started)
            _notify(on_event, "epoch", fold=fold, **record)

        model.fit(split.train, side, valid=split.valid, on_epoch=on_epoch)
        score_rows([model], split.inputs, oof_scores, out_rows=fold_users)
        broken = broken_rows(oof_scores[fold_users])
        if len(broken):  # a diverged fit must not print a Recall as if it had trained
            raise DataError(f"fold {fold + 1}: the model's scores are NaN or +inf for {len(broken):,} of "
                            f"{len(fold_users):,} users (training diverged); lower train.lr or check the config")
        fold_recall, fold_ndcg = evaluate(split)
        oof_scores.flush()
        if fold_mean is not None:
            progress.fold_mean_clean = False
            progress.save(run_dir)
            score_rows([model], public, fold_mean, scale=1.0 / folds, accumulate=True)
            fold_mean.flush()
            progress.fold_mean_clean = True
        record = {"fold": fold, "recall@10": summarize(fold_recall), "ndcg@10": summarize(fold_ndcg),
                  "users_evaluated": int((~np.isnan(fold_recall)).sum()),
                  "seconds": round(time.time() - fold_started, 2), "model": dict(model.summary)}
        fold_records.append(record)
        curves.save(fold)  # before progress: a fold a rerun skips has its curve
        progress.folds_done.append(record)
        progress.save(run_dir)  # the fold is durable from here: a rerun skips it
        _notify(on_event, "fold_end", **record)
        if on_fold_end is not None:
            on_fold_end(fold, float(np.mean([r["recall@10"] for r in fold_records])))

    if refit.mode != "none":  # a submission will come of it: fit the time-consistency filter's margin
        times = time_filter.save_times(run_dir / time_filter.FILE, holdout_inputs(holdout), public)
        time_report = time_filter.margin_report(oof_scores, holdout.target, times)
    files.finish_scores(run_dir / "oof_scores.npy", oof_scores)
    if fold_mean is not None:
        files.finish_scores(run_dir / fold_mean_file, fold_mean)
    metrics = build_metrics(recall, ndcg, activity, fold_of_user, has_target)
    metrics["by_target"] = by_target_kind(recall_by_kind)
    if refit.mode != "none":
        metrics["time_filter"] = time_report
    epochs, epochs_from = refit_epochs(fold_records, config)

    def notify(kind, **payload):
        _notify(on_event, kind, **payload)

    if refit.lb_estimate:
        estimate = run_lb_estimate(side, holdout, config, epochs, device, base_seed, refit, run_dir, notify)
        metrics["lb_estimate"] = estimate
        metrics["recall@10"]["lb_estimate"] = estimate["recall@10"]
    metrics["refit"] = {"mode": refit.mode, "epochs": epochs, "epochs_from": epochs_from}
    if refit.mode in ("full", "both"):
        metrics["refit"].update(refit_full(public, side, config, epochs, device, base_seed, refit.seeds,
                                           run_dir, notify))
    metrics.update({"model": config.model_name, "folds_detail": fold_records,
                    "resumed_folds": resumed_folds,
                    "wall_seconds": round(time.time() - started, 2)})
    files.write_json(run_dir / "metrics.json", metrics)
    _notify(on_event, "end", run_dir=str(run_dir), metrics=metrics)
    return run_dir

