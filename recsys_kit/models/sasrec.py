"""SASRec (Kang & McAuley 2018): causal self-attention over each user's latest items -> the next item.

Trained with the fix that let SASRec beat BERT4Rec, cross-entropy at every position instead of
one negative per positive (Klenitskiy & Vasilev 2023): over the whole catalogue (`loss = "softmax"`,
the default) or over the target and many sampled negatives (`"sampled"`), or those negatives in
gSASRec's calibrated loss (`"gbce"`, Petrov & Macdonald 2023). Input and output item embeddings
are tied. A user's score is the next-item logits after their whole
(truncated) input sequence, so fold-in users need only their own inputs.

Sequences are right-aligned (oldest item first, padding after the latest), so plain causal
attention never lets a real position see padding and needs no mask tensor; positions are learned
and counted back from the latest item, so "the latest item" is the same position for every user.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from recsys_kit.config import check_at_least, check_fraction
from recsys_kit.errors import DataError
from recsys_kit.models.base import Recommender, check_valid
from recsys_kit.data.interactions import Interactions
from recsys_kit.models.train import fit_net, predict

LOSSES = ("softmax", "sampled", "gbce")


@dataclass(frozen=True)
class SASRecConfig:
    name: str = "sasrec"
    # The latest items of a user that the model reads. 50, not SASRec's 200 for MovieLens: at contest
    # scale the full softmax over 200 positions a user costs 4x the CPU time per epoch.
    max_len: int = 50
    dim: int = 64  # item, position and hidden width
    blocks: int = 2  # transformer blocks
    heads: int = 2  # attention heads; dim must divide by it
    dropout: float = 0.2  # on the embeddings and every residual branch
    # softmax: cross-entropy over every item (the best: Beauty next item HR@10 0.089 vs sampled 0.075)
    # | sampled: cross-entropy over the target and `negatives` uniform negatives (cheaper per position
    # for big catalogues) | gbce: those negatives in gSASRec's calibrated BCE (learnt slowest here)
    loss: str = "softmax"
    negatives: int = 256  # sampled, gbce: uniform negatives per user, shared by the user's positions
    gbce_t: float = 0.75  # gbce calibration: 0 = plain BCE, 1 = fully calibrated to the softmax

    def __post_init__(self):
        for key in ("max_len", "dim", "blocks", "heads", "negatives"):
            check_at_least("model", key, getattr(self, key), 1)
        if self.dim % self.heads:
            raise DataError(f"[model] dim ({self.dim}) must be a multiple of heads ({self.heads})")
        check_fraction("model", "dropout", self.dropout)
        if self.loss not in LOSSES:
            raise DataError(f"[model] loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0 <= self.gbce_t <= 1:
            raise DataError(f"[model] gbce_t must be in [0, 1], got {self.gbce_t}")


# ----------------------------------------------------------------------------- batches

@dataclass
class SequenceBatch:
    items: torch.Tensor  # int64 users x L: oldest first, padded after the latest with n_items
    lengths: torch.Tensor  # int64 users: real items in each row
    targets: torch.Tensor | None  # int64 users x L: the item after each position (pad where none)


def right_aligned(sequences: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded rows (latest item last) rotated so each row starts with its oldest item."""
    lengths = (sequences != pad).sum(axis=1)
    width = sequences.shape[1]
    index = (np.arange(width)[None, :] + (width - lengths)[:, None]) % width
    return np.take_along_axis(sequences, index, axis=1), lengths


class SequenceBatches:
    """The `Batches` of recsys_kit.train for SASRec: each user's latest items in time order.

    for_training: windows one item longer, split into inputs and next-item targets; users with
    fewer than two items have no target and take no step. Otherwise each user's last max_len
    items, to score what comes after them.
    """

    def __init__(self, inputs: Interactions, max_len: int, for_training: bool):
        self.rows = inputs.rows
        self.pad = inputs.n_items
        self.for_training = for_training
        window = inputs.sequences(max_len + for_training, self.pad)
        self.items, self.lengths = right_aligned(window, self.pad)
        self.users = np.flatnonzero(self.lengths >= 1 + for_training)

    def batch(self, users: np.ndarray, device: str) -> SequenceBatch:
        items, lengths = self.items[users], self.lengths[users]
        if self.for_training:
            items, targets, lengths = items[:, :-1], items[:, 1:], lengths - 1
        width = max(int(lengths.max(initial=0)), 1)  # columns past every row's end are padding only

        def tensor(array):
            return torch.from_numpy(np.ascontiguousarray(array[:, :width])).to(device)

        return SequenceBatch(tensor(items), torch.from_numpy(lengths).to(device),
                             tensor(targets) if self.for_training else None)


# ----------------------------------------------------------------------------- network

class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.heads = heads
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        users, length, dim = x.shape
        q, k, v = (t.view(users, length, self.heads, dim // self.heads).transpose(1, 2)
                   for t in self.qkv(x).split(dim, dim=2))
        # No dropout on the attention weights: it would make SDPA materialise users x heads x L x L
        # and draw a mask over it (a quarter of a CPU step at L = 200); the residual dropout stays.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.residual_dropout(self.proj(y.transpose(1, 2).reshape(users, length, dim)))


class Block(nn.Module):
    """Pre-norm transformer block; the feed-forward is dim wide, as in SASRec."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, heads, dropout)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.feed_forward_norm(x))


class SASRecNet(nn.Module):
    def __init__(self, n_items: int, config: SASRecConfig):
        super().__init__()
        self.n_items, self.config = n_items, config
        self.item = nn.Embedding(n_items + 1, config.dim, padding_idx=n_items)  # row n_items: padding
        self.position = nn.Embedding(config.max_len, config.dim)  # 0 = the latest item
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config.dim, config.heads, config.dropout) for _ in range(config.blocks))
        self.norm = nn.LayerNorm(config.dim)
        for module in self.modules():  # nanoGPT's init
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item.weight[n_items].zero_()

    def hidden(self, batch: SequenceBatch) -> torch.Tensor:
        """users x L x dim: the state after each position, read by causal attention."""
        width = batch.items.shape[1]
        recency = (batch.lengths[:, None] - 1 - torch.arange(width, device=batch.items.device)).clamp(min=0)
        x = self.embedding_dropout(self.item(batch.items) + self.position(recency))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def loss(self, batch: SequenceBatch, progress: float) -> torch.Tensor:
        hidden, targets = self.hidden(batch), batch.targets
        real = targets != self.n_items
        if self.config.loss == "softmax":
            return F.cross_entropy(hidden[real] @ self.item.weight[:self.n_items].T, targets[real])
        # k uniform negatives per user, shared by the user's positions: one batched matmul.
        negatives = torch.randint(self.n_items, (hidden.shape[0], self.config.negatives), device=hidden.device)
        positive = (hidden * self.item(targets)).sum(dim=2)[real].float()
        negative = (hidden @ self.item(negatives).transpose(1, 2))[real].float()
        if self.config.loss == "sampled":  # softmax over the target and its negatives
            logits = torch.cat([positive[:, None], negative], dim=1)
            return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.int64, device=logits.device))
        # gSASRec: -beta log sigmoid(s+) - sum log(1 - sigmoid(s-)); beta undoes the overconfidence
        # that k of n-1 negatives teaches, so the scores rank as a full softmax's would.
        alpha = self.config.negatives / max(self.n_items - 1, 1)
        beta = alpha * (self.config.gbce_t * (1 - 1 / alpha) + 1 / alpha)
        return (beta * F.softplus(-positive) + F.softplus(negative).sum(dim=1)).mean()

    def logits(self, batch: SequenceBatch) -> torch.Tensor:
        hidden = self.hidden(batch)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), (batch.lengths - 1).clamp(min=0)]
        # fp32 even under autocast: bf16 logits would tie many items near the top 10. One row per
        # user, so this costs little next to the training loss over every position.
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return last.float() @ self.item.weight[:self.n_items].float().T


# ----------------------------------------------------------------------------- recommender

class SASRec(Recommender):
    name = "sasrec"
    Config = SASRecConfig
    deterministic = False  # initial weights, dropout and batch order are drawn: refits get bagged

    def fit(self, train, side=None, valid=None, on_epoch=None):
        train = Interactions.of(train, None, "train")
        self.n_items = train.n_items
        valid = check_valid(valid, self.n_items)
        if valid is not None:
            valid = (SequenceBatches(valid[0], self.config.max_len, for_training=False), valid[1])
        torch.manual_seed(self.seed)  # the same initial weights for the same seed
        self.net = SASRecNet(self.n_items, self.config)
        self.summary.update(fit_net(self.net, SequenceBatches(train, self.config.max_len, for_training=True),
                                    self.train, self.device, self.seed, valid=valid, on_epoch=on_epoch))
        self.summary["parameters"] = int(sum(p.numel() for p in self.net.parameters()))
        return self

    def _raw_scores(self, inputs: Interactions) -> np.ndarray:
        batches = SequenceBatches(inputs, self.config.max_len, for_training=False)
        return predict(self.net, batches, self.device, chunk=1024, precision=self.train.precision)

    def state(self) -> dict:
        """Weights plus the config that built them (nanoGPT keeps its config in the checkpoint)."""
        return {"model": self.name, "config": self.config.__dict__, "state_dict": self.net.state_dict()}
