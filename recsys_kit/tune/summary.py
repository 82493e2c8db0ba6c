"""A study's summary from whatever it holds now: trials.csv, best.toml, importances and plots."""
from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import optuna
from optuna.trial import TrialState

from recsys_kit import files
from recsys_kit.config import RunConfig
from recsys_kit.tune.search_space import SearchSpace

if TYPE_CHECKING:
    from recsys_kit.tune.study import TuneOptions


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


def publish_shared(path: Path, write: Callable[[Path], None]) -> None:
    """Safe when several workers write the same study file at once (a temporary name per process)."""
    with files.replacing(path, unique=True) as tmp:
        write(tmp)


def summarize(study: optuna.Study, space: SearchSpace, base: RunConfig, study_dir: Path,
              options: TuneOptions) -> TuneResult:
    """trials.csv, best.toml, importances and plots from whatever the study holds now."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    table = study.trials_dataframe()
    publish_shared(study_dir / "trials.csv", lambda tmp: table.to_csv(tmp, index=False))
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
    publish_shared(best_path, lambda tmp: tmp.write_text(header + config.to_toml()))
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
        publish_shared(study_dir / filename, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
        plt.close(figure)
        written.append(study_dir / filename)
    return tuple(written), None
