"""One model interface (as benfred/implicit's RecommenderBase), CSR checked at the door."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np
import scipy.sparse as sp

from recsys_kit.config import TrainConfig
from recsys_kit.scores import mask_seen

EpochCallback = Callable[[dict], None]


def check_rows(rows, n_items: int | None, what: str = "rows") -> sp.csr_matrix:
    if not sp.issparse(rows):
        raise TypeError(f"{what} must be a scipy sparse CSR matrix, got {type(rows).__name__}")
    rows = rows.tocsr()
    if n_items is not None and rows.shape[1] != n_items:
        raise ValueError(f"{what} has {rows.shape[1]} item columns, the model was fitted on {n_items}")
    return rows


class Recommender(ABC):
    """fit on users' input rows; score any users from their input rows (fold-in)."""

    name: str = "base"
    Config: type
    deterministic: bool = False  # True when fitting draws nothing at random (refits are then not bagged)

    def __init__(self, config, train: TrainConfig | None = None, seed: int = 0, device: str = "cpu"):
        self.config = config
        self.train = train or TrainConfig()
        self.seed = seed
        self.device = device
        self.n_items: int | None = None
        self.summary: dict = {}  # what the run summary should say about this fit

    @abstractmethod
    def fit(self, train_rows: sp.csr_matrix, features: dict[str, sp.csr_matrix] | None = None,
            valid: tuple[sp.csr_matrix, sp.csr_matrix] | None = None,
            on_epoch: EpochCallback | None = None) -> "Recommender":
        """train_rows: users x items CSR; valid: (input rows, target rows) for early stopping."""

    @abstractmethod
    def _raw_scores(self, input_rows: sp.csr_matrix) -> np.ndarray:
        """float32 users x items, before masking."""

    def score(self, input_rows: sp.csr_matrix) -> np.ndarray:
        """float32 scores with every seen item at -inf."""
        rows = check_rows(input_rows, self.n_items, "input_rows")
        scores = np.asarray(self._raw_scores(rows), dtype=np.float32)
        return mask_seen(scores, rows)
