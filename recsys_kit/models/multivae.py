"""Multi-VAE (Liang et al. 2018): the Multi-DAE encoder with a Gaussian latent and annealed KL.

Training samples z = mu + sigma * eps; prediction decodes mu, so scores are deterministic.
The KL weight grows linearly with training progress measured in epochs, so the anneal
length scales with the data (steps per epoch) instead of a fixed number of steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys_kit.config import check_at_least, check_fraction, check_widths
from recsys_kit.errors import DataError
from recsys_kit.models.autoencoder import TorchRecommender
from recsys_kit.models.multidae import MultiDAENet
from recsys_kit.models.train import SparseBatch, multinomial_nll


@dataclass(frozen=True)
class MultiVAEConfig:
    name: str = "multivae"
    hidden_dims: tuple[int, ...] = (600, 200)  # encoder widths; the last is the latent size
    dropout: float = 0.5  # input dropout
    kl_cap: float = 0.2  # the KL weight (beta) stops growing here
    anneal_epochs: int = 20  # epochs over which beta rises linearly from 0 to kl_cap

    def __post_init__(self):
        check_widths("model", "hidden_dims", self.hidden_dims)
        check_fraction("model", "dropout", self.dropout)
        check_at_least("model", "kl_cap", self.kl_cap, 0)
        if self.kl_cap == float("inf"):
            raise DataError(f"[model] kl_cap must be finite, got {self.kl_cap}")
        check_at_least("model", "anneal_epochs", self.anneal_epochs, 0)


def kl_weight(progress: float, kl_cap: float, anneal_epochs: int) -> float:
    """beta after `progress` epochs (fractional): linear from 0, exactly kl_cap from anneal_epochs on."""
    if anneal_epochs <= 0:
        return float(kl_cap)
    return float(kl_cap) * min(1.0, max(0.0, progress) / anneal_epochs)


class MultiVAENet(MultiDAENet):
    """items -> h1 -> ... -> (mu, logvar) of width h_last -> ... -> items."""

    def __init__(self, n_items: int, hidden_dims: tuple[int, ...], dropout: float, kl_cap: float,
                 anneal_epochs: int):
        super().__init__(n_items, hidden_dims, dropout)
        self.kl_cap, self.anneal_epochs = kl_cap, anneal_epochs
        self.last_kl_weight = 0.0
        latent = hidden_dims[-1]
        if len(hidden_dims) > 1:
            # The DAE's last (tanh) encoder layer becomes the linear mean head.
            self.mu = self.encoder[-1]
            self.encoder = self.encoder[:-1]
            before = hidden_dims[-2]
        else:
            # One width: the first layer is the hidden layer and the latent has the same width.
            self.mu = self._linear(hidden_dims[0], latent)
            before = hidden_dims[0]
        self.logvar = self._linear(before, latent)

    @staticmethod
    def _linear(width_in: int, width_out: int) -> nn.Linear:
        layer = nn.Linear(width_in, width_out)
        nn.init.xavier_uniform_(layer.weight)
        nn.init.normal_(layer.bias, std=0.001)
        return layer

    def gaussian(self, batch: SparseBatch) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.tanh(self.input(batch, self.dropout))
        for layer in self.encoder:
            hidden = torch.tanh(layer(hidden))
        return self.mu(hidden), self.logvar(hidden)

    def logits(self, batch: SparseBatch) -> torch.Tensor:
        mu, _ = self.gaussian(batch)
        return self.decode(mu)

    def loss(self, batch: SparseBatch, progress: float) -> torch.Tensor:
        mu, logvar = self.gaussian(batch)
        latent = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        nll = multinomial_nll(self.decode(latent), batch)
        kl = 0.5 * (torch.exp(logvar) + mu ** 2 - 1.0 - logvar).sum(dim=1).mean()
        self.last_kl_weight = kl_weight(progress, self.kl_cap, self.anneal_epochs)
        return nll + self.last_kl_weight * kl


class MultiVAE(TorchRecommender):
    name = "multivae"
    Config = MultiVAEConfig

    def build_net(self, n_items, side):
        config = self.config
        return MultiVAENet(n_items, tuple(config.hidden_dims), config.dropout, config.kl_cap,
                           config.anneal_epochs)

    def fit(self, train, side=None, valid=None, on_epoch=None):
        super().fit(train, side, valid=valid, on_epoch=on_epoch)
        self.summary["kl_weight_final"] = self.net.last_kl_weight
        return self
