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

EventCallback = Callable[[dict], None]


@dataclass(frozen=True)
class CVResult:
    """A finished run directory (`cross_validate`, `blend`, or `open_run` on any `kit cv` /
    `kit ensemble` directory): its metrics in memory, its score matrices read on demand."""

    run_dir: Path
    metrics: dict = field(repr=False, compare=False)  # metrics.json as written

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def model(self) -> str | None:
        """The model's name ("ensemble" for a blend)."""
        return self.metrics.get("model")

    @property
    def recall(self) -> float | None:
        """Mean out-of-fold Recall@10 over the folds (None when no user had a hidden item)."""
        return self.metrics["recall@10"]["mean"]

    @property
    def recall_std(self) -> float | None:
        return self.metrics["recall@10"].get("std")

    @property
    def ndcg(self) -> float | None:
        """Mean out-of-fold NDCG@10 over the folds."""
        return self.metrics["ndcg@10"]["mean"]

    @property
    def lb_estimate(self) -> float | None:
        """The leaderboard estimate of Recall@10 when the run made one (see DESIGN.md, Protocol 3)."""
        return self.metrics["recall@10"].get("lb_estimate")

    def oof_scores(self) -> ScoreFile:
        """users x items float32 out-of-fold scores (seen items are -inf), read on demand: index rows
        like an array (`scores[users]`, `scores[:100]`), or `np.asarray(scores)` for the whole matrix."""
        return self._scores("oof_scores.npy")

    def test_scores(self) -> ScoreFile:
        """users x items float32 scores the submission is ranked from, read on demand as oof_scores."""
        return self._scores("test_scores.npy")

    def ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(user_ids, item_ids): the original ids of the score matrices' rows and columns."""
        from recsys_kit.runs import store

        return store.load_ids(self.run_dir, "user_ids.npy"), store.load_ids(self.run_dir, "item_ids.npy")

    def curves(self) -> dict | None:
        """curves.json (per fold, per epoch: loss and validation Recall@10), or None when the run has none."""
        from recsys_kit.runs.curves import load_curves

        return load_curves(self.run_dir)

    def _scores(self, filename: str) -> ScoreFile:
        from recsys_kit.runs import store

        return store.load_scores(self.run_dir, filename)

    def __repr__(self) -> str:
        figure = "n/a" if self.recall is None else f"{self.recall:.4f}"
        return f"CVResult({self.name!r}, model={self.model!r}, recall@10={figure}, run_dir={str(self.run_dir)!r})"


def open_run(run_dir: str | Path) -> CVResult:
    """A `kit cv` or `kit ensemble` run directory as a CVResult (DataError when it never finished)."""
    from recsys_kit.runs import store
    from recsys_kit.errors import DataError

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise DataError(f"{run_dir}: no metrics.json; pass a finished `kit cv` or `kit ensemble` run directory")
    return CVResult(run_dir, store.read_json(run_dir / "metrics.json"))


def load_data(data_dir: str | Path) -> Dataset:
    """The contest-layout folder (`train_ratings.csv` plus side files) as a Dataset: a users x items
    CSR matrix, the original ids, times and item features. DataError names the bad file and line."""
    from recsys_kit.data.load import load_dataset

    return load_dataset(Path(data_dir))


def load_run_config(model: str | Path | RunConfig, overrides: Mapping[str, Any] | None = None,
                    seed: int | None = None) -> RunConfig:
    """A model name ("ease"), a config TOML (configs/multidae.toml) or a RunConfig, with
    `overrides` as `kit cv --set` takes them: {"train.epochs": 5, "model.hidden_dims": [600, 200]}."""
    import recsys_kit.models  # noqa: F401  (registers every model's config)
    from recsys_kit.config import RunConfig, apply_overrides, from_dict, load_config

    sets = [f"{key}={json.dumps(list(value)) if isinstance(value, (list, tuple)) else value}"
            for key, value in (overrides or {}).items()]
    if isinstance(model, RunConfig):
        raw = apply_overrides(json.loads(model.to_json()), sets)
        if seed is not None:
            raw["seed"] = seed
        return from_dict(raw, "the RunConfig with overrides")
    path = Path(model)
    if path.suffix == ".toml" or path.exists():
        return load_config(path, sets, seed)
    return load_config(None, [f"model.name={model}", *sets], seed)


def cross_validate(data: Dataset | str | Path, model: str | Path | RunConfig, folds: int = 5, *,
                   overrides: Mapping[str, Any] | None = None, runs_dir: str | Path = "runs",
                   name: str | None = None, seed: int | None = None, device: str = "auto",
                   refit: str = "full", refit_seeds: int = 0, lb_estimate: bool = True,
                   on_event: EventCallback | None = None) -> CVResult:
    """`kit cv` as a call: K-fold cross-validation of one model on the contest-like holdout.

    data: a Dataset (`load_data`) or its folder. model: a registered name ("ease", "multidae", ...),
    a config TOML or a RunConfig; `overrides` as `--set` ({"train.epochs": 5}). Writes a run directory
    under `runs_dir` (never overwrites one) with OOF and test score matrices and metrics.json, and
    returns it as a CVResult. `refit`, `refit_seeds`, `lb_estimate`: as `kit cv --help` explains.
    `on_event` receives the progress events (fold_start, epoch, fold_end, stage_start, end)."""
    from recsys_kit.runs import store
    from recsys_kit.cv.run import run_cv
    from recsys_kit.errors import DataError
    from recsys_kit.protocol.holdout import assign_folds
    from recsys_kit.protocol.preflight import check_evaluable, check_folds
    from recsys_kit.cv.refit import RefitOptions
    from recsys_kit.models.train import resolve_device

    check_folds(folds)
    if name is not None:
        store.check_run_name(name)
    from recsys_kit import files
    files.check_output_dir(Path(runs_dir), "runs_dir")
    config = load_run_config(model, overrides, seed)
    refit_options = RefitOptions(mode=refit, seeds=refit_seeds, lb_estimate=lb_estimate)
    try:
        device = resolve_device(device)
    except ValueError as err:
        raise DataError(str(err)) from None
    where = str(data) if isinstance(data, (str, Path)) else "the data"
    dataset = load_data(data) if isinstance(data, (str, Path)) else data
    check_folds(folds, dataset.n_users, where)
    check_evaluable(dataset, config, assign_folds(dataset.n_users, folds, config.seed), where)
    run_dir = run_cv(dataset, config, folds, Path(runs_dir), name=name, device=device, on_event=on_event,
                     refit=refit_options)
    return open_run(run_dir)


def blend(members: Iterable[CVResult | str | Path], *, runs_dir: str | Path = "runs", name: str | None = None,
          method: str = "fit", on_event: EventCallback | None = None, **options) -> CVResult:
    """`kit ensemble` as a call: blend two or more runs on the same data, holdout and folds.

    members: CVResults or run directories. method: fit (weights fitted on OOF Recall@10) | slots |
    vote | mean; further `options` are recsys_kit.ensemble.EnsembleOptions fields (normalize, seed,
    bags, fallback, ...). Returns the blend's run directory as a CVResult: its OOF metrics, the
    weights in `metrics["members"]` and the held-out-half check in `metrics["holdout_half"]`."""
    from recsys_kit.runs import store
    from recsys_kit.blending.ensemble import EnsembleOptions, check_compatible, run_ensemble

    paths = [member.run_dir if isinstance(member, CVResult) else Path(member) for member in members]
    ensemble_options = EnsembleOptions(method=method, **options)
    ensemble_options.check()
    if name is not None:
        store.check_run_name(name)
    from recsys_kit import files
    files.check_output_dir(Path(runs_dir), "runs_dir")
    check_compatible(paths)
    return open_run(run_ensemble(paths, Path(runs_dir), name=name, options=ensemble_options, on_event=on_event))


def submit(run: CVResult | str | Path, out: str | Path | None = None, *, force: bool = False,
           time_filter: bool = False) -> Path:
    """`kit submit` as a call: the run's top-10 unseen items per user as the contest's CSV
    (default submissions/<run>.csv; an existing file is kept unless `force`). Returns the CSV's path."""
    from recsys_kit.submission.contest_csv import write_submission

    run_dir = run.run_dir if isinstance(run, CVResult) else Path(run)
    out = Path(out) if out is not None else Path("submissions") / f"{run_dir.name}.csv"
    return Path(write_submission(run_dir, out, force=force, time_filter=time_filter)["path"])


def validate(csv: str | Path, data_dir: str | Path) -> list[str]:
    """`kit validate` as a call: every contest rule the CSV breaks for this data; [] when it is valid."""
    from recsys_kit.submission.contest_csv import validate_submission

    return validate_submission(Path(csv), Path(data_dir))
