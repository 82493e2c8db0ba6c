"""Fit/score shared by the torch autoencoders; each model only builds its network."""
from __future__ import annotations

import numpy as np
import torch

from recsys_kit.models.base import Recommender, check_rows, check_valid
from recsys_kit.data.interactions import ItemSide
from recsys_kit.models.train import fit_autoencoder, predict


class TorchRecommender(Recommender):
    """Subclasses implement `build_net(n_items, side) -> nn.Module` with loss() and logits()."""

    def build_net(self, n_items: int, side: ItemSide):
        raise TypeError(f"{type(self).__name__} must define build_net")

    def fit(self, train, side=None, valid=None, on_epoch=None):
        rows = check_rows(train, None, "train")
        self.n_items = rows.shape[1]
        valid = check_valid(valid, self.n_items)
        if valid is not None:
            valid = (valid[0].rows, valid[1])  # autoencoders read a user as a bag of items
        torch.manual_seed(self.seed)  # the same initial weights for the same seed
        self.net = self.build_net(self.n_items, side or ItemSide())
        self.summary.update(fit_autoencoder(self.net, rows, self.train, self.device, self.seed,
                                            valid=valid, on_epoch=on_epoch))
        self.summary["parameters"] = int(sum(p.numel() for p in self.net.parameters()))
        return self

    def _raw_scores(self, inputs) -> np.ndarray:
        return predict(self.net, inputs.rows, self.device, precision=self.train.precision)

    def state(self) -> dict:
        """Weights plus the config that built them (nanoGPT keeps its config in the checkpoint)."""
        return {"model": self.name, "config": self.config.__dict__, "state_dict": self.net.state_dict()}
