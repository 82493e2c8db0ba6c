"""Multi-DAE plus an embedding of the user's side profile (mean genres, titles, years ... of their items).

The profile is computed per batch from the batch's own input rows (an embedding-bag mean
over the item feature table kept on the device), so fold-in users get one from their
input rows alone, exactly like the collaborative part.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys_kit.config import check_at_least, check_fraction, check_widths
from recsys_kit.errors import DataError
from recsys_kit.data.features import SIDE_GROUPS, build_item_features, split_side_input
from recsys_kit.models.autoencoder import TorchRecommender
from recsys_kit.models.multidae import MultiDAENet
from recsys_kit.models.train import SparseBatch


@dataclass(frozen=True)
class MultiDAESideConfig:
    name: str = "multidae_side"
    hidden_dims: tuple[int, ...] = (600, 200)  # encoder widths; the last is the bottleneck
    dropout: float = 0.5  # input dropout: the denoising
    side_groups: tuple[str, ...] = SIDE_GROUPS  # which side files feed the profile
    side_dim: int = 64  # width of the learned profile embedding concatenated after layer 1
    title_dim: int = 32  # TF-IDF -> truncated SVD width for title tokens
    year_bucket: int = 5  # years per bucket
    min_count: int = 2  # director/writer values on fewer items share one 'rare' column

    def __post_init__(self):
        unknown = [g for g in self.side_groups if g not in SIDE_GROUPS]
        if unknown:
            raise DataError(f"[model] side_groups: unknown group(s) {unknown}; choose from {list(SIDE_GROUPS)}")
        check_widths("model", "hidden_dims", self.hidden_dims)
        check_fraction("model", "dropout", self.dropout)
        for key in ("side_dim", "title_dim", "year_bucket", "min_count"):
            check_at_least("model", key, getattr(self, key), 1)


class MultiDAESideNet(MultiDAENet):
    """items -> h1 (+ tanh(Linear(profile))) -> ... -> items."""

    def __init__(self, n_items: int, hidden_dims: tuple[int, ...], dropout: float,
                 item_side: torch.Tensor, side_dim: int):
        super().__init__(n_items, hidden_dims, dropout, extra_input=side_dim)
        # A buffer, not a parameter: it moves with .to(device) and is saved in the state_dict.
        self.register_buffer("item_side", item_side)
        self.side = nn.Linear(item_side.shape[1], side_dim)
        nn.init.xavier_uniform_(self.side.weight)
        nn.init.zeros_(self.side.bias)
        if len(hidden_dims) == 1:
            # No encoder layer exists to take [h1, side]: the concatenation is the latent, so
            # the decoder's first layer takes it instead.
            first = nn.Linear(hidden_dims[0] + side_dim, self.decoder[0].out_features)
            nn.init.xavier_uniform_(first.weight)
            nn.init.normal_(first.bias, std=0.001)
            self.decoder[0] = first

    def extra(self, batch: SparseBatch) -> torch.Tensor:
        profile = nn.functional.embedding_bag(batch.cols, self.item_side, batch.offsets, mode="mean")
        return torch.tanh(self.side(profile))


class MultiDAESide(TorchRecommender):
    name = "multidae_side"
    Config = MultiDAESideConfig

    def build_net(self, n_items, side):
        config = self.config
        matrices, labels = split_side_input(side)
        side = build_item_features(matrices, labels, groups=tuple(config.side_groups), n_items=n_items,
                                   title_dim=config.title_dim, year_bucket=config.year_bucket,
                                   min_count=config.min_count, seed=self.seed)
        self.summary["side_groups"] = side.report
        if side.width == 0:
            self.summary["side_info"] = (f"none: no side files for groups {list(config.side_groups)}; "
                                         f"this variant adds nothing over multidae")
            return MultiDAENet(n_items, tuple(config.hidden_dims), config.dropout)
        used = ", ".join(f"{name} {info['width']}" for name, info in side.report["used"].items())
        missing = f"; missing: {', '.join(side.report['missing'])}" if side.report["missing"] else ""
        self.summary["side_info"] = f"{side.width} feature columns ({used}){missing}"
        table = torch.from_numpy(side.matrix.toarray())  # items x F: smaller than the input layer
        return MultiDAESideNet(n_items, tuple(config.hidden_dims), config.dropout, table, config.side_dim)
