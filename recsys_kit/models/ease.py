"""EASE (Steck 2019): a closed-form item x item model, B = I - P / diag(P) with P = (X^T X + l2 I)^-1.

The item x item matrix is the only large object (items^2 floats); fitting works on it in
place so the peak is about one float64 copy plus the float32 result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import lapack

from recsys_kit.errors import DataError
from recsys_kit.models.base import Recommender, check_rows

MIRROR_CHUNK = 2048  # rows per step when copying the upper triangle to the lower one


@dataclass(frozen=True)
class EASEConfig:
    name: str = "ease"
    l2: float = 500.0  # lambda on the Gram diagonal; also keeps unseen items invertible

    def __post_init__(self):
        if not self.l2 > 0:
            raise DataError(f"[model] l2 must be > 0 (EASE inverts X^T X + l2 I), got {self.l2}")


def gram_matrix(rows: sp.csr_matrix, l2: float) -> np.ndarray:
    """X^T X + l2 I as dense float64 (the product itself stays sparse until the end)."""
    x = rows.astype(np.float64)
    gram = np.asarray((x.T @ x).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    return gram


def ease_weights_numpy(gram: np.ndarray) -> np.ndarray:
    """B from G via Cholesky (LAPACK potrf/potri in place on G); G is consumed."""
    n = gram.shape[0]
    # G is symmetric, so a C-ordered G read transposed is a Fortran-ordered G: LAPACK then
    # works in place instead of copying items^2 floats.
    fortran = gram if gram.flags.f_contiguous else gram.T
    factor, info = lapack.dpotrf(fortran, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"X^T X + l2 I is not positive definite (potrf info {info}); raise l2")
    inverse, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky inverse failed (potri info {info}); raise l2")
    # potri fills only the upper triangle; mirror it a block of rows at a time (no n^2 temporaries).
    for start in range(0, n, MIRROR_CHUNK):
        stop = min(start + MIRROR_CHUNK, n)
        inverse[start:stop, :start] = inverse[:start, start:stop].T
        block = inverse[start:stop, start:stop]
        inverse[start:stop, start:stop] = np.triu(block) + np.triu(block, 1).T
    return _weights_from_inverse(inverse)


def ease_weights_torch(gram: np.ndarray, device: str) -> np.ndarray:
    """The same on a torch device (a GPU inverts large catalogues much faster)."""
    g = torch.from_numpy(gram).to(device=device, dtype=torch.float64)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(g))
    del g
    diagonal = torch.diagonal(inverse).clone()
    inverse /= -diagonal  # column j divided by -P[j, j]
    inverse.fill_diagonal_(0.0)
    return inverse.to(torch.float32).cpu().numpy()


def _weights_from_inverse(inverse: np.ndarray) -> np.ndarray:
    diagonal = np.diag(inverse).copy()
    inverse /= -diagonal  # broadcasts over rows: column j divided by -P[j, j]
    np.fill_diagonal(inverse, 0.0)
    return inverse.astype(np.float32)


class EASE(Recommender):
    name = "ease"
    Config = EASEConfig

    def fit(self, train_rows, features=None, valid=None, on_epoch=None):
        # No epochs and no early stopping: valid and on_epoch have nothing to act on.
        rows = check_rows(train_rows, None, "train_rows")
        self.n_items = rows.shape[1]
        gram = gram_matrix(rows, self.config.l2)
        if self.device == "cuda":
            self.weights = ease_weights_torch(gram, self.device)
        else:
            self.weights = ease_weights_numpy(gram)
        del gram
        self._weights_on_device = None  # uploaded on the first GPU scoring call
        self.summary.update({"items": self.n_items, "l2": self.config.l2,
                             "item_item_mb": round(self.weights.nbytes / 2**20, 2),
                             "fit_peak_mb": round(self.n_items ** 2 * 12 / 2**20, 2)})
        return self

    def _raw_scores(self, input_rows: sp.csr_matrix) -> np.ndarray:
        rows = input_rows.astype(np.float32)
        if self.device == "cuda":
            return self._raw_scores_torch(rows)
        return np.asarray(rows @ self.weights, dtype=np.float32)

    def _raw_scores_torch(self, rows: sp.csr_matrix) -> np.ndarray:
        if self._weights_on_device is None:
            self._weights_on_device = torch.from_numpy(self.weights).to(self.device)
        coo = rows.tocoo()
        # COO, not CSR: CSR tensors are still "beta" in torch and warn on every chunk.
        x = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)),
                                    torch.from_numpy(coo.data), size=rows.shape, device=self.device,
                                    check_invariants=False)
        return (x @ self._weights_on_device).cpu().numpy()
