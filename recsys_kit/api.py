"""The notebook API: load data, cross-validate, blend, submit, each one call.

    import recsys_kit as rk
    data = rk.load_data("data/train")
    ease = rk.cross_validate(data, "ease", folds=5)             # a CVResult, not a path to re-read
    ease.recall, ease.metrics["ndcg@10"]["folds"], ease.oof_scores()

The functions are the CLI's commands without the terminal: they run the same checks, write the
same run directories (so `kit runs`, `kit report` and `kit submit` read them), print nothing, and
report progress only through `on_event` callbacks. Imports that bring torch or optuna happen
inside the functions, so `import recsys_kit` stays light.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:
    import numpy as np

    from recsys_kit.config import RunConfig
    from recsys_kit.data.dataset import Dataset
    from recsys_kit.files import ScoreFile
    from recsys_kit.runs.run_dir import RunDir, RunMetrics
    from recsys_kit.tune.study import TuneResult

EventCallback = Callable[[dict], None]


@dataclass(frozen=True)
class CVResult:
    """A finished run directory (`cross_validate`, `blend`, or `open_run` on any `kit cv` /
    `kit ensemble` directory): its metrics in memory, its score matrices read on demand."""

    run_dir: Path
    metrics: dict = field(repr=False, compare=False)  # metrics.json as written

    @property
    def run(self) -> RunDir:
        """The run directory as recsys_kit.runs.run_dir.RunDir reads it (kind, status, files)."""
        from recsys_kit.runs.run_dir import RunDir

        return RunDir(self.run_dir)

    @property
    def figures(self) -> RunMetrics:
        """metrics.json's headline figures, typed."""
        from recsys_kit.runs.run_dir import RunMetrics

        return RunMetrics.of(self.metrics)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def model(self) -> str | None:
        """The model's name ("ensemble" for a blend)."""
        return self.figures.model

    @property
    def recall(self) -> float | None:
        """Mean out-of-fold Recall@10 over the folds (None when no user had a hidden item)."""
        return self.figures.recall

    @property
    def recall_std(self) -> float | None:
        return self.figures.recall_std

    @property
    def ndcg(self) -> float | None:
        """Mean out-of-fold NDCG@10 over the folds."""
        return self.figures.ndcg

    @property
    def lb_estimate(self) -> float | None:
        """The leaderboard estimate of Recall@10 when the run made one (see DESIGN.md, Protocol 3)."""
        return self.figures.lb_estimate

    def oof_scores(self) -> ScoreFile:
        """users x items float32 out-of-fold scores (seen items are -inf), read on demand: index rows
        like an array (`scores[users]`, `scores[:100]`), or `np.asarray(scores)` for the whole matrix."""
        return self.run.scores("oof_scores.npy")

    def test_scores(self) -> ScoreFile:
        """users x items float32 scores the submission is ranked from, read on demand as oof_scores."""
        return self.run.scores("test_scores.npy")

    def ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(user_ids, item_ids): the original ids of the score matrices' rows and columns."""
        return self.run.ids()

    def curves(self) -> dict | None:
        """curves.json (per fold, per epoch: loss and validation Recall@10), or None when the run has none."""
        from recsys_kit.runs.curves import load_curves

        return load_curves(self.run_dir)

    def __repr__(self) -> str:
        figure = "n/a" if self.recall is None else f"{self.recall:.4f}"
        return f"CVResult({self.name!r}, model={self.model!r}, recall@10={figure}, run_dir={str(self.run_dir)!r})"


def open_run(run_dir: str | Path) -> CVResult:
    """A finished `kit cv` or `kit ensemble` run directory as a CVResult (DataError otherwise, saying why)."""
    from recsys_kit.errors import DataError
    from recsys_kit.runs.run_dir import RunDir

    run = RunDir(run_dir)
    fix = "pass a finished `kit cv` or `kit ensemble` run directory"
    if run.kind == "tune":
        raise DataError(f"{run.path}: a `kit tune` study, no metrics.json; {fix} (its best config: best.toml)")
    run.require_finished(fix)
    return CVResult(run.path, run.metrics)


def load_data(data_dir: str | Path) -> Dataset:
    """The contest-layout folder (`train_ratings.csv` plus side files) as a Dataset: a users x items
    CSR matrix, the original ids, times and item features. DataError names the bad file and line."""
    from recsys_kit.data.load import load_dataset

    return load_dataset(Path(data_dir))


def _sets(overrides: Mapping[str, Any] | Iterable[str] | None) -> list[str]:
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(list(value)) if isinstance(value, (list, tuple)) else value}"
                for key, value in overrides.items()]
    return list(overrides or [])


def _prefetch(data, model, overrides, seed: int | None) -> int | None:
    """A forked child parsing a contest folder and drawing its holdout into the data cache while
    this process imports torch (recsys_kit.protocol.prefetch); None when it would not help."""
    if not isinstance(data, (str, Path)) or not Path(data).is_dir():
        return None
    from recsys_kit.config import RunConfig, holdout_and_seed
    from recsys_kit.protocol import prefetch

    try:  # the holdout rule without the model registry; anything unusual: no prefetch
        if isinstance(model, RunConfig):
            return None
        path = None if model is None else Path(model)
        if path is not None and not (isinstance(model, Path) or path.suffix == ".toml" or path.exists()):
            path = None  # a model name
        holdout, base_seed = holdout_and_seed(path, _sets(overrides), seed)
    except Exception:  # noqa: BLE001  (the full check, next, names what is wrong)
        return None
    return prefetch.start(data, holdout, base_seed)


def load_run_config(model: str | Path | RunConfig | None, overrides: Mapping[str, Any] | Iterable[str] | None = None,
                    seed: int | None = None) -> RunConfig:
    """A model name ("ease"), a config TOML (configs/multidae.toml), a RunConfig, or None (the
    defaults, with the model named in `overrides`), with `overrides` as `kit cv --set` takes them:
    {"train.epochs": 5, "model.hidden_dims": [600, 200]} or ["train.epochs=5", ...]."""
    import recsys_kit.models  # noqa: F401  (registers every model's config)
    from recsys_kit.config import RunConfig, apply_overrides, from_dict, load_config

    sets = _sets(overrides)
    if isinstance(model, RunConfig):
        raw = apply_overrides(json.loads(model.to_json()), sets)
        if seed is not None:
            raw["seed"] = seed
        return from_dict(raw, "the RunConfig with overrides")
    if model is None:
        return load_config(None, sets, seed)
    path = Path(model)
    if isinstance(model, Path) or path.suffix == ".toml" or path.exists():
        return load_config(path, sets, seed)
    return load_config(None, [f"model.name={model}", *sets], seed)


def _notify(on_event: EventCallback | None, kind: str, **payload) -> None:
    if on_event is not None:
        on_event({"kind": kind, **payload})


def _checked_data(data: Dataset | str | Path, config: RunConfig, folds: int, on_event: EventCallback | None,
                  **about) -> Dataset:
    """The Dataset (loaded when given as a folder, after a "loading" event), checked for the folds
    (protocol.preflight), then announced by a "loaded" event with its size and `about`."""
    from recsys_kit.protocol.preflight import check_run_data

    where = str(data) if isinstance(data, (str, Path)) else "the data"
    if isinstance(data, (str, Path)):
        _notify(on_event, "loading", data=where)
        data = load_data(data)
    check_run_data(data, config, folds, where)
    _notify(on_event, "loaded", data=where, users=data.n_users, items=data.n_items, interactions=data.matrix.nnz,
            duplicates=data.summary.get("duplicates_collapsed", 0), **about)
    return data


def cross_validate(data: Dataset | str | Path, model: str | Path | RunConfig | None, folds: int = 5, *,
                   overrides: Mapping[str, Any] | Iterable[str] | None = None, runs_dir: str | Path = "runs",
                   name: str | None = None, seed: int | None = None, device: str = "auto",
                   refit: str = "full", refit_seeds: int = 0, lb_estimate: bool = True,
                   on_event: EventCallback | None = None) -> CVResult:
    """`kit cv` as a call: K-fold cross-validation of one model on the contest-like holdout.

    data: a Dataset (`load_data`) or its folder. model: a registered name ("ease", "multidae", ...),
    a config TOML or a RunConfig; `overrides` as `--set` ({"train.epochs": 5}). Writes a run directory
    under `runs_dir` (never overwrites one) with OOF and test score matrices and metrics.json, and
    returns it as a CVResult. `refit`, `refit_seeds`, `lb_estimate`: as `kit cv --help` explains.
    `on_event` receives the progress events (loading, loaded, start, fold_start, epoch, fold_end,
    stage_start, end). Every option is checked before the data is read, the data before any fit."""
    child = _prefetch(data, model, overrides, seed)  # a first run on new files: parse while torch loads
    from recsys_kit.cv.refit import RefitOptions
    from recsys_kit.cv.run import run_cv
    from recsys_kit.protocol import prefetch
    from recsys_kit.protocol.preflight import check_run_options

    try:
        device = check_run_options(folds, Path(runs_dir), name, device)
        config = load_run_config(model, overrides, seed)
    except BaseException:
        prefetch.cancel(child)  # a bad option is said at once, not after the parse
        raise
    prefetch.finish(child)
    refit_options = RefitOptions(mode=refit, seeds=refit_seeds, lb_estimate=lb_estimate)
    dataset = _checked_data(data, config, folds, on_event, model=config.model_name, device=device)
    run_dir = run_cv(dataset, config, folds, Path(runs_dir), name=name, device=device, on_event=on_event,
                     refit=refit_options)
    return open_run(run_dir)


def tune(data: Dataset | str | Path, model: str | Path | RunConfig | None, trials: int, folds: int = 5, *,
         overrides: Iterable[str] | None = None, search: str | Path | None = None, runs_dir: str | Path = "runs",
         study: str | None = None, storage: str | None = None, seed: int | None = None, device: str = "auto",
         pruner_startup: int = 5, pruner_warmup: int = 0, keep_scores: bool = False,
         on_event: EventCallback | None = None) -> TuneResult:
    """`kit tune` as a call: an Optuna study over the model's search space (configs/search/<model>.toml
    unless `search`), resumed when the study exists. A field set in `overrides` ("k=v" as `--set`)
    is pinned, not searched. Returns the study's TuneResult (best config file, top trials, counts)."""
    from recsys_kit.protocol.preflight import check_run_options
    from recsys_kit.tune.search_space import pinned_values
    from recsys_kit.tune.study import (TuneOptions, check_tune_options, default_search_path, load_search_space,
                                       run_tune)

    check_tune_options(trials, pruner_startup, pruner_warmup)
    device = check_run_options(folds, Path(runs_dir), study, device, name_option="--study")
    config_path = Path(model) if isinstance(model, Path) or str(model).endswith(".toml") else None
    base = load_run_config(model, list(overrides or []), seed)
    space = load_search_space(Path(search) if search else default_search_path(config_path, base.model_name), base,
                              pinned=list(overrides or []))
    options = TuneOptions(trials=trials, folds=folds, study=study, storage=storage, device=device,
                          pruner_startup=pruner_startup, pruner_warmup=pruner_warmup, keep_scores=keep_scores)
    dataset = _checked_data(data, base, folds, on_event, model=base.model_name, device=device,
                            params=len(space.params), search=str(space.path),
                            pinned=pinned_values(space, base) if space.pinned else {})
    return run_tune(dataset, base, space, options, Path(runs_dir), config_path=config_path, on_event=on_event)


def blend(members: Iterable[CVResult | str | Path], *, runs_dir: str | Path = "runs", name: str | None = None,
          method: str = "fit", on_event: EventCallback | None = None, **options) -> CVResult:
    """`kit ensemble` as a call: blend two or more runs on the same data, holdout and folds.

    members: CVResults or run directories. method: fit (weights fitted on OOF Recall@10) | slots |
    vote | mean; further `options` are recsys_kit.blending.ensemble.EnsembleOptions fields (normalize,
    seed, bags, fallback, ...). Returns the blend's run directory as a CVResult: its OOF metrics, the
    weights in `metrics["members"]` and the held-out-half check in `metrics["holdout_half"]`."""
    from recsys_kit.blending.ensemble import EnsembleOptions, run_ensemble

    ensemble_options = EnsembleOptions(method=method, **options)
    ensemble_options.check()
    paths = _checked_members(members, runs_dir, name)
    return open_run(run_ensemble(paths, Path(runs_dir), name=name, options=ensemble_options, on_event=on_event))


def stack(members: Iterable[CVResult | str | Path], *, data: Dataset | str | Path | None = None,
          runs_dir: str | Path = "runs", name: str | None = None, on_event: EventCallback | None = None,
          **options) -> CVResult:
    """`kit stack` as a call: a gradient-boosted second stage reranking the members' top candidates,
    fitted on OOF rows across folds (recsys_kit.blending.stack). `data` (a Dataset or the contest folder
    the members ran on) adds time and side features; `options` are StackOptions fields (candidates,
    seed, fallback, ...). Returns the stack's run directory as a CVResult."""
    from recsys_kit.blending.stack import StackOptions, run_stack

    stack_options = StackOptions(**options)
    stack_options.check()
    paths = _checked_members(members, runs_dir, name)
    dataset = load_data(data) if isinstance(data, (str, Path)) else data
    return open_run(run_stack(paths, Path(runs_dir), name=name, options=stack_options, dataset=dataset,
                              on_event=on_event))


def _checked_members(members: Iterable[CVResult | str | Path], runs_dir: str | Path, name: str | None) -> list[Path]:
    """A blend's or stack's member paths, checked with its name and runs directory before any work."""
    from recsys_kit.blending.members import check_compatible
    from recsys_kit.files import check_output_dir, check_run_name

    paths = [member.run_dir if isinstance(member, CVResult) else Path(member) for member in members]
    if name is not None:
        check_run_name(name)
    check_output_dir(Path(runs_dir), "--runs-dir")
    check_compatible(paths)
    return paths


def submit(run: CVResult | str | Path, out: str | Path | None = None, *, force: bool = False,
           time_filter: bool = False) -> Path:
    """`kit submit` as a call: the run's top-10 unseen items per user as the contest's CSV
    (default submissions/<run>.csv; an existing file is kept unless `force`). Returns the CSV's path."""
    return Path(submit_summary(run, out, force=force, time_filter=time_filter)["path"])


def submit_summary(run: CVResult | str | Path, out: str | Path | None = None, *, force: bool = False,
                   time_filter: bool = False) -> dict:
    """`submit`, returning what was written: {"path", "users", "rows", "time_filter"}."""
    from recsys_kit.submission.contest_csv import write_submission

    run_dir = run.run_dir if isinstance(run, CVResult) else Path(run)
    out = Path(out) if out is not None else Path("submissions") / f"{run_dir.name}.csv"
    return write_submission(run_dir, out, force=force, time_filter=time_filter)


def validate(csv: str | Path, data_dir: str | Path) -> list[str]:
    """`kit validate` as a call: every contest rule the CSV breaks for this data; [] when it is valid."""
    from recsys_kit.submission.contest_csv import validate_submission

    return validate_submission(Path(csv), Path(data_dir))


def runs_table(runs_dir: str | Path = "runs", data: str | Path | None = None, sort: str = "recall") -> list[dict]:
    """`kit runs` as a call: one row per run directory under `runs_dir` (finished first, best by
    `sort`), only runs on `data`'s contest folder when given."""
    from recsys_kit.errors import DataError
    from recsys_kit.report.run_table import SORT_KEYS, collect_runs

    if sort not in SORT_KEYS:
        raise DataError(f"--sort {sort!r}: choose one of {', '.join(SORT_KEYS)}")
    if not Path(runs_dir).is_dir():
        raise DataError(f"--runs-dir {runs_dir}: not a directory; pass the folder kit cv wrote runs into")
    fingerprint = load_data(data).fingerprint() if data is not None else None
    return collect_runs(Path(runs_dir), fingerprint, sort)


def report(run_dirs: Iterable[CVResult | str | Path], out: str | Path = "report.html") -> Path:
    """`kit report` as a call: one self-contained HTML page of the runs' and studies' plots."""
    from recsys_kit.report.page import write_report

    return write_report([run.run_dir if isinstance(run, CVResult) else Path(run) for run in run_dirs], Path(out))


def convert(fmt: str, src: str | Path, out_dir: str | Path) -> dict:
    """`kit convert` as a call: a public data set (movielens-100k | movielens-1m | movielens-latest |
    s3rec) in the contest layout under a new or empty `out_dir`; returns the counts and notes."""
    from recsys_kit.data.convert import convert as convert_source

    return convert_source(fmt, Path(src), Path(out_dir))


def synthesize(out_dir: str | Path, users: int = 3000, items: int = 1200, interactions: int = 150_000,
               seed: int = 0) -> dict:
    """`kit synth` as a call: a synthetic contest (log and side files) in a new or empty `out_dir`."""
    from recsys_kit.data.synth import make_synthetic

    return make_synthetic(Path(out_dir), users=users, items=items, interactions=interactions, seed=seed)


def record_public(target: CVResult | str | Path, score: float, *, runs_dir: str | Path | None = None,
                  note: str | None = None) -> dict:
    """`kit lb TARGET SCORE` as a call: record a public leaderboard score for a run directory, or for a
    CSV that `kit submit` wrote (found through its digest in `runs_dir`'s ledger). Returns the record."""
    from recsys_kit.submission.ledger import record_public as record

    path = target.run_dir if isinstance(target, CVResult) else Path(target)
    return record(path, score, Path(runs_dir) if runs_dir is not None else None, note)


def ledger(runs_dir: str | Path = "runs") -> list[dict]:
    """`kit lb` as a call: every submission and public score recorded in `runs_dir`, oldest first."""
    from recsys_kit.submission.ledger import read_ledger

    return read_ledger(Path(runs_dir))


def calibrated(run: CVResult | str | Path) -> dict | None:
    """The run's leaderboard estimate calibrated on the public scores recorded for the other runs on
    the same data in its runs directory: {"value", "pairs", "interval90", "family", "basis"} (basis:
    "estimate", or "oof" for a run without one, calibrated by the pairs' OOF), None without any."""
    from recsys_kit.report.run_table import collect_runs

    path = (run.run_dir if isinstance(run, CVResult) else Path(run)).resolve()
    for row in collect_runs(path.parent):
        if Path(row["path"]).resolve() == path and row.get("calibrated") is not None:
            return {"value": row["calibrated"], **row["calibration"]}
    return None
