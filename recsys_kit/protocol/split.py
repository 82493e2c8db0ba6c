"""The fold split as values: what a model may see (recsys_kit.data.interactions), and nothing else.

`fold_splits` hands the cv loop, per fold, the rows to fit on, the validation
pairs, and the rows to score; the fold's targets stay with the loop, for its metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from recsys_kit.data.interactions import Interactions
from recsys_kit.protocol.holdout import Holdout, contest_holdout
from recsys_kit.seeds import derive_seed


def holdout_inputs(holdout: Holdout) -> Interactions:
    """Every user's input rows (the holdout's public part) as a model may see them."""
    return Interactions(holdout.input, holdout.input_times.data, holdout.input_order)


def public_rows(dataset, holdout: Holdout) -> Interactions:
    """Every public row of every user (the contest's own training set), in the holdout's order."""
    times = None if dataset.times is None else dataset.times.data
    return Interactions(dataset.matrix, times, holdout.order)


@dataclass(frozen=True)
class FoldSplit:
    fold: int
    train: Interactions  # input rows of the fold's fitting users (other folds, minus validation users)
    valid: tuple[Interactions, sp.csr_matrix] | None  # validation users' inner inputs and targets
    users: np.ndarray  # the fold's users, scored from their input rows
    inputs: Interactions  # their input rows
    target: sp.csr_matrix  # their hidden items: for the loop's metrics, never handed to a model


def validation_slice(holdout: Holdout, train_users: np.ndarray, config, fold: int):
    """Carve early-stopping users out of the fold's training users; hide their tails too.

    Returns (fit_users, (valid inputs, valid targets) or None)."""
    rng = np.random.default_rng(derive_seed(config.seed, "valid", fold))
    n_valid = int(round(len(train_users) * config.train.valid_fraction))
    if n_valid == 0:
        return train_users, None
    valid_users = np.sort(rng.choice(train_users, size=n_valid, replace=False))
    fit_users = np.setdiff1d(train_users, valid_users)
    inner = contest_holdout(holdout.input[valid_users], holdout.input_times[valid_users],
                            config.holdout, derive_seed(config.seed, "valid-holdout", fold))
    keep = np.flatnonzero(inner.has_target)
    if len(keep) == 0:
        return train_users, None
    return fit_users, (holdout_inputs(inner).take(keep), inner.target[keep])


def fold_splits(holdout: Holdout, fold_of_user: np.ndarray, config) -> Iterator[FoldSplit]:
    """Per fold: what the fold's model fits on, validates on and scores (see the module docstring)."""
    inputs = holdout_inputs(holdout)
    for fold in range(int(fold_of_user.max()) + 1):
        users = np.flatnonzero(fold_of_user == fold)
        fit_users, valid = validation_slice(holdout, np.flatnonzero(fold_of_user != fold), config, fold)
        yield FoldSplit(fold, inputs.take(fit_users), valid, users, inputs.take(users), holdout.target[users])
