"""EASE scored on recency-weighted input: the same fit, recent items weigh more when scoring.

B is fitted exactly as EASE fits it (order plays no part in X^T X). At scoring time each input
item is weighted by how recent it is in the user's own sequence,

    w(r) = floor + (1 - floor) * decay^r        r = 0 for the latest item, 1 for the one before...

so the latest item weighs 1 and old ones fall to `floor`, not to 0: the contest hides random
earlier items too, and those are found through the whole history. decay = 1 is plain EASE.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys_kit.models.ease import EASE, EASEConfig
from recsys_kit.models.transition import check_unit_interval
from recsys_kit.data.interactions import Interactions


@dataclass(frozen=True)
class EASERecencyConfig(EASEConfig):
    name: str = "ease_recency"
    decay: float = 0.9  # per step back from the latest item; 1 = no weighting (plain EASE)
    floor: float = 0.6  # the weight old items fall to

    def __post_init__(self):
        super().__post_init__()
        check_unit_interval("decay", self.decay)
        check_unit_interval("floor", self.floor, low_open=False)


def recency_weights(recency: np.ndarray, decay: float, floor: float) -> np.ndarray:
    """floor + (1 - floor) decay^r, written as 1 - (1 - floor)(1 - decay^r) so that decay = 1
    gives weights of exactly 1 (and so exactly EASE's scores)."""
    return 1.0 - (1.0 - floor) * (1.0 - np.power(decay, recency, dtype=np.float64))


class EASERecency(EASE):
    name = "ease_recency"
    Config = EASERecencyConfig

    def fit(self, train, side=None, valid=None, on_epoch=None):
        super().fit(train, side, valid, on_epoch)
        self.summary.update({"decay": self.config.decay, "floor": self.config.floor})
        return self

    def scoring_rows(self, inputs: Interactions) -> sp.csr_matrix:
        weights = recency_weights(inputs.recency(), self.config.decay, self.config.floor)
        weighted = inputs.rows.astype(np.float32, copy=True)  # never touch the caller's rows
        weighted.data *= weights
        return weighted
