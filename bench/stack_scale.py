"""`kit stack` at contest scale beside `kit ensemble`: wall seconds and peak memory, each in its own process.

    python bench/stack_scale.py [--data DIR] [--work DIR] [--members ease transition] [--candidates 50]

Without --data it makes (or reuses) the contest-scale synthetic set (`kit synth --users 31360 --items
6807 --interactions 5154471`) under --work. Each member gets `kit cv --folds 5` (refit full, no
leaderboard estimate: the stack needs OOF and test scores only), then `kit ensemble` of the members
and `kit stack --data` of the same members run through the real CLI, one process each, timed by
wall clock and measured by that process's own peak resident memory (os.wait4). The reference is
`kit ensemble`'s time and memory on the same members in the same run, and one dense users x items
float32 score matrix. Writes JSON (default bench/results/stack_scale.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KIT = [sys.executable, "-c", "from cli.main import app; app()"]
CONTEST = ["--users", "31360", "--items", "6807", "--interactions", "5154471"]


def run(args: list[str], label: str) -> dict:
    """One kit command in its own process: wall seconds and that process's peak RSS (MiB)."""
    started = time.time()
    process = subprocess.Popen(KIT + args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, COLUMNS="100"))
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = round(time.time() - started, 1)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{label}: exit {code}\n{output[-3000:]}")
    peak = round(usage.ru_maxrss / 1024)
    print(f"{label:<28} {seconds:>8.1f} s  peak {peak:>6,} MiB", flush=True)
    return {"command": " ".join(args), "seconds": seconds, "peak_rss_mib": peak, "tail": output[-600:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/recsys-kit-stack-scale"))
    parser.add_argument("--members", nargs="+", default=["ease", "transition"])
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stack_scale.json")
    args = parser.parse_args()
    data = args.data or args.work / "data"
    result = {"members": args.members, "candidates": args.candidates, "cpus": os.cpu_count(),
              "load_average_at_start": os.getloadavg()[0], "steps": {}}
    if not (data / "train_ratings.csv").exists():
        result["steps"]["synth"] = run(["synth", str(data), *CONTEST], "synth")
    runs = args.work / "runs"
    for member in args.members:
        if not (runs / member / "metrics.json").exists():
            config = ROOT / "configs" / f"{member}.toml"
            result["steps"][f"cv {member}"] = run(
                ["cv", "--data", str(data), "--config", str(config), "--folds", "5", "--runs-dir", str(runs),
                 "--name", member, "--no-lb-estimate", "--device", "cpu"], f"kit cv {member}")
    members = [str(runs / m) for m in args.members]
    stamp = time.strftime("%H%M%S")
    result["steps"]["ensemble"] = run(["ensemble", *members, "--runs-dir", str(runs), "--name", f"blend-{stamp}"],
                                      "kit ensemble")
    result["steps"]["stack"] = run(["stack", *members, "--data", str(data), "--candidates", str(args.candidates),
                                    "--runs-dir", str(runs), "--name", f"stack-{stamp}"], "kit stack")
    stack_metrics = json.loads((runs / f"stack-{stamp}" / "metrics.json").read_text())
    users, items = np.load(runs / f"stack-{stamp}" / "oof_scores.npy", mmap_mode="r").shape
    one_matrix = round(users * items * 4 / 2**20)
    ensemble, stack = result["steps"]["ensemble"], result["steps"]["stack"]
    result.update({"one_score_matrix_mib": one_matrix,
                   "stack_over_ensemble_seconds": round(stack["seconds"] / ensemble["seconds"], 2),
                   "stack_over_ensemble_memory": round(stack["peak_rss_mib"] / ensemble["peak_rss_mib"], 2),
                   "stack_choice": stack_metrics.get("choice"), "stack_recall@10": stack_metrics["recall@10"]["mean"],
                   "candidate_recall": stack_metrics.get("candidate_recall")})
    print(f"stack / ensemble: {result['stack_over_ensemble_seconds']}x time, "
          f"{result['stack_over_ensemble_memory']}x peak memory; one score matrix {one_matrix} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
