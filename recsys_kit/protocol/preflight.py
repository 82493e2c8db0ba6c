"""Checks of a `kit cv` / `kit tune` run's inputs that need the data, made before anything is
written or drawn: the folds fit the users, and every fold has users whose holdout hides something,
so no run ends in a metric of nothing (`nan +- nan`)."""
from __future__ import annotations

import numpy as np

from recsys_kit.config import RunConfig
from recsys_kit.data.dataset import Dataset
from recsys_kit.errors import DataError


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
