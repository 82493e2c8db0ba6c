"""RecVAE (Shenbin et al. 2020): Multi-VAE with a deeper encoder, a composite prior and alternating updates.

- Encoder: dropout on the L2-normalised input, `layers` dense layers of one width, each
  LayerNorm(swish(W h + the sum of every earlier layer's output)); linear mu and logvar heads.
- Decoder: one linear layer from the latent to the items; multinomial log-likelihood.
- Prior: per latent dimension a mixture of N(0, 1), the previous epoch's encoder posterior
  q_old(z|x) (a frozen copy taken as each epoch starts) and a wide N(0, e^10).
- KL weight per user: gamma times the user's number of items (heavy users are trusted more).
- Each epoch: `encoder_passes` sweeps updating the encoder alone (decoder frozen), then
  `decoder_passes` sweeps updating the decoder alone (encoder frozen, no dropout), each part
  with its own Adam: the loop's `Phase` hook (train.fit_net), no special case in the loop.
Prediction decodes mu without dropout, so scores are deterministic.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from recsys_kit.config import check_at_least, check_fraction, check_positive
from recsys_kit.errors import DataError
from recsys_kit.models.autoencoder import TorchRecommender
from recsys_kit.models.train import Phase, SparseBatch, SparseInput, multinomial_nll

WIDE_LOGVAR = 10.0  # the wide prior component: N(0, e^10), as in the paper's code
LAYER_NORM_EPS = 0.1  # the paper's code; a larger eps than torch's default keeps small batches stable


@dataclass(frozen=True)
class RecVAEConfig:
    name: str = "recvae"
    hidden_dim: int = 600  # width of every encoder layer
    latent_dim: int = 200
    layers: int = 5  # encoder dense layers (the paper: 5)
    dropout: float = 0.5  # input dropout in the encoder passes (none in the decoder passes)
    gamma: float = 0.005  # KL weight per item of the user: beta_u = gamma * |items of u|
    encoder_passes: int = 3  # sweeps over the training users per epoch updating the encoder alone
    decoder_passes: int = 1  # then sweeps updating the decoder alone
    # Prior mixture: standard normal, previous epoch's posterior, wide normal (the paper's 3/20, 3/4, 1/10).
    mixture_weights: tuple[float, ...] = (0.15, 0.75, 0.1)

    def __post_init__(self):
        for key in ("hidden_dim", "latent_dim", "layers", "encoder_passes", "decoder_passes"):
            check_at_least("model", key, getattr(self, key), 1)
        check_fraction("model", "dropout", self.dropout)
        check_at_least("model", "gamma", self.gamma, 0)
        if not math.isfinite(self.gamma):
            raise DataError(f"[model] gamma must be finite, got {self.gamma}")
        weights = tuple(self.mixture_weights)
        if len(weights) != 3:
            raise DataError(f"[model] mixture_weights must list 3 weights (standard, previous posterior, wide), "
                            f"got {list(weights)}")
        for weight in weights:
            check_positive("model", "mixture_weights", weight)
        if abs(sum(weights) - 1.0) > 1e-6:
            raise DataError(f"[model] mixture_weights must sum to 1, got {list(weights)} (sum {sum(weights)})")


def log_normal(z: torch.Tensor, mu, logvar) -> torch.Tensor:
    """Elementwise log N(z; mu, e^logvar)."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return -0.5 * (logvar + math.log(2 * math.pi) + (z - mu) ** 2 / torch.exp(logvar))


def items_per_user(batch: SparseBatch) -> torch.Tensor:
    """|items of u| for each row of the batch, from the CSR offsets (exact, no atomics on a GPU)."""
    ends = torch.cat([batch.offsets[1:], batch.offsets.new_tensor([batch.cols.numel()])])
    return (ends - batch.offsets).to(torch.float32)


class RecVAEEncoder(nn.Module):
    def __init__(self, n_items: int, hidden_dim: int, latent_dim: int, layers: int):
        super().__init__()
        self.input = SparseInput(n_items, hidden_dim)
        self.dense = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(layers - 1))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim, eps=LAYER_NORM_EPS) for _ in range(layers))
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, batch: SparseBatch, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.norms[0](F.silu(self.input(batch, dropout)))
        earlier = hidden  # the sum of every earlier layer's output: the residual-style connections
        for layer, norm in zip(self.dense, self.norms[1:]):
            hidden = norm(F.silu(layer(hidden) + earlier))
            earlier = earlier + hidden
        return self.mu(hidden), self.logvar(hidden)


class RecVAENet(nn.Module):
    def __init__(self, n_items: int, config: RecVAEConfig):
        super().__init__()
        self.config = config
        self.encoder = RecVAEEncoder(n_items, config.hidden_dim, config.latent_dim, config.layers)
        self.decoder = nn.Linear(config.latent_dim, n_items)
        self.log_mixture = [math.log(w) for w in config.mixture_weights]
        self.remember_encoder()

    def remember_encoder(self) -> None:
        """Freeze a copy of the encoder as the prior's q_old. Kept outside the module tree (set through
        __dict__): it is never trained, never saved, and not counted as a parameter."""
        previous = copy.deepcopy(self.encoder).requires_grad_(False).eval()
        self.__dict__["previous_encoder"] = previous

    def log_prior(self, batch: SparseBatch, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            old_mu, old_logvar = self.previous_encoder(batch, 0.0)
        standard, previous, wide = self.log_mixture
        components = torch.stack([log_normal(z, 0.0, 0.0) + standard,
                                  log_normal(z, old_mu, old_logvar) + previous,
                                  log_normal(z, 0.0, WIDE_LOGVAR) + wide], dim=-1)
        return torch.logsumexp(components, dim=-1)

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def encoder_loss(self, batch: SparseBatch, progress: float) -> torch.Tensor:
        """Negative ELBO; the decoder's weights enter as constants (it is frozen in this phase, so
        their gradients would only be computed and thrown away)."""
        mu, logvar = self.encoder(batch, self.config.dropout)
        z = self.sample(mu, logvar)
        logits = F.linear(z, self.decoder.weight.detach(), self.decoder.bias.detach())
        kl = (log_normal(z, mu, logvar) - self.log_prior(batch, z)).sum(dim=1)  # one-sample estimate
        beta = self.config.gamma * items_per_user(batch)
        return multinomial_nll(logits, batch) + (beta * kl).mean()

    def decoder_loss(self, batch: SparseBatch, progress: float) -> torch.Tensor:
        """The likelihood alone (the KL term has no decoder gradient); z from the undropped input."""
        with torch.no_grad():
            z = self.sample(*self.encoder(batch, 0.0))
        return multinomial_nll(self.decoder(z), batch)

    def phases(self) -> list[Phase]:
        return [Phase("encoder", list(self.encoder.parameters()), self.encoder_loss, self.config.encoder_passes,
                      start=self.remember_encoder),
                Phase("decoder", list(self.decoder.parameters()), self.decoder_loss, self.config.decoder_passes)]

    def logits(self, batch: SparseBatch) -> torch.Tensor:
        mu, _ = self.encoder(batch, 0.0)
        return self.decoder(mu)


class RecVAE(TorchRecommender):
    name = "recvae"
    Config = RecVAEConfig

    def build_net(self, n_items, side):
        return RecVAENet(n_items, self.config)
