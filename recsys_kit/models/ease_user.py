"""User-side EASE: the closed form over users instead of items.

Item EASE regresses each item's column on the other items. ease_user regresses each user's row on
the other training users: C = argmin ||X - C X||^2 + l2 ||C||^2 with diag(C) = 0. The squared
error splits by rows, so row u is the ridge regression of x_u on the training users other than u,
and all rows come from one users x users solve, C = I - diag(P)^-1 P, P = (X X^T + l2 I)^-1.

Scoring (the formulation chosen). Every model scores from input rows alone, and cv scores users
the fit never saw (each held-out fold). For such a user the same objective asks for the ridge
regression of its input row on every training user (no diagonal constraint is needed: the user is
not among the regressors, so the identity is out of reach):

    c_u = x_u X^T P        (x_u X^T: the items u shares with each training user)
    score(u) = c_u X = sum over training users v of c_uv x_v

That one formula is used for every scored row. For a training user it is x_u X^T P = e_u - l2 P[u, :]:
its weights on the other users are l2 P_uu times the closed form's row (a positive factor per row)
(with dropout, l2 + p/(1-p) |x_u| in place of l2) and its weight on itself lands only on its own
items, which are masked, so its top-k is the closed form's. Rows are scored a chunk at a time:
(x X^T) P costs chunk x users^2, less than the solve.

`dropout` is EDLAE's (see ease.py) on the user side: each user's Gram diagonal (its item count) gets
p/(1-p) times itself, which weighs heavy users' rows less as regressors.

A consequence worth knowing (push-through identity, dropout 0): X^T (X X^T + l2 I)^-1 X =
I - l2 (X^T X + l2 I)^-1, so on unseen items the scores are -l2 x_u (X^T X + l2 I)^-1: item-side
ridge regression without EASE's zero diagonal, i.e. EASE with column j multiplied by l2 P_jj. So
l2 is on ease's scale (the default is ease's 500). The users x users solve is the cheap way to get
it when users are fewer than items; when users are too many for memory the fit refuses (with the
size it needs) before allocating anything.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_kit.errors import DataError
from recsys_kit.models.base import Recommender, check_rows
from recsys_kit.models.ease import CELL_BYTES, check_solve_options, gram_inverse, gram_matrix, solve, solve_memory
from recsys_kit.models.sysmem import gib

# Above this share of nonzeros the chunk's user overlaps x X^T are multiplied dense (BLAS), below sparse.
DENSE_OVERLAP = 0.1


@dataclass(frozen=True)
class EASEUserConfig:
    name: str = "ease_user"
    l2: float = 500.0  # lambda on the users x users Gram diagonal; the scale of ease's l2 (see the docstring)
    dropout: float = 0.0  # EDLAE on the user side: the diagonal gets p/(1-p) x itself; 0 = off
    # Float type of X X^T + l2 I and its inverse, as ease's: float64 | float32 | auto (float32,
    # float64 if float32's Cholesky fails). The stored inverse is float32 either way.
    precision: str = "auto"

    def __post_init__(self):
        check_solve_options(self.l2, self.dropout, self.precision)


def check_user_memory(n_users: int, n_items: int, device: str, dtype) -> None:
    """Refuse, before allocating, a users x users solve that would not fit; say what it needs."""
    free, cell, where = solve_memory(device, dtype)
    need = n_users * n_users * cell
    if free is None or need <= free:
        return
    item_side = n_items * n_items * cell
    gpu = "--device cuda on a GPU with more memory, " if device != "cuda" else ""
    raise DataError(f"ease_user on {n_users:,} training users needs about {gib(need)} (users^2 x {cell} bytes) "
                    f"but only {gib(free)} is {where}; use `ease` instead (items x items: about "
                    f"{gib(item_side)} for {n_items:,} items), {gpu}or a machine with more memory")


class EASEUser(Recommender):
    name = "ease_user"
    deterministic = True  # the same fit for every seed: nothing to bag
    iterative = False  # closed form: no epochs
    Config = EASEUserConfig

    def fit(self, train, side=None, valid=None, on_epoch=None):
        # No epochs and no early stopping: valid and on_epoch have nothing to act on.
        rows = check_rows(train, None, "train")
        n_users, self.n_items = rows.shape
        by_item = rows.T.tocsr()  # items x users: the Gram matrix of its columns is X X^T
        self.inverse, dtype = solve(
            lambda dtype: gram_matrix(by_item, self.config.l2, dtype, self.config.dropout), gram_inverse,
            self.config.precision, self.device,
            lambda dtype: check_user_memory(n_users, self.n_items, self.device, dtype))
        self.train_by_item = by_item.astype(np.float32)  # a copy: never the caller's rows
        self.summary.update({"items": self.n_items, "users_fitted": n_users, "l2": self.config.l2,
                             "dropout": self.config.dropout, "solve_precision": np.dtype(dtype).name,
                             "user_user_mb": round(self.inverse.nbytes / 2**20, 2),
                             "fit_peak_mb": round(n_users * n_users * CELL_BYTES[dtype] / 2**20, 2)})
        return self

    def _raw_scores(self, inputs) -> np.ndarray:
        rows = inputs.rows.astype(np.float32)
        overlap = rows @ self.train_by_item  # users scored x training users: shared items
        if overlap.nnz > DENSE_OVERLAP * overlap.shape[0] * overlap.shape[1]:
            overlap = overlap.toarray()
        weights = np.asarray(overlap @ self.inverse, dtype=np.float32)  # c_u = x_u X^T P
        return np.ascontiguousarray((self.train_by_item @ weights.T).T, dtype=np.float32)  # c_u X
