"""Seconds per training epoch of Multi-DAE and SASRec per precision, next to the machine's own matrix multiply.

    python bench/train_speed.py --data DIR [--epochs 2] [--device cpu] [--models multidae sasrec]
                                [--precisions fp32 bf16 auto] [--sasrec-set model.loss=softmax ...]

Each model trains with its configs/<model>.toml (epochs from --epochs, no early stopping) on the
first 80% of the users (a 5-fold training set's size) through the shared loop in recsys_kit.train,
once per --precisions, from the same initial weights. auto runs train.precision's probe afresh (an
empty cache folder of its own): what it picked and why, the probe's own step times and seconds,
and its bf16/fp32 step ratio beside the epochs' (its first epoch includes the probe).
Reference for Multi-DAE: the dense GEMMs an epoch must do at least (decoder output layer forward
and backward, the dominant cost) timed as bare torch.mm calls of the same shapes. The ratio says
how close training runs to the machine's limit. Writes bench/results/train_speed.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recsys_kit.config import load_config
from recsys_kit.models import precision
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


def epoch_seconds(net, batches, train, device: str) -> tuple[list[float], dict]:
    """Each epoch's seconds and the fit's precision pick (fit_net's summary)."""
    seconds = []
    started = time.perf_counter()

    def lap(record):
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started - sum(seconds))

    summary = fit_net(net, batches, train, device, seed=0, on_epoch=lap)
    return [round(s, 2) for s in seconds], summary["precision_pick"]


def timed_probe() -> list[float]:
    """precision.measure wrapped: the seconds of each probe it runs land in the returned list."""
    spent, measure = [], precision.measure

    def timed(*args):
        started = time.perf_counter()
        try:
            return measure(*args)
        finally:
            spent.append(round(time.perf_counter() - started, 2))

    precision.measure = timed
    return spent


def by_precision(make_net, batches, train, device: str, precisions: list[str]) -> dict:
    """Seconds per epoch per precision, the same initial weights each time; auto probes afresh."""
    out, probe_seconds, cache_setting = {}, timed_probe(), os.environ.get("RECSYS_KIT_CACHE")
    for setting in precisions:
        torch.manual_seed(0)
        net = make_net()
        with tempfile.TemporaryDirectory() as fresh:
            os.environ["RECSYS_KIT_CACHE"] = fresh  # the data set is loaded: only the probe reads it now
            try:
                seconds, pick = epoch_seconds(net, batches, dataclasses.replace(train, precision=setting), device)
            finally:
                os.environ.pop("RECSYS_KIT_CACHE")
                if cache_setting is not None:
                    os.environ["RECSYS_KIT_CACHE"] = cache_setting
        out[setting] = {"seconds_per_epoch": seconds, "median_seconds_per_epoch": float(np.median(seconds))}
        if setting == "auto":
            out[setting].update(picked=pick["precision"], reason=pick["reason"], probe_fp32_ms=pick.get("fp32_ms"),
                                probe_bf16_ms=pick.get("bf16_ms"), probe_ratio=pick.get("ratio"),
                                probe_seconds=probe_seconds[-1] if probe_seconds else None)
    if "fp32" in out and "bf16" in out:
        out["epoch_ratio_bf16_to_fp32"] = round(out["bf16"]["median_seconds_per_epoch"]
                                                / out["fp32"]["median_seconds_per_epoch"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=["multidae", "sasrec"], choices=["multidae", "sasrec"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "auto"],
                        choices=["fp32", "bf16", "fp16", "auto"])
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
        if name == "multidae":
            def make_net():
                return MultiDAENet(dataset.n_items, tuple(config.model.hidden_dims), config.model.dropout)
            batches = RowBatches(rows)
        else:
            times = None if dataset.times is None else dataset.times.data[:rows.nnz]
            def make_net():
                return SASRecNet(dataset.n_items, config.model)
            batches = SequenceBatches(Interactions(rows, times, times), config.model.max_len, for_training=True)
        batch = effective_batch_size(len(batches.users), config.train)
        result[name] = {"config": {"model": config.model.__dict__, "batch_size": batch},
                        **by_precision(make_net, batches, config.train, device, args.precisions)}
        if name == "multidae":
            reference = gemm_seconds(n_users, batch, config.model.hidden_dims[0], dataset.n_items, device)
            result[name]["reference_gemm_seconds_per_epoch"] = round(reference, 2)
            for setting in args.precisions:
                result[name][setting]["ratio_epoch_to_gemm"] = round(
                    result[name][setting]["median_seconds_per_epoch"] / reference, 2)
        print(summary_line(name, result[name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def summary_line(name: str, figures: dict) -> str:
    epochs = ", ".join(f"{k} {v['median_seconds_per_epoch']:.2f}" for k, v in figures.items()
                       if isinstance(v, dict) and "median_seconds_per_epoch" in v)
    line = f"{name}: s/epoch {epochs}"
    if "reference_gemm_seconds_per_epoch" in figures:
        line += f" (bare GEMM {figures['reference_gemm_seconds_per_epoch']:.2f})"
    if "epoch_ratio_bf16_to_fp32" in figures:
        line += f"; epoch bf16/fp32 {figures['epoch_ratio_bf16_to_fp32']:.2f}"
    if "auto" in figures:
        auto = figures["auto"]
        line += f"; auto -> {auto['picked']} (probe {auto['probe_seconds']} s: {auto['reason']})"
    return line


if __name__ == "__main__":
    main()
