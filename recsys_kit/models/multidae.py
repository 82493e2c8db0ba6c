"""Multi-DAE (Liang et al. 2018): denoising autoencoder with a multinomial likelihood."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys_kit.config import check_fraction, check_widths
from recsys_kit.models.autoencoder import TorchRecommender
from recsys_kit.models.train import SparseBatch, SparseInput, multinomial_nll


@dataclass(frozen=True)
class MultiDAEConfig:
    name: str = "multidae"
    hidden_dims: tuple[int, ...] = (600, 200)  # encoder widths; the last is the bottleneck
    dropout: float = 0.5  # input dropout: the denoising

    def __post_init__(self):
        check_widths("model", "hidden_dims", self.hidden_dims)
        check_fraction("model", "dropout", self.dropout)  # 1 would zero every input: NaN scores


class MultiDAENet(nn.Module):
    """items -> 600 -> 200 -> 600 -> items, tanh between layers."""

    def __init__(self, n_items: int, hidden_dims: tuple[int, ...], dropout: float, extra_input: int = 0):
        super().__init__()
        self.dropout = dropout
        self.input = SparseInput(n_items, hidden_dims[0])
        widths = list(hidden_dims)
        encoder_in = [widths[0] + extra_input] + widths[1:-1]
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(encoder_in, widths[1:]))
        decoder_widths = widths[::-1] + [n_items]
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(decoder_widths[:-1], decoder_widths[1:]))
        for layer in [*self.encoder, *self.decoder]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)

    def extra(self, batch: SparseBatch) -> torch.Tensor | None:
        """Hook for side information concatenated after the first layer."""
        return None

    def encode(self, batch: SparseBatch) -> torch.Tensor:
        hidden = torch.tanh(self.input(batch, self.dropout))
        extra = self.extra(batch)
        if extra is not None:
            hidden = torch.cat([hidden, extra], dim=1)
        for layer in self.encoder:
            hidden = torch.tanh(layer(hidden))
        return hidden

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        hidden = latent
        for index, layer in enumerate(self.decoder):
            hidden = layer(hidden)
            if index < len(self.decoder) - 1:
                hidden = torch.tanh(hidden)
        return hidden

    def logits(self, batch: SparseBatch) -> torch.Tensor:
        return self.decode(self.encode(batch))

    def loss(self, batch: SparseBatch, progress: float) -> torch.Tensor:
        return multinomial_nll(self.logits(batch), batch)


class MultiDAE(TorchRecommender):
    name = "multidae"
    Config = MultiDAEConfig

    def build_net(self, n_items, side):
        return MultiDAENet(n_items, tuple(self.config.hidden_dims), self.config.dropout)
