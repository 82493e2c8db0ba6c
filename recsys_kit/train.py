"""Training loop shared by every autoencoder: batching, optimiser, early stopping, device.

A network plugs in through two methods, `loss(batch, progress)` and `logits(batch)`; the
loop has no model-specific branches. Batches stay sparse: the first layer is an
embedding-bag over each user's items, so no dense users x items input is ever built.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recsys_kit.config import TrainConfig
from recsys_kit.metrics import recall_per_user, summarize
from recsys_kit.scores import mask_seen, top_k


def resolve_device(name: str = "auto") -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: choose auto, cpu or cuda")
    return name


@dataclass
class SparseBatch:
    """A CSR slice as torch tensors: embedding-bag input plus the (row, col) of each entry."""

    cols: torch.Tensor  # int64, nnz
    offsets: torch.Tensor  # int64, n_rows: start of each row in cols
    rows: torch.Tensor  # int64, nnz: row of each entry
    values: torch.Tensor  # float32, nnz: the raw interaction values
    normalized: torch.Tensor  # float32, nnz: values / row L2 norm
    n_rows: int


def sparse_batch(rows: sp.csr_matrix, device: str) -> SparseBatch:
    lengths = np.diff(rows.indptr)
    row_of_entry = np.repeat(np.arange(rows.shape[0]), lengths)
    values = rows.data.astype(np.float32)
    norms = np.sqrt(np.bincount(row_of_entry, weights=values ** 2, minlength=rows.shape[0]))
    normalized = values / np.maximum(norms, 1e-12)[row_of_entry]

    def tensor(array, dtype):
        return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)

    return SparseBatch(cols=tensor(rows.indices, torch.int64), offsets=tensor(rows.indptr[:-1], torch.int64),
                       rows=tensor(row_of_entry, torch.int64), values=tensor(values, torch.float32),
                       normalized=tensor(normalized, torch.float32), n_rows=rows.shape[0])


class SparseInput(nn.Module):
    """First layer on a sparse batch: (dropout(x / ||x||)) @ W + b via embedding_bag."""

    def __init__(self, n_items: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_items, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, batch: SparseBatch, dropout: float) -> torch.Tensor:
        weights = batch.normalized
        if self.training and dropout > 0:
            keep = torch.rand_like(weights) >= dropout
            weights = weights * keep / (1.0 - dropout)
        out = nn.functional.embedding_bag(batch.cols, self.weight, batch.offsets, mode="sum",
                                          per_sample_weights=weights)
        return out + self.bias


def multinomial_nll(logits: torch.Tensor, batch: SparseBatch) -> torch.Tensor:
    """-(log_softmax(logits) * x).sum(1).mean(), reading only the nonzero entries of x."""
    log_probs = torch.log_softmax(logits, dim=1)
    return -(log_probs[batch.rows, batch.cols] * batch.values).sum() / batch.n_rows


@torch.no_grad()
def predict(net: nn.Module, rows: sp.csr_matrix, device: str, chunk: int = 2048) -> np.ndarray:
    net.eval()
    out = np.empty(rows.shape, dtype=np.float32)
    for start in range(0, rows.shape[0], chunk):
        batch = sparse_batch(rows[start:start + chunk], device)
        out[start:start + chunk] = net.logits(batch).float().cpu().numpy()
    return out


def valid_recall(net: nn.Module, valid: tuple[sp.csr_matrix, sp.csr_matrix], device: str) -> float:
    valid_input, valid_target = valid
    scores = mask_seen(predict(net, valid_input, device), valid_input)
    return summarize(recall_per_user(top_k(scores, 10), valid_target, 10))


def effective_batch_size(n_users: int, config: TrainConfig) -> int:
    """config.batch_size, shrunk (not below 16) so an epoch has min_steps_per_epoch steps."""
    by_steps = -(-n_users // max(config.min_steps_per_epoch, 1))
    return max(1, min(config.batch_size, max(16, by_steps)))


def fit_autoencoder(net: nn.Module, train_rows: sp.csr_matrix, config: TrainConfig, device: str,
                    seed: int, valid=None, on_epoch=None) -> dict:
    """Adam on shuffled user batches; keeps the weights of the best valid Recall@10 epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    active_users = np.flatnonzero(np.diff(train_rows.indptr) > 0)
    batch_size = effective_batch_size(len(active_users), config)
    n_batches = max(1, -(-len(active_users) // batch_size))
    best_recall, best_epoch, best_state, stale = -1.0, 0, None, 0
    history = []
    for epoch in range(1, config.epochs + 1):
        net.train()
        order = rng.permutation(active_users)
        total = 0.0
        for step in range(n_batches):
            users = np.sort(order[step * batch_size:(step + 1) * batch_size])
            batch = sparse_batch(train_rows[users], device)
            loss = net.loss(batch, progress=epoch - 1 + step / n_batches)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        record = {"epoch": epoch, "loss": total / n_batches}
        if valid is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            record["valid_recall@10"] = recall = valid_recall(net, valid, device)
            if recall > best_recall:
                best_recall, best_epoch, stale = recall, epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                stale += config.eval_every
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if valid is not None and stale >= config.patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    return {"epochs_run": len(history), "batch_size": batch_size, "best_epoch": best_epoch or len(history),
            "best_valid_recall@10": best_recall if best_state is not None else None,
            "final_loss": history[-1]["loss"] if history else None}
