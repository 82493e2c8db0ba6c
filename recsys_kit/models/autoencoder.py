"""Fit/score shared by the torch autoencoders; each model only builds its network."""
from __future__ import annotations

import numpy as np
import torch

from recsys_kit.models.base import Recommender, check_rows
from recsys_kit.train import fit_autoencoder, predict


class TorchRecommender(Recommender):
    """Subclasses implement `build_net(n_items, features) -> nn.Module` with loss() and logits()."""

    def build_net(self, n_items: int, features):
        raise TypeError(f"{type(self).__name__} must define build_net")

    def fit(self, train_rows, features=None, valid=None, on_epoch=None):
        rows = check_rows(train_rows, None, "train_rows")
        self.n_items = rows.shape[1]
        if valid is not None:
            valid = (check_rows(valid[0], self.n_items, "valid input"),
                     check_rows(valid[1], self.n_items, "valid target"))
        torch.manual_seed(self.seed)  # the same initial weights for the same seed
        self.net = self.build_net(self.n_items, features or {})
        self.summary.update(fit_autoencoder(self.net, rows, self.train, self.device, self.seed,
                                            valid=valid, on_epoch=on_epoch))
        self.summary["parameters"] = int(sum(p.numel() for p in self.net.parameters()))
        return self

    def _raw_scores(self, input_rows) -> np.ndarray:
        return predict(self.net, input_rows, self.device)

    def state(self) -> dict:
        """Weights plus the config that built them (nanoGPT keeps its config in the checkpoint)."""
        return {"model": self.name, "config": self.config.__dict__, "state_dict": self.net.state_dict()}
