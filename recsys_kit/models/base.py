"""One model interface (as benfred/implicit's RecommenderBase), CSR checked at the door."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np
import scipy.sparse as sp

from recsys_kit.config import TrainConfig
from recsys_kit.protocol.ranking import mask_seen
from recsys_kit.data.interactions import Interactions, ItemSide

EpochCallback = Callable[[dict], None]
Validation = tuple[Interactions, sp.csr_matrix]  # validation users' inputs and their hidden targets


def check_rows(rows, n_items: int | None, what: str = "rows") -> sp.csr_matrix:
    """The CSR rows of an Interactions or of a sparse matrix, checked against the fitted width."""
    return Interactions.of(rows, n_items, what).rows


def check_valid(valid, n_items: int) -> Validation | None:
    if valid is None:
        return None
    return Interactions.of(valid[0], n_items, "valid input"), check_rows(valid[1], n_items, "valid target")


class Recommender(ABC):
    """fit on users' input rows; score any users from their input rows (fold-in)."""

    name: str = "base"
    Config: type
    deterministic: bool = False  # True when fitting draws nothing at random (refits are then not bagged)
    iterative: bool = True  # fit reports epochs through on_epoch; False for closed forms (the CLI shows a spinner)

    def __init__(self, config, train: TrainConfig | None = None, seed: int = 0, device: str = "cpu"):
        self.config = config
        self.train = train or TrainConfig()
        self.seed = seed
        self.device = device
        self.n_items: int | None = None
        self.summary: dict = {}  # what the run summary should say about this fit

    @abstractmethod
    def fit(self, train: Interactions, side: ItemSide | None = None, valid: Validation | None = None,
            on_epoch: EpochCallback | None = None) -> "Recommender":
        """train: the fitting users' rows (a CSR matrix is taken as Interactions without times);
        side: item side information; valid: (input Interactions, target rows) for early stopping."""

    @abstractmethod
    def _raw_scores(self, inputs: Interactions) -> np.ndarray:
        """float32 users x items, before masking."""

    def score(self, inputs: Interactions) -> np.ndarray:
        """float32 scores of users from their input rows alone, every seen item at -inf."""
        inputs = Interactions.of(inputs, self.n_items, "inputs")
        scores = np.asarray(self._raw_scores(inputs), dtype=np.float32)
        return mask_seen(scores, inputs.rows)
