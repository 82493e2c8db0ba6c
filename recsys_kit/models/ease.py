"""EASE (Steck 2019): a closed-form item x item model, B = I - P / diag(P) with P = (X^T X + l2 I)^-1.

`dropout` p is Steck 2020's emphasised denoising (EDLAE, "Autoencoders that don't overfit towards
the identity"): dropping each input item with probability p regularises the Gram matrix's diagonal
by p/(1-p) times itself, P = (X^T X + diag(p/(1-p) diag(X^T X) + l2))^-1, which penalises most the
weights of popular items, where the identity is the easiest to learn. p = 0 is Steck 2019 exactly.

The item x item matrix is the only large object (items^2 floats). The inversion runs through
torch's LAPACK (MKL on CPU, cuSOLVER on a GPU) in place on the Gram matrix: SciPy's bundled
32-bit-integer OpenBLAS segfaults in `dpotrf` above about 15.5k items, and NumPy offers no
Cholesky inverse. The peak is one items^2 matrix in the solve's float type (float64: plus the
float32 result), and it is checked against the machine's free memory before anything large is
allocated.

`precision` picks the solve's float type: float64, float32 (a third of float64's peak: one matrix,
inverted and turned into B in place) or auto = float32, retried in float64 should float32's Cholesky
find the matrix not positive definite. Measured by bench/contest_scale.py on the contest-scale
synthetic set (6,806 items, fold 0's 22,579 training users, 6,272 users scored): float32's top-10
is float64's for every user at l2 500 and at l2 1 (the same set for 100%, the same order for 99.97%),
the solve takes 0.48x float64's time (1 thread; 0.35-0.73x at 2 threads on a loaded machine) and the
fit peaks at 177 MB instead of 530 MB.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from recsys_kit.errors import DataError
from recsys_kit.models.base import Recommender, check_rows
from recsys_kit.data.interactions import Interactions
from recsys_kit.models.sysmem import available_bytes, gib

GRAM_BLOCK = 2048  # item columns of X^T X built at once: bounds the sparse temporary
FIT_BYTES_PER_CELL = 8 + 4  # the float64 Gram matrix (inverted in place) + the float32 weights
PRECISIONS = ("float64", "float32", "auto")
# Bytes per item x item cell at the fit's peak, by solve dtype: float64 = the Gram matrix plus the
# float32 weights made from it; float32 = one matrix, inverted and turned into the weights in place.
CELL_BYTES = {np.float64: FIT_BYTES_PER_CELL, np.float32: 4}


@dataclass(frozen=True)
class EASEConfig:
    name: str = "ease"
    l2: float = 500.0  # lambda on the Gram diagonal; also keeps unseen items invertible
    # Items bought by fewer training users than this stay out of the item x item matrix (their
    # column of B is zero, so they score 0, as EASE scores an item it knows nothing about):
    # the way to fit a catalogue too large for memory.
    min_item_users: int = 1
    # Float type of X^T X + l2 I and its inverse: float64 | float32 (a third of the memory, about
    # twice as fast, the same top-10) | auto = float32, float64 if float32's Cholesky fails.
    # The weights are float32 either way.
    precision: str = "auto"
    # EDLAE input dropout p (Steck 2020): the Gram diagonal gets p/(1-p) x itself on top of l2; 0 = off.
    dropout: float = 0.0

    def __post_init__(self):
        check_solve_options(self.l2, self.dropout, self.precision)
        if self.min_item_users < 1:
            raise DataError(f"[model] min_item_users must be >= 1, got {self.min_item_users}")


def check_solve_options(l2: float, dropout: float, precision: str) -> None:
    """The options every EASE-family closed form shares (item or user side)."""
    if not l2 > 0:
        raise DataError(f"[model] l2 must be > 0 (EASE inverts a Gram matrix + l2 I), got {l2}")
    if not 0 <= dropout < 1:
        raise DataError(f"[model] dropout must be in [0, 1) (the diagonal gets p/(1-p) x itself), got {dropout}")
    if precision not in PRECISIONS:
        raise DataError(f"[model] precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def solve_dtype(precision: str, device: str) -> type:
    """numpy float type of the (first) solve: auto = float32 on every device (see the module docstring)."""
    if precision == "auto":
        return np.float32
    return {"float64": np.float64, "float32": np.float32}[precision]


def gram_matrix(rows: sp.csr_matrix, l2: float, dtype=np.float64, dropout: float = 0.0) -> np.ndarray:
    """X^T X + l2 I as dense `dtype`, built a block of item columns at a time, so the sparse
    product never holds more than items x GRAM_BLOCK entries (computed in float64 and rounded
    once, so a float32 Gram matrix is float64's rounded). With dropout p the diagonal d becomes
    d + p/(1-p) d + l2 = d/(1-p) + l2, also rounded once."""
    x = rows.astype(np.float64).tocsc()
    x_t = x.T.tocsr()
    n = x.shape[1]
    gram = np.empty((n, n), dtype=dtype)
    for start in range(0, n, GRAM_BLOCK):
        stop = min(start + GRAM_BLOCK, n)
        gram[:, start:stop] = (x_t @ x[:, start:stop]).toarray()
    if dropout:
        diagonal = np.asarray(x.multiply(x).sum(axis=0), dtype=np.float64).ravel()
        gram[np.diag_indices_from(gram)] = diagonal / (1.0 - dropout) + l2
    else:  # the p = 0 path kept as it was, so plain EASE stays bit-identical
        gram[np.diag_indices_from(gram)] += l2
    return gram


def fit_bytes(n_items: int, dtype=np.float64) -> int:
    """Peak memory of the fit's dense matrices (the block temporaries are small beside them)."""
    return n_items * n_items * CELL_BYTES[dtype]


def check_fit_memory(item_users: np.ndarray, min_item_users: int, device: str, dtype=np.float64) -> None:
    """Refuse, before allocating, a fit that would not fit in memory; say what would fit."""
    n_items = int((item_users >= min_item_users).sum())
    free, cell, where = solve_memory(device, dtype)
    need = n_items * n_items * cell
    if free is None or need <= free:
        return
    # The smallest minimum count whose catalogue fits (items^2 x bytes <= free).
    fits = int(np.sqrt(free / cell))
    counts = np.sort(item_users)[::-1]
    hint = (f"--set model.min_item_users={int(counts[fits]) + 1} keeps "
            f"{int((item_users > counts[fits]).sum()):,} items" if fits < len(counts) else "")
    options = ", ".join(o for o in (hint, "--device cuda on a GPU with more memory" if device != "cuda" else "",
                                    "or a machine with more memory") if o)
    raise DataError(f"EASE on {n_items:,} items needs about {gib(need)} (items^2 x "
                    f"{cell} bytes) but only {gib(free)} is "
                    f"{where}; fit on fewer items: {options}")


def solve_memory(device: str, dtype) -> tuple[int | None, int, str]:
    """(bytes free, bytes per cell of the solve's square matrix at its peak, where) for a solve on
    `device` in `dtype`; free is None when unknown."""
    if device == "cuda":
        # the solve's matrix lives on the GPU; the result comes back
        return torch.cuda.mem_get_info()[0], np.dtype(dtype).itemsize, "GPU memory free"
    return available_bytes(), CELL_BYTES[dtype], "memory available on this machine"


def solve(gram_of: Callable[[type], np.ndarray], finish: Callable, precision: str, device: str,
          check_memory: Callable[[type], None]) -> tuple[np.ndarray, type]:
    """(finish(gram_of(dtype), device), dtype) in `precision`'s float type; auto retries a float32
    Cholesky that finds the matrix not positive definite in float64. check_memory(dtype) runs
    before each matrix is built."""
    dtype = solve_dtype(precision, device)
    check_memory(dtype)
    try:
        return finish(gram_of(dtype), device), dtype
    except np.linalg.LinAlgError:
        if precision != "auto" or dtype is np.float64:
            raise
    # Past the except clause the failed matrix is no longer referenced (by the traceback) and is freed.
    # float32 lost the matrix's smallest eigenvalues (a tiny l2 beside large counts): float64.
    check_memory(np.float64)
    return finish(gram_of(np.float64), device), np.float64


def invert_in_place(gram: np.ndarray | torch.Tensor) -> None:
    """gram <- gram^-1 for a symmetric positive definite gram, by Cholesky, with no copy.

    A C-ordered symmetric matrix read transposed is a column-major one, which is what LAPACK
    works on in place; torch then writes the factor and the inverse into the same storage."""
    column_major = cholesky_in_place(gram)
    torch.cholesky_inverse(column_major, upper=False, out=column_major)


def cholesky_in_place(gram: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The lower Cholesky factor L of gram written over it; returns the column-major view
    (L is its lower triangle, so gram's C-ordered upper triangle holds L^T)."""
    tensor = torch.from_numpy(gram) if isinstance(gram, np.ndarray) else gram
    column_major = tensor.mT
    info = torch.empty((), dtype=torch.int32, device=tensor.device)
    torch.linalg.cholesky_ex(column_major, upper=False, out=(column_major, info))
    if int(info) != 0:
        raise np.linalg.LinAlgError(f"X^T X + l2 I is not positive definite (Cholesky info {int(info)}); "
                                    "raise l2")
    return column_major


def ease_weights(gram: np.ndarray, device: str = "cpu") -> np.ndarray:
    """B (float32) from G = X^T X + l2 I, solved in G's own float type (float64 or float32); on
    CPU G is consumed (inverted in place; a float32 G becomes B itself, with no copy)."""
    return gram_inverse(gram, device, ease_form=True)


def gram_inverse(gram: np.ndarray, device: str = "cpu", ease_form: bool = False) -> np.ndarray:
    """P = G^-1 (float32), solved in G's float type; on CPU G is consumed (inverted in place).
    `ease_form`: EASE's B = -P / diag(P) with a zero diagonal instead of P."""
    if device != "cpu":
        return gram_inverse_on(gram, device, ease_form)
    invert_in_place(gram)
    if ease_form:
        gram /= -np.diag(gram).copy()  # broadcasts over rows: column j divided by -P[j, j]
        np.fill_diagonal(gram, 0.0)
    return gram.astype(np.float32, copy=False)


def gram_inverse_on(gram: np.ndarray, device: str, ease_form: bool = False) -> np.ndarray:
    """The same with the matrix uploaded to a torch device in G's float type (G is left as it was)."""
    tensor = torch.from_numpy(gram).to(device=device, copy=True)
    invert_in_place(tensor)
    if ease_form:
        tensor /= -torch.diagonal(tensor).clone()
        tensor.fill_diagonal_(0.0)
    return tensor.to(torch.float32).cpu().numpy()


def ease_weights_on(gram: np.ndarray, device: str) -> np.ndarray:
    """ease_weights on a torch device (G is left as it was)."""
    return gram_inverse_on(gram, device, ease_form=True)


class EASE(Recommender):
    name = "ease"
    deterministic = True  # the same fit for every seed: nothing to bag
    iterative = False  # closed form: no epochs
    Config = EASEConfig

    def fit(self, train, side=None, valid=None, on_epoch=None):
        # No epochs and no early stopping: valid and on_epoch have nothing to act on.
        rows = check_rows(train, None, "train")
        self.n_items = rows.shape[1]
        item_users = np.bincount(rows.indices, minlength=self.n_items)
        self.modelled = np.flatnonzero(item_users >= self.config.min_item_users)
        if len(self.modelled) == self.n_items:
            self.modelled = None  # every item: no column selection at scoring time
        fitted_rows = rows if self.modelled is None else rows[:, self.modelled]
        self.weights, dtype = solve(
            lambda dtype: gram_matrix(fitted_rows, self.config.l2, dtype, self.config.dropout), ease_weights,
            self.config.precision, self.device,
            lambda dtype: check_fit_memory(item_users, self.config.min_item_users, self.device, dtype))
        self._weights_on_device = None  # uploaded on the first GPU scoring call
        n_fitted = self.weights.shape[0]
        self.summary.update({"items": self.n_items, "items_fitted": n_fitted, "l2": self.config.l2,
                             "dropout": self.config.dropout,
                             "solve_precision": np.dtype(dtype).name,
                             "item_item_mb": round(self.weights.nbytes / 2**20, 2),
                             "fit_peak_mb": round(fit_bytes(n_fitted, dtype) / 2**20, 2)})
        return self

    def scoring_rows(self, inputs: Interactions) -> sp.csr_matrix:
        """The input rows EASE multiplies by B (variants weight them, e.g. by recency)."""
        return inputs.rows

    def _raw_scores(self, inputs: Interactions) -> np.ndarray:
        rows = self.scoring_rows(inputs).astype(np.float32)
        if self.modelled is not None:
            rows = rows[:, self.modelled]
        if self.device == "cuda":
            scores = self._raw_scores_torch(rows)
        else:
            scores = np.asarray(rows @ self.weights, dtype=np.float32)
        if self.modelled is None:
            return scores
        full = np.zeros((scores.shape[0], self.n_items), dtype=np.float32)
        full[:, self.modelled] = scores
        return full

    def _raw_scores_torch(self, rows: sp.csr_matrix) -> np.ndarray:
        if self._weights_on_device is None:
            self._weights_on_device = torch.from_numpy(self.weights).to(self.device)
        coo = rows.tocoo()
        # COO, not CSR: CSR tensors are still "beta" in torch and warn on every chunk.
        x = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)),
                                    torch.from_numpy(coo.data), size=rows.shape, device=self.device,
                                    check_invariants=False)
        return (x @ self._weights_on_device).cpu().numpy()
