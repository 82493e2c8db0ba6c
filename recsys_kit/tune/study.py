"""Optuna search over the K-fold CV objective: one study, pruned, resumable, shared by workers.

The objective is the mean OOF Recall@10 of `run_cv` over ONE fold assignment (`folds.npy` in
the study directory) and the study seed's holdout, so every trial and every worker is scored on
the same users and hidden items; only model fitting gets a per-trial seed. The study directory
`runs_dir/<study>` is the one directory reused on purpose: resuming continues it.
Search spaces (TOML) live in `search_space.py`, opening the storage in `storage.py`, the study's
summary (trials.csv, best.toml, importances, plots) in `summary.py`.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from recsys_kit.runs import store
from recsys_kit.config import RunConfig, from_dict
from recsys_kit.cv.run import run_cv
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.data.dataset import Dataset
from recsys_kit import files
from recsys_kit.errors import DataError
from recsys_kit.files import check_run_name
from recsys_kit.protocol.holdout import assign_folds, folds_fingerprint
from recsys_kit.seeds import derive_seed
from recsys_kit.tune.search_space import SearchSpace, default_search_path, load_search_space
from recsys_kit.tune.summary import TuneResult, publish_shared, summarize
from recsys_kit.tune.storage import _first_line, open_storage, open_study

__all__ = ["TuneOptions", "TuneResult", "run_tune", "summarize", "default_study_name", "SearchSpace",
           "default_search_path", "load_search_space"]

EventCallback = Callable[[dict], None]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
IN_BUDGET = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
SCORE_FILES = ("oof_scores.npy", "test_scores.npy")


@dataclass(frozen=True)
class TuneOptions:
    trials: int  # the study's total across all workers (COMPLETE + PRUNED)
    folds: int = 5
    study: str | None = None  # default: tune-<config stem>
    storage: str | None = None  # None: journal file in the study dir; "x://" SQLAlchemy URL; else a journal path
    device: str = "cpu"
    pruner_startup: int = 5  # MedianPruner n_startup_trials
    pruner_warmup: int = 0  # MedianPruner n_warmup_steps (folds)
    keep_scores: bool = False  # score matrices are GBs on contest data: rerun `kit cv` on best.toml instead
    heartbeat_interval: int = 60  # RDB storages: dead workers on other hosts are failed after grace_period
    grace_period: int = 180


def default_study_name(config_path: Path | None, model_name: str) -> str:
    return f"tune-{Path(config_path).stem if config_path else model_name}"


def check_tune_options(trials: int, pruner_startup: int = 0, pruner_warmup: int = 0) -> None:
    if trials < 1:
        raise DataError(f"--trials {trials}: the study needs at least 1 trial")
    for option, value in (("--pruner-startup", pruner_startup), ("--pruner-warmup", pruner_warmup)):
        if value < 0:
            raise DataError(f"{option} {value}: must be >= 0")


def _study_folds(study_dir: Path, dataset: Dataset, k: int, seed: int) -> np.ndarray:
    path = study_dir / "folds.npy"
    if not path.exists():  # the same (users, k, seed) gives the same folds as `kit cv --seed`
        folds = assign_folds(dataset.n_users, k, seed)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a handle: given a name, np.save appends .npy to it
                np.save(handle, folds)

        publish_shared(path, save)
    try:
        folds = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a fold assignment ({_first_line(err)}); the study directory is damaged, "
                        f"pass another --study") from None
    if folds.ndim != 1 or folds.dtype.kind not in "iu" or len(folds) == 0:
        raise DataError(f"{path}: not a fold assignment ({folds.dtype} {folds.shape}); the study directory is "
                        f"damaged, pass another --study")
    if len(folds) != dataset.n_users or int(folds.max()) + 1 != k:
        raise DataError(f"{path}: {int(folds.max()) + 1} folds over {len(folds)} users, but this run asks "
                        f"for {k} folds over {dataset.n_users} users; use the study's --folds and --data "
                        f"or pass another --study")
    return folds


def _check_study(study: optuna.Study, identity: dict, search: dict, emit) -> None:
    """Every worker and every resume must score trials the same way, or values don't compare."""
    stored = study.user_attrs.get("recsys_kit")
    if stored is None:
        study.set_user_attr("recsys_kit", identity)
        study.set_user_attr("search_space", search)
        return
    ours = json.loads(json.dumps(identity))
    stored = dict(stored)
    try:  # a study started by an older kit lacks config keys added since; their defaults apply
        stored["config"] = json.loads(json.dumps(from_dict(stored["config"], "the study's config").to_dict()))
    except (DataError, KeyError, TypeError, AttributeError):
        pass  # not readable as a config now: compared as stored, so it differs
    differ = sorted(k for k in ours if stored.get(k) != ours[k])
    if differ:
        raise DataError(f"study {study.study_name!r} was started with a different {', '.join(differ)}; "
                        f"rerun with the study's --data/--config/--folds/--seed or pass another --study")
    stored_search = study.user_attrs.get("search_space")
    if stored_search is None:  # a worker started at the same moment set the identity but not yet this
        study.set_user_attr("search_space", search)
    elif stored_search != json.loads(json.dumps(search)):
        emit("note", message="the search space differs from the one this study started with; "
                             "new trials use the new one")


# ----------------------------------------------------------------------------- dead workers

def _process_token(pid: int) -> str | None:
    """The process start time (survives pid reuse) on Linux; 'alive' elsewhere; None when gone."""
    if Path("/proc/self/stat").exists():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return None if fields[0] in ("Z", "X") else fields[19]  # a zombie is dead, just not reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "alive"


def _worker_attrs() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_token": _process_token(pid)}


def _is_dead(trial: FrozenTrial, grace_period: int) -> bool:
    attrs = trial.user_attrs
    # Tagged one attribute at a time: another worker may read between host and pid, and a worker
    # killed between ask and tagging leaves none. A moment either way: give it the grace period.
    if not {"host", "pid", "pid_token"} <= attrs.keys():
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        return time.time() - started > grace_period
    if attrs["host"] != socket.gethostname():
        return False  # other hosts: only the RDB heartbeat can tell
    token = _process_token(attrs["pid"])
    return token is None or (token != "alive" and token != attrs.get("pid_token"))


def _requeue(study: optuna.Study, trial: FrozenTrial, already_failed: bool, emit, study_dir: Path) -> None:
    """Fail a dead worker's trial (once, whoever gets there first) and re-run its parameters."""
    if not already_failed:
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError, RuntimeError):
            return  # another worker got there first and re-queued it
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    _drop_scores(trial.user_attrs.get("run_dir"), study_dir)
    emit("requeued", number=trial.number, params=trial.params)


def _requeue_dead(study: optuna.Study, grace_period: int, emit, study_dir: Path) -> None:
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _is_dead(trial, grace_period):
            _requeue(study, trial, False, emit, study_dir)


def _drop_scores(run_dir: str | None, study_dir: Path) -> None:
    """Delete a trial's score matrices, only ever inside this study's own trials/ directory: the
    run_dir comes from the shared storage, where another host or a stale record may have put any path."""
    if not run_dir:
        return
    trials_dir = (Path(study_dir) / "trials").resolve()
    run_dir = Path(run_dir).resolve()
    if run_dir.parent != trials_dir or not run_dir.is_dir():
        return
    for name in SCORE_FILES:
        for path in (run_dir / name, files.temporary(run_dir / name)):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)


class _Surplus(Exception):
    """This worker's trial would exceed the study's --trials: it stops without running it."""


def _sampler(seed: int, number: int) -> optuna.samplers.TPESampler:
    # Reseeded per trial from (study seed, trial number): numbers are unique across workers, so no
    # two workers replay one random stream, and a one-worker study is reproducible.
    return optuna.samplers.TPESampler(seed=derive_seed(seed, "sampler", number))


def _count(study: optuna.Study, states) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _best_value(study: optuna.Study) -> float | None:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(values) if values else None


# ----------------------------------------------------------------------------- the search

def run_tune(dataset: Dataset, base: RunConfig, space: SearchSpace, options: TuneOptions, runs_dir: Path,
             config_path: Path | None = None, on_event: EventCallback | None = None) -> TuneResult:
    """Run (or resume, or join) the study until it holds `options.trials` finished trials."""
    def emit(kind: str, **payload) -> None:
        if on_event is not None:
            on_event({"kind": kind, **payload})

    # The options and the data were checked before (protocol.preflight, through api.tune); the
    # default name comes from the config file's name, so it is checked here.
    name = options.study or default_study_name(config_path, base.model_name)
    check_run_name(name, "--study")
    study_dir = Path(runs_dir) / name

    def on_stale(study, trial):  # RDB heartbeat: optuna has already marked the trial FAIL
        _requeue(study, trial, True, emit, study_dir)

    # A database storage opens before the study directory exists: a bad URL leaves nothing behind.
    storage, where = open_storage(options.storage, study_dir, options.heartbeat_interval, options.grace_period,
                                  on_stale)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=options.pruner_startup,
                                         n_warmup_steps=options.pruner_warmup)
    study = open_study(storage, where, name, pruner, _sampler(base.seed, 0))
    study_dir.mkdir(parents=True, exist_ok=True)  # the one directory reused on purpose: resuming
    folds = _study_folds(study_dir, dataset, options.folds, base.seed)
    identity = {"model": base.model_name, "seed": base.seed, "folds": options.folds,
                "data": dataset.fingerprint(), "folds_fingerprint": folds_fingerprint(folds),
                "config": base.to_dict()}
    _check_study(study, identity, space.describe(), emit)
    _requeue_dead(study, options.grace_period, emit, study_dir)
    emit("study", name=name, study_dir=str(study_dir), storage=where, done=_count(study, FINISHED),
         total=options.trials, resumed=len(study.trials) > 0, best=_best_value(study))

    search = _Search(dataset, base, space, options, study, study_dir, folds, emit)
    if _count(study, IN_BUDGET) < options.trials:
        study.optimize(search.interruptible, catch=(_Surplus,), callbacks=[
            optuna.study.MaxTrialsCallback(options.trials, states=FINISHED), search.after_trial])
    return summarize(study, space, base, study_dir, options)


@dataclass
class _Search:
    """One worker's part of the study: each trial is a `run_cv` of a sampled config on the study's folds."""

    dataset: Dataset
    base: RunConfig
    space: SearchSpace
    options: TuneOptions
    study: optuna.Study
    study_dir: Path
    folds: np.ndarray
    emit: Callable

    def objective(self, trial: optuna.Trial) -> float:
        for key, value in _worker_attrs().items():
            trial.set_user_attr(key, value)
        # Workers race between the budget check and ask: the first `trials` numbers win.
        ahead = [t for t in self.study.get_trials(deepcopy=False, states=IN_BUDGET) if t.number < trial.number]
        if len(ahead) >= self.options.trials:
            trial.set_user_attr("surplus", True)
            self.study.stop()
            raise _Surplus(f"the study already holds {self.options.trials} trials; this worker stops")
        self.study.sampler = _sampler(self.base.seed, trial.number)
        values = {param.key: param.suggest(trial) for param in self.space.params}
        config = self.space.apply(self.base, values, f"{self.space.path} trial {trial.number}")
        self.emit("trial_start", number=trial.number, params=values, retry_of=trial.user_attrs.get("retry_of"))
        metrics = self.cross_validate(trial, config)
        trial.set_user_attr("recall_std", metrics["recall@10"]["std"])
        trial.set_user_attr("ndcg", metrics["ndcg@10"]["mean"])
        return float(metrics["recall@10"]["mean"])

    def cross_validate(self, trial: optuna.Trial, config: RunConfig) -> dict:
        """The trial's `run_cv` (OOF only, pruned on the running mean); its metrics.json."""
        run_dir: list[str] = []

        def on_cv_event(event):
            if event["kind"] == "start":
                run_dir.append(event["run_dir"])
                trial.set_user_attr("run_dir", event["run_dir"])
            elif event["kind"] in ("fold_start", "epoch", "fold_end"):
                self.emit(event["kind"], trial=trial.number, **{k: v for k, v in event.items() if k != "kind"})

        def on_fold_end(fold: int, running_mean: float) -> None:
            trial.report(running_mean, step=fold)
            # Never prune after the last fold: the trial is complete by then.
            if fold < self.options.folds - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"fold {fold + 1}: running mean Recall@10 {running_mean:.4f}")

        fit_seed = derive_seed(self.base.seed, "trial", trial.number)
        trial.set_user_attr("fit_seed", fit_seed)
        try:
            path = run_cv(self.dataset, config, self.options.folds, self.study_dir / "trials",
                          name=f"trial-{trial.number:04d}", device=self.options.device, fold_of_user=self.folds,
                          on_event=on_cv_event, on_fold_end=on_fold_end, fit_seed=fit_seed,
                          refit=RefitOptions(mode="none", lb_estimate=False))  # a trial needs OOF alone
        finally:
            if not self.options.keep_scores:
                _drop_scores(run_dir[0] if run_dir else None, self.study_dir)
        return store.read_json(path / "metrics.json")

    def interruptible(self, trial: optuna.Trial) -> float:
        try:
            return self.objective(trial)
        except KeyboardInterrupt:
            # Ctrl-C: optuna marks this trial FAIL; queue its parameters so a resume re-runs them.
            if not trial.user_attrs.get("surplus"):
                self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        _requeue_dead(study, self.options.grace_period, self.emit, self.study_dir)
        if not trial.user_attrs.get("surplus"):
            self.emit("trial_end", number=trial.number, state=trial.state.name, value=trial.value,
                      best=_best_value(study), done=_count(study, FINISHED), total=self.options.trials)
        if _count(study, IN_BUDGET) >= self.options.trials:  # others' running trials fill the budget too
            study.stop()
