"""Most-popular items: the baseline every model must beat."""
from dataclasses import dataclass

import numpy as np

from recsys_kit.models.base import Recommender, check_rows


@dataclass(frozen=True)
class PopularityConfig:
    name: str = "popularity"


class Popularity(Recommender):
    name = "popularity"
    deterministic = True  # the same fit for every seed: nothing to bag
    iterative = False  # counting: no epochs
    Config = PopularityConfig

    def fit(self, train, side=None, valid=None, on_epoch=None):
        rows = check_rows(train, None, "train")
        self.n_items = rows.shape[1]
        self.item_scores = np.bincount(rows.indices, minlength=self.n_items).astype(np.float32)
        return self

    def _raw_scores(self, inputs):
        return np.broadcast_to(self.item_scores, inputs.shape).copy()
