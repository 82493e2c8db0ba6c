"""Seconds per training epoch of Multi-DAE and SASRec, next to the machine's own matrix multiply.

    python bench/train_speed.py --data DIR [--epochs 2] [--device cpu] [--models multidae sasrec]
                                [--sasrec-set model.loss=softmax ...]

Each model trains with its configs/<model>.toml (epochs from --epochs, no early stopping) on the
first 80% of the users (a 5-fold training set's size) through the shared loop in recsys_kit.train.
Reference for Multi-DAE: the dense GEMMs an epoch must do at least (decoder output layer forward
and backward, the dominant cost) timed as bare torch.mm calls of the same shapes. The ratio says
how close training runs to the machine's limit. Writes bench/results/train_speed.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from recsys_kit.config import load_config
from recsys_kit.data.load import load_dataset
from recsys_kit.models.multidae import MultiDAENet
from recsys_kit.models.sasrec import SASRecNet, SequenceBatches
from recsys_kit.data.interactions import Interactions
from recsys_kit.models.train import RowBatches, effective_batch_size, fit_net
from recsys_kit.protocol.preflight import resolve_device

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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


def epoch_seconds(net, batches, train, device: str) -> list[float]:
    seconds = []
    started = time.perf_counter()

    def lap(record):
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started - sum(seconds))

    fit_net(net, batches, train, device, seed=0, on_epoch=lap)
    return [round(s, 2) for s in seconds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=["multidae", "sasrec"], choices=["multidae", "sasrec"])
    parser.add_argument("--sasrec-set", action="append", default=[], help="override, e.g. model.loss=softmax")
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_speed.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    dataset = load_dataset(args.data)
    n_users = int(dataset.n_users * 0.8)  # a 5-fold training set's size
    rows = dataset.matrix[:n_users]
    result = {"data": str(args.data), "users": n_users, "items": dataset.n_items, "nnz": int(rows.nnz),
              "device": device, "threads": torch.get_num_threads()}
    overrides = [f"train.epochs={args.epochs}", "train.patience=1000000"]
    for name in args.models:
        config = load_config(CONFIGS / f"{name}.toml", overrides + (args.sasrec_set if name == "sasrec" else []))
        torch.manual_seed(0)
        if name == "multidae":
            net = MultiDAENet(dataset.n_items, tuple(config.model.hidden_dims), config.model.dropout)
            batches = RowBatches(rows)
        else:
            times = None if dataset.times is None else dataset.times.data[:rows.nnz]
            net = SASRecNet(dataset.n_items, config.model)
            batches = SequenceBatches(Interactions(rows, times, times), config.model.max_len, for_training=True)
        seconds = epoch_seconds(net, batches, config.train, device)
        batch = effective_batch_size(len(batches.users), config.train)
        result[name] = {"config": {"model": config.model.__dict__, "batch_size": batch,
                                   "precision": config.train.precision},
                        "seconds_per_epoch": seconds, "median_seconds_per_epoch": float(np.median(seconds))}
        if name == "multidae":
            reference = gemm_seconds(n_users, batch, config.model.hidden_dims[0], dataset.n_items, device)
            result[name]["reference_gemm_seconds_per_epoch"] = round(reference, 2)
            result[name]["ratio_epoch_to_gemm"] = round(float(np.median(seconds)) / reference, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
