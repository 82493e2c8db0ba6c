"""Seconds per Multi-DAE training epoch, next to the machine's own matrix multiply.

    python bench/train_speed.py --data DIR [--epochs 2] [--device cpu]

Reference: the dense GEMMs an epoch must do at least (decoder output layer forward and
backward, the dominant cost) timed as bare torch.mm calls of the same shapes. The ratio
says how close training runs to the machine's limit. Writes bench/results/train_speed.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from recsys_kit.config import TrainConfig
from recsys_kit.data import load_dataset
from recsys_kit.models.multidae import MultiDAEConfig, MultiDAENet
from recsys_kit.train import effective_batch_size, fit_autoencoder, resolve_device


def gemm_seconds(n_users: int, batch: int, hidden: int, n_items: int, device: str) -> float:
    """One epoch of the output layer's three GEMMs (forward, grad input, grad weight), bare."""
    a = torch.randn(batch, hidden, device=device)
    w = torch.randn(hidden, n_items, device=device)
    g = torch.randn(batch, n_items, device=device)
    steps = -(-n_users // batch)
    for _ in range(2):  # warm-up
        a @ w, g @ w.T, a.T @ g
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        a @ w, g @ w.T, a.T @ g
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_speed.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    dataset = load_dataset(args.data)
    rows = dataset.matrix[: int(dataset.n_users * 0.8)]  # a 5-fold training set's size
    config = MultiDAEConfig()
    train = TrainConfig(epochs=args.epochs, patience=10**6)
    torch.manual_seed(0)
    net = MultiDAENet(dataset.n_items, config.hidden_dims, config.dropout)
    seconds = []
    started = time.perf_counter()
    fit_autoencoder(net, rows, train, device, seed=0,
                    on_epoch=lambda record: seconds.append(time.perf_counter() - started - sum(seconds)))
    batch = effective_batch_size(rows.shape[0], train)
    reference = gemm_seconds(rows.shape[0], batch, config.hidden_dims[0], dataset.n_items, device)
    result = {
        "data": str(args.data), "users": rows.shape[0], "items": dataset.n_items, "nnz": int(rows.nnz),
        "device": device, "threads": torch.get_num_threads(), "batch_size": batch,
        "seconds_per_epoch": [round(s, 2) for s in seconds],
        "reference_gemm_seconds_per_epoch": round(reference, 2),
        "ratio_epoch_to_gemm": round(float(np.median(seconds)) / reference, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
