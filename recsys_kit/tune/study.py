"""Optuna search over the K-fold CV objective: one study, pruned, resumable, shared by workers.

The objective is the mean OOF Recall@10 of `run_cv` over ONE fold assignment (`folds.npy` in
the study directory) and the study seed's holdout, so every trial and every worker is scored on
the same users and hidden items; only model fitting gets a per-trial seed. The study directory
`runs_dir/<study>` is the one directory reused on purpose: resuming continues it.
Search spaces (TOML) live in `search_space.py`, opening the storage in `tune_storage.py`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
import warnings
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
from recsys_kit.protocol.holdout import assign_folds, folds_fingerprint
from recsys_kit.seeds import derive_seed
from recsys_kit.protocol.preflight import check_evaluable, check_folds
from recsys_kit.tune.search_space import SearchSpace, default_search_path, load_search_space
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


@dataclass(frozen=True)
class TuneResult:
    study_dir: Path
    best_config: Path | None
    best_value: float | None
    best_trial: int | None
    counts: dict  # state name -> number of trials
    top: tuple  # the best 5 complete trials: {"number", "value", "std", "params"}
    importances: dict | None
    plots: tuple
    plots_note: str | None


def default_study_name(config_path: Path | None, model_name: str) -> str:
    return f"tune-{Path(config_path).stem if config_path else model_name}"


def check_tune_options(trials: int, pruner_startup: int = 0, pruner_warmup: int = 0) -> None:
    if trials < 1:
        raise DataError(f"--trials {trials}: the study needs at least 1 trial")
    for option, value in (("--pruner-startup", pruner_startup), ("--pruner-warmup", pruner_warmup)):
        if value < 0:
            raise DataError(f"{option} {value}: must be >= 0")


def _publish(path: Path, write: Callable[[Path], None]) -> None:
    """Safe when several workers write the same study file at once (a temporary name per process)."""
    with files.replacing(path, unique=True) as tmp:
        write(tmp)


def _study_folds(study_dir: Path, dataset: Dataset, k: int, seed: int) -> np.ndarray:
    path = study_dir / "folds.npy"
    if not path.exists():  # the same (users, k, seed) gives the same folds as `kit cv --seed`
        folds = assign_folds(dataset.n_users, k, seed)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a handle: given a name, np.save appends .npy to it
                np.save(handle, folds)

        _publish(path, save)
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
        for path in (run_dir / name, run_dir / f"{name}.tmp"):
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

    check_tune_options(options.trials, options.pruner_startup, options.pruner_warmup)
    name = options.study or default_study_name(config_path, base.model_name)
    store.check_run_name(name, "--study")
    files.check_output_dir(runs_dir, "--runs-dir")
    check_folds(options.folds, dataset.n_users)
    check_evaluable(dataset, base, assign_folds(dataset.n_users, options.folds, base.seed))
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

    def objective(trial: optuna.Trial) -> float:
        for key, value in _worker_attrs().items():
            trial.set_user_attr(key, value)
        # Workers race between the budget check and ask: the first `trials` numbers win.
        ahead = [t for t in study.get_trials(deepcopy=False, states=IN_BUDGET) if t.number < trial.number]
        if len(ahead) >= options.trials:
            trial.set_user_attr("surplus", True)
            study.stop()
            raise _Surplus(f"the study already holds {options.trials} trials; this worker stops")
        study.sampler = _sampler(base.seed, trial.number)
        values = {param.key: param.suggest(trial) for param in space.params}
        config = space.apply(base, values, f"{space.path} trial {trial.number}")
        emit("trial_start", number=trial.number, params=values, retry_of=trial.user_attrs.get("retry_of"))
        run_dir: list[str] = []

        def on_cv_event(event):
            if event["kind"] == "start":
                run_dir.append(event["run_dir"])
                trial.set_user_attr("run_dir", event["run_dir"])
            elif event["kind"] in ("fold_start", "epoch", "fold_end"):
                emit(event["kind"], trial=trial.number, **{k: v for k, v in event.items() if k != "kind"})

        def on_fold_end(fold: int, running_mean: float) -> None:
            trial.report(running_mean, step=fold)
            # Never prune after the last fold: the trial is complete by then.
            if fold < options.folds - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"fold {fold + 1}: running mean Recall@10 {running_mean:.4f}")

        fit_seed = derive_seed(base.seed, "trial", trial.number)
        trial.set_user_attr("fit_seed", fit_seed)
        try:
            path = run_cv(dataset, config, options.folds, study_dir / "trials", name=f"trial-{trial.number:04d}",
                          device=options.device, fold_of_user=folds, on_event=on_cv_event,
                          on_fold_end=on_fold_end, fit_seed=fit_seed,
                          refit=RefitOptions(mode="none", lb_estimate=False))  # a trial needs OOF alone
        finally:
            if not options.keep_scores:
                _drop_scores(run_dir[0] if run_dir else None, study_dir)
        metrics = store.read_json(path / "metrics.json")
        trial.set_user_attr("recall_std", metrics["recall@10"]["std"])
        trial.set_user_attr("ndcg", metrics["ndcg@10"]["mean"])
        return float(metrics["recall@10"]["mean"])

    def interruptible(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except KeyboardInterrupt:
            # Ctrl-C: optuna marks this trial FAIL; queue its parameters so a resume re-runs them.
            if not trial.user_attrs.get("surplus"):
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        _requeue_dead(study, options.grace_period, emit, study_dir)
        if not trial.user_attrs.get("surplus"):
            emit("trial_end", number=trial.number, state=trial.state.name, value=trial.value,
                 best=_best_value(study), done=_count(study, FINISHED), total=options.trials)
        if _count(study, IN_BUDGET) >= options.trials:  # others' running trials fill the budget too
            study.stop()

    if _count(study, IN_BUDGET) < options.trials:
        study.optimize(interruptible, catch=(_Surplus,), callbacks=[
            optuna.study.MaxTrialsCallback(options.trials, states=FINISHED), after_trial])
    return summarize(study, space, base, study_dir, options)


def summarize(study: optuna.Study, space: SearchSpace, base: RunConfig, study_dir: Path,
              options: TuneOptions) -> TuneResult:
    """trials.csv, best.toml, importances and plots from whatever the study holds now."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    table = study.trials_dataframe()
    _publish(study_dir / "trials.csv", lambda tmp: table.to_csv(tmp, index=False))
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    top = tuple({"number": t.number, "value": t.value, "params": dict(t.params),
                 "std": t.user_attrs.get("recall_std")} for t in complete[:5])
    if not complete:
        return TuneResult(study_dir, None, None, None, counts, top, None, (), None)
    best = complete[0]
    config = space.apply(base, best.params, f"study {study.study_name} trial {best.number}")
    fit_seed = best.user_attrs.get("fit_seed")
    if fit_seed is not None:  # the trial's own fitting seed: `kit cv` on best.toml reproduces its figure
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, fit_seed=int(fit_seed)))
    header = (f"# Best of study {study.study_name!r}: trial {best.number}, OOF Recall@10 {best.value:.4f} "
              f"over {options.folds} folds ({counts['COMPLETE']} complete, {counts['PRUNED']} pruned).\n"
              f"# Same holdout and folds: kit cv --config THIS_FILE --folds {options.folds} --data DIR\n"
              "# The best of many trials is partly seed luck: --set train.fit_seed=-1 (or another seed)\n"
              "# refits with a fresh seed and shows what the parameters are worth on their own.\n")
    best_path = study_dir / "best.toml"
    _publish(best_path, lambda tmp: tmp.write_text(header + config.to_toml()))
    importances = None
    if len(complete) >= 2 and space.params:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importances = dict(optuna.importance.get_param_importances(study))
        except (RuntimeError, ValueError, ZeroDivisionError):
            importances = None  # too few or too uniform trials to tell
    plots, note = _plots(study, study_dir, importances is not None)
    return TuneResult(study_dir, best_path, best.value, best.number, counts, top, importances, plots, note)


def _plots(study: optuna.Study, study_dir: Path, with_importances: bool) -> tuple[tuple, str | None]:
    try:
        import matplotlib
    except ImportError:
        return (), ("plots skipped: matplotlib is not installed (a dependency of recsys-kit: "
                    "reinstall it with pip install -e .)")
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    wanted = [("history.png", optuna_plots.plot_optimization_history)]
    if with_importances:
        wanted.append(("importances.png", optuna_plots.plot_param_importances))
    written = []
    for filename, plot in wanted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
            axes = plot(study)
        figure = axes.figure
        figure.tight_layout()
        _publish(study_dir / filename, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
        plt.close(figure)
        written.append(study_dir / filename)
    return tuple(written), None
