"""train.precision = auto, decided by measuring: fp32, or bf16 autocast where it is clearly faster here.

Whether bf16 autocast pays depends on the machine, not on the model alone. The issue saw a sparse-input
Multi-DAE epoch take 3.7 s in bf16 against 7.2 s in fp32 on a 2-core AMD EPYC, and bf16 slower on an
Intel Xeon (7.0 vs 5.0 s) and on an H200 (these small nets lose to the casts); on a 2-core AMD EPYC
without bf16 instructions (Zen 3, AVX2 only, torch 2.13) a bf16 GEMM ran 14x slower than fp32's.
So the first fit of a network on a machine times a few training steps of the network itself on a
real batch, fp32 against bf16 autocast (`measure`: a second or two; one timed round when bf16 is
far from the line), and picks bf16 only at <= RATIO of fp32's median step time. The probe trains a
deep copy with its own optimisers under forked random generators (torch's CPU and CUDA ones,
numpy's global one), so the fit that follows draws exactly what it would have drawn without it:
with fp32 picked, training is bit-identical to plain fp32. A fit too small to pay for the probe
(MIN_WORK_FLOP) runs fp32 without one.

The decision is cached (recsys_kit.data.cache's folder, one small JSON file per key) under the
machine's CPU or GPU name and thread count, the torch version, the network's class and parameter
shapes and the batch size: the same command later picks the same without probing (its OOF scores
repeat), and another model, size or machine probes again. A decision that cannot be remembered
(RECSYS_KIT_CACHE=off, or a folder that cannot be written) is fp32: probing on every run could
flip on a noisy machine and make two runs of one command differ.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from recsys_kit import files
from recsys_kit.data.cache import cache_dir

RATIO = 0.85  # bf16 only when its median step takes at most this share of fp32's
WARMUP = 1  # untimed steps per precision (kernel selection, oneDNN primitives, allocator)
MIN_ROUNDS, MAX_ROUNDS, BUDGET_S = 3, 7, 1.5  # timed steps per precision: at least 3, more while in budget
# ... or one, when it already says bf16 is far from the line (a CPU without bf16 units, AVX2 only:
# 13x fp32's step here, 2 s a step, so three rounds would cost seconds for nothing).
CLEARLY_SLOWER, CLEARLY_FASTER = 1.5, 0.5
SLOW_STEP_S = 0.25  # a warm-up bf16 step this long, and CLEARLY_SLOWER, decides alone (one-time setup is ms)
FORMAT = 1  # bump when the probe or its decision rule changes: old entries are then probed again
KEEP = 256  # cached decisions kept; the oldest beyond are removed on write
# A fit whose whole training is below this many multiply-adds x 2 (about 6 x parameters per user, epoch)
# is over in a second or two, the probe's own cost: not worth probing, fp32 (every unit-test net).
MIN_WORK_FLOP = 1e11
NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
DTYPES = {name: dtype for dtype, name in NAMES.items()}


def autocast_dtype(precision: str, device: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision name; None = plain fp32 (no autocast at all, so
    fp32 runs are bit-identical to a loop that never heard of mixed precision). "auto" before any
    probe (a net that was never fitted) is fp32."""
    return DTYPES.get(precision)


def autocast(device: str, dtype: torch.dtype | None):
    return torch.autocast(device_type=device, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# ----------------------------------------------------------------------------- the machine and the key

def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and its bf16 instruction sets (/proc/cpuinfo; a VM may name only the
    vendor, "AMD EPYC", so the flags tell one generation from another)."""
    name, flags = "", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = sorted(f for f in line.split(":", 1)[1].split() if "bf16" in f)
    except OSError:
        pass
    return name or platform.processor() or platform.machine() or "unknown CPU", flags


def machine(device: str) -> str:
    """The machine as the cache key and the report name it: the GPU, or the CPU, its vector
    instructions (torch's kernels: AVX2, AVX512...), bf16 units and torch's threads."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    name, flags = cpu_info()
    units = " ".join(flags) or "no bf16 units"
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}, {units}, {torch.get_num_threads()} threads"


def probe_facts(net: torch.nn.Module, batch_size: int, device: str) -> dict:
    """What a cached decision is valid for."""
    return {"format": FORMAT, "machine": machine(device), "torch": torch.__version__,
            "device": torch.device(device).type, "net": type(net).__name__, "batch_size": int(batch_size),
            "shapes": [[name, list(p.shape)] for name, p in net.named_parameters()]}


def cache_entry(facts: dict) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]
    return folder / f"precision-{key}.json"


def read_entry(entry: Path) -> dict | None:
    try:
        stored = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None  # absent, damaged or half-written by another version: probe again
    ok = isinstance(stored, dict) and stored.get("precision") in ("fp32", "bf16")
    return stored if ok else None


def write_entry(entry: Path, record: dict) -> dict | None:
    """The decision on disk after writing `record` unless another process stored one first (then
    theirs, so every later run agrees); None when the folder cannot be written."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        stored = read_entry(entry)
        if stored is not None:
            return stored
        with files.replacing(entry, unique=True) as tmp:
            tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        entries = sorted(entry.parent.glob("precision-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
        return read_entry(entry)
    except OSError:
        return None


# ----------------------------------------------------------------------------- the probe

@contextlib.contextmanager
def untouched_random_state(device: str):
    """torch's CPU generator (and the CUDA device's), numpy's global one: as they were, afterwards."""
    devices = []
    if torch.device(device).type == "cuda":
        devices = [torch.device(device).index if torch.device(device).index is not None
                   else torch.cuda.current_device()]
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(numpy_state)


def measure(net: torch.nn.Module, train, batch_size: int, config, device: str) -> tuple[float, float | None]:
    """Median milliseconds of one training step (every phase once) of a copy of `net` on the first
    `batch_size` training users, in fp32 and in bf16 autocast (None: bf16 failed here)."""
    from recsys_kit.models.train import phases_of  # the loop's module imports this one

    with untouched_random_state(device):
        probe = copy.deepcopy(net).to(device).train()
        batch = train.batch(np.sort(np.asarray(train.users)[:batch_size]), device)
        phases = phases_of(probe)
        for phase in phases:
            if phase.start is not None:
                phase.start()
        optimizers = [torch.optim.Adam(phase.parameters, lr=config.lr, weight_decay=config.weight_decay)
                      for phase in phases]

        def step(dtype) -> float:
            started = time.perf_counter()
            for phase, optimizer in zip(phases, optimizers):
                with autocast(device, dtype):
                    loss = phase.loss(batch, 0.0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            float(loss.detach())  # the loop reads every loss: a CUDA step ends here too
            return time.perf_counter() - started

        return time_steps(step, device)


def time_steps(step, device: str) -> tuple[float, float | None]:
    """Warm-up, then fp32 and bf16 steps in turn (the order flipping each round, so a neighbour's
    load falls on both), until MIN_ROUNDS and BUDGET_S, MAX_ROUNDS, or a clear answer; medians in ms."""
    dtypes, warm = [None, torch.bfloat16], (0.0, 0.0)
    try:
        for _ in range(WARMUP):
            warm = step(None), step(torch.bfloat16)
    except RuntimeError:  # bf16 autocast unsupported here (an op without a bf16 kernel, an old GPU)
        dtypes = [None]
    else:  # a warm-up bf16 step this slow is no setup cost: bf16 is slow here (a CPU without bf16 units)
        if warm[1] >= SLOW_STEP_S and warm[1] >= CLEARLY_SLOWER * warm[0]:
            return warm[0] * 1000, warm[1] * 1000
    seconds = {dtype: [] for dtype in dtypes}
    started = time.perf_counter()
    for round_ in range(MAX_ROUNDS):
        for dtype in (dtypes if round_ % 2 == 0 else dtypes[::-1]):
            seconds[dtype].append(step(dtype))
        fp32 = float(np.median(seconds[None])) * 1000
        bf16 = float(np.median(seconds[torch.bfloat16])) * 1000 if torch.bfloat16 in seconds else None
        clear = bf16 is None or not CLEARLY_FASTER < bf16 / fp32 < CLEARLY_SLOWER
        if clear or (round_ + 1 >= MIN_ROUNDS and time.perf_counter() - started > BUDGET_S):
            break
    return fp32, bf16


# ----------------------------------------------------------------------------- the decision

def decide(fp32_ms: float, bf16_ms: float | None, where: str) -> dict:
    record = {"fp32_ms": round(fp32_ms, 3), "bf16_ms": None if bf16_ms is None else round(bf16_ms, 3),
              "machine": where}
    if bf16_ms is None:
        return {**record, "precision": "fp32", "ratio": None,
                "reason": f"bf16 autocast does not run on {where}"}
    ratio = bf16_ms / fp32_ms
    faster = ratio <= RATIO
    verdict = "" if faster else f", not clearly faster (bf16 needs <= {RATIO}x)"
    return {**record, "precision": "bf16" if faster else "fp32", "ratio": round(ratio, 3),
            "reason": f"bf16 step {ratio:.2f}x fp32's ({bf16_ms:.1f} vs {fp32_ms:.1f} ms) on {where}{verdict}"}


def training_flop(net: torch.nn.Module, users: int, epochs: int) -> float:
    """An upper estimate of a fit's work: forward and backward through every parameter, per user and
    epoch (an embedding-bag input layer does less: only a user's own items' rows)."""
    return 6.0 * sum(p.numel() for p in net.parameters()) * users * epochs


def resolve(net: torch.nn.Module, train, batch_size: int, config, device: str) -> dict:
    """The precision a fit runs in and why: {"setting", "precision", "reason", "fp32_ms", "bf16_ms",
    "cached", "machine"}. Only "auto" probes (once per cache key); fp32, bf16 and fp16 are taken as set."""
    facts = probe_facts(net, batch_size, device)
    base = {"setting": config.precision, "machine": facts["machine"], "fp32_ms": None, "bf16_ms": None}
    if config.precision != "auto":
        return {**base, "precision": config.precision, "cached": False, "reason": "set in train.precision (no probe)"}
    entry = cache_entry(facts)
    if entry is None:
        return {**base, "precision": "fp32", "cached": False,
                "reason": "RECSYS_KIT_CACHE=off: no remembered probe, and a fresh one could differ between "
                          "runs; set train.precision=bf16 to choose bf16"}
    stored = read_entry(entry)
    if stored is not None:  # before the size check: a short refit of a probed net runs as its folds did
        return {**stored, "setting": "auto", "cached": True, "reason": stored["reason"] + " (cached probe)"}
    work = training_flop(net, len(train.users), config.epochs)
    if work < MIN_WORK_FLOP:
        return {**base, "precision": "fp32", "cached": False,
                "reason": f"training too small to pay for a probe (~{work / 1e9:.2g} GFLOP in all)"}
    record = {**decide(*measure(net, train, batch_size, config, device), facts["machine"]),
              "torch": facts["torch"], "batch_size": facts["batch_size"], "probed_at": time.strftime("%Y-%m-%d %H:%M")}
    stored = write_entry(entry, record)
    if stored is None:
        return {**record, "setting": "auto", "precision": "fp32", "cached": False,
                "reason": f"{record['reason']}; but {entry.parent} cannot be written, so fp32 (reruns must match)"}
    return {**stored, "setting": "auto", "cached": False, "reason": stored["reason"] + " (probed, cached)"}


def run_precision(fits: list[dict]) -> dict | None:
    """metrics.json "precision": the first torch fit's decision, and every pick when fits differed
    (a different batch size probes again); None for models without a training loop."""
    picks = [fit["precision_pick"] for fit in fits if isinstance(fit.get("precision_pick"), dict)]
    if not picks:
        return None
    first = dict(picks[0])
    if len({pick["precision"] for pick in picks}) > 1:
        first["picks"] = [pick["precision"] for pick in picks]
    return first


def describe(pick: dict) -> str:
    """`kit cv`'s line: precision auto -> bf16: bf16 step 0.52x fp32's (...) on <cpu> (probed, cached)."""
    mixed = f" (fits differed: {', '.join(pick['picks'])})" if pick.get("picks") else ""
    return f"precision {pick['setting']} -> {pick['precision']}: {pick['reason']}{mixed}"
