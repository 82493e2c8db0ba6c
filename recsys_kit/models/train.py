"""Training loop shared by every torch model: batching, optimiser, precision, early stopping, device.

A model plugs in with two pieces and the loop has no model-specific branches:
- a batch source (`Batches`): its `rows` (the users' items, for masking seen items), its trainable
  `users`, and `batch(users, device)`, which turns user indices into whatever its network reads;
- a network with `loss(batch, progress)` and `logits(batch)` (users x items); a network trained in
  alternating steps (RecVAE: encoder passes, then decoder passes) lists them in `phases()` instead.
The autoencoders' source is `RowBatches`: batches stay sparse, the first layer is an
embedding-bag over each user's items, so no dense users x items input is ever built.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recsys_kit.config import TrainConfig
from recsys_kit.models.precision import NAMES, autocast, autocast_dtype, resolve  # autocast*: read here too
from recsys_kit.protocol.metrics import K, recall_per_user, summarize
from recsys_kit.protocol.ranking import mask_seen, top_k


# ----------------------------------------------------------------------------- batch sources

class Batches(Protocol):
    rows: sp.csr_matrix  # users x items: what each user has seen (scores mask these)
    users: np.ndarray  # the users a training step can learn from

    def batch(self, users: np.ndarray, device: str) -> Any:
        """The network's input for `users` (sorted row indices), on `device`."""


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


class RowBatches:
    """Users as bags of items (the autoencoders): a batch is their CSR rows as a SparseBatch."""

    def __init__(self, rows: sp.csr_matrix):
        self.rows = rows
        self.users = np.flatnonzero(np.diff(rows.indptr) > 0)

    def batch(self, users: np.ndarray, device: str) -> SparseBatch:
        return sparse_batch(self.rows[users], device)


def as_batches(source) -> Batches:
    """A batch source as is; a CSR matrix as RowBatches."""
    return RowBatches(source) if sp.issparse(source) else source


# ----------------------------------------------------------------------------- autoencoder layers

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


# ----------------------------------------------------------------------------- the loop

@torch.no_grad()
def predict(net: nn.Module, source, device: str, chunk: int = 2048, precision: str = "auto") -> np.ndarray:
    """float32 logits of every user of `source` (Batches, or CSR rows for the autoencoders), in chunks.
    "auto" scores in the precision the net was fitted in (fit_net's pick; fp32 for a net never fitted)."""
    source = as_batches(source)
    net.eval()
    if precision == "auto":
        precision = getattr(net, "fitted_precision", "fp32")
    dtype = autocast_dtype(precision, device)
    out = np.empty(source.rows.shape, dtype=np.float32)
    for start in range(0, source.rows.shape[0], chunk):
        users = np.arange(start, min(start + chunk, source.rows.shape[0]))
        with autocast(device, dtype):
            logits = net.logits(source.batch(users, device))
        out[start:start + chunk] = logits.float().cpu().numpy()
    return out


def valid_recall(net: nn.Module, valid: tuple, device: str, precision: str = "auto") -> float:
    source, valid_target = as_batches(valid[0]), valid[1]
    scores = mask_seen(predict(net, source, device, precision=precision), source.rows)
    return summarize(recall_per_user(top_k(scores, K), valid_target, K))


@dataclass(frozen=True)
class Phase:
    """One share of every epoch: `passes` shuffled sweeps over the training users, each step
    minimising `loss(batch, progress)` over `parameters` alone, with their own Adam (whose moments
    carry over from epoch to epoch). `start` runs before the phase's first pass of each epoch."""

    name: str
    parameters: list
    loss: Callable[[Any, float], torch.Tensor]
    passes: int = 1
    start: Callable[[], None] | None = None


def phases_of(net: nn.Module) -> list[Phase]:
    """The network's own `phases()`, or one phase: every parameter, `net.loss`, one pass."""
    phases = getattr(net, "phases", None)
    return list(phases()) if phases is not None else [Phase("all", list(net.parameters()), net.loss)]


def effective_batch_size(n_users: int, config: TrainConfig) -> int:
    """config.batch_size, shrunk (not below 16) so an epoch has min_steps_per_epoch steps."""
    by_steps = -(-n_users // max(config.min_steps_per_epoch, 1))
    return max(1, min(config.batch_size, max(16, by_steps)))


def fit_net(net: nn.Module, train: Batches, config: TrainConfig, device: str, seed: int,
            valid: tuple[Batches, sp.csr_matrix] | None = None, on_epoch=None) -> dict:
    """Adam on shuffled user batches, one Adam per phase (see Phase); keeps the weights of the best
    valid Recall@10 epoch.

    `valid`: (the validation users' batch source, their hidden targets). Returns the fit summary;
    its best_epoch is what a refit without validation trains for, its precision_pick what
    train.precision ran in and why (auto: recsys_kit.models.precision's cached probe).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net.to(device)
    batch_size = effective_batch_size(len(train.users), config)
    # auto: a short probe of this net on a real batch, on a copy under forked generators (precision.py)
    pick = resolve(net, train, batch_size, config, device)
    net.fitted_precision = pick["precision"]  # predict's "auto"
    phases = phases_of(net)
    optimizers = [torch.optim.Adam(phase.parameters, lr=config.lr, weight_decay=config.weight_decay)
                  for phase in phases]
    dtype = autocast_dtype(pick["precision"], device)
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
    scalers = [torch.amp.GradScaler(device, enabled=dtype is torch.float16) for _ in phases]
    n_batches = max(1, -(-len(train.users) // batch_size))
    best_recall, best_epoch, best_state, stale = -1.0, 0, None, 0
    history = []
    for epoch in range(1, config.epochs + 1):
        net.train()
        record = {"epoch": epoch}
        for phase, optimizer, scaler in zip(phases, optimizers, scalers):
            if phase.start is not None:
                phase.start()
            total = 0.0
            for sweep in range(phase.passes):
                order = rng.permutation(train.users)
                for step in range(n_batches):
                    users = np.sort(order[step * batch_size:(step + 1) * batch_size])
                    batch = train.batch(users, device)
                    done = (sweep * n_batches + step) / (phase.passes * n_batches)  # of this epoch's phase
                    with autocast(device, dtype):
                        loss = phase.loss(batch, epoch - 1 + done)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    total += float(loss.detach())
            record.setdefault("loss", total / (phase.passes * n_batches))  # the first phase's: the objective
            if len(phases) > 1:
                record[f"loss_{phase.name}"] = total / (phase.passes * n_batches)
        if valid is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            record["valid_recall@10"] = recall = valid_recall(net, valid, device, pick["precision"])
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
            "final_loss": history[-1]["loss"] if history else None,
            "precision": NAMES[dtype], "precision_pick": pick}


def fit_autoencoder(net: nn.Module, train_rows: sp.csr_matrix, config: TrainConfig, device: str,
                    seed: int, valid=None, on_epoch=None) -> dict:
    """fit_net on CSR rows (valid: (input rows, target rows)); kept for the autoencoders' callers."""
    if valid is not None:
        valid = (RowBatches(valid[0]), valid[1])
    return fit_net(net, RowBatches(train_rows), config, device, seed, valid=valid, on_epoch=on_epoch)
