"""The one pre-run check of `kit cv`, `kit tune` and the API, made before anything is written or drawn.

In two steps, so a bad option fails before the data is read: `check_run_options` (folds, the run
or study name, the runs directory, the device) and, once the data is loaded, `check_run_data`
(the folds fit the users, and every fold has users whose holdout hides something, so no run ends
in a metric of nothing, `nan +- nan`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys_kit.config import RunConfig
from recsys_kit.data.dataset import Dataset
from recsys_kit.errors import DataError
from recsys_kit.files import check_output_dir, check_run_name
from recsys_kit.protocol.holdout import assign_folds


def resolve_device(name: str = "auto") -> str:
    """auto -> cuda when torch sees a CUDA device, else cpu; ValueError for anything unusable."""
    import torch  # here, not at the top: `kit --help` and the data checks should not wait for it

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: choose auto, cpu or cuda")
    return name


def check_run_options(folds: int, runs_dir: Path, name: str | None = None, device: str = "auto",
                      name_option: str = "--name", runs_option: str = "--runs-dir") -> str:
    """Everything about a run that the data does not decide; returns the resolved device."""
    check_folds(folds)
    if name is not None:
        check_run_name(name, name_option)
    check_output_dir(Path(runs_dir), runs_option)
    try:
        return resolve_device(device)
    except ValueError as err:
        raise DataError(str(err)) from None


def check_run_data(dataset: Dataset, config: RunConfig, folds: int, data: str = "the data") -> None:
    """The folds fit the data's users and each has someone to score (the folds `config.seed` draws)."""
    check_folds(folds, dataset.n_users, data)
    check_evaluable(dataset, config, assign_folds(dataset.n_users, folds, config.seed), data)


def check_folds(folds: int, n_users: int | None = None, data: str = "the data") -> None:
    """--folds is at least 2 and, once the data is known, at most its number of users."""
    if folds < 2:
        raise DataError(f"--folds {folds}: K-fold cross-validation needs at least 2 folds")
    if n_users is None:
        return
    if n_users < 2:
        raise DataError(f"{data}: holds {n_users} user; K-fold cross-validation needs at least 2 users")
    if folds > n_users:
        raise DataError(f"--folds {folds}: {data} holds only {n_users} users; pass --folds {n_users} or fewer")


def check_evaluable(dataset: Dataset, config: RunConfig, fold_of_user: np.ndarray, data: str = "the data") -> None:
    """Every fold has at least one user with a hidden target.

    The rule is contest_holdout's: a user gets a target when they hold more than `min_input`
    items (n_last + n_random >= 1 is the config's own check); counting is enough to know it.
    """
    min_input = config.holdout.min_input
    has_target = np.diff(dataset.matrix.indptr) > min_input
    if not has_target.any():
        raise DataError(f"{data}: no user holds more than holdout.min_input={min_input} items, so the holdout hides "
                        f"nothing to score; lower --set holdout.min_input or use more data")
    folds = int(fold_of_user.max()) + 1
    empty = [f + 1 for f in range(folds) if not has_target[fold_of_user == f].any()]
    if empty:
        raise DataError(f"{data}: fold(s) {', '.join(map(str, empty))} of {folds} get no user with a hidden target "
                        f"(only {int(has_target.sum())} users hold more than holdout.min_input={min_input} "
                        f"items); pass fewer --folds")
