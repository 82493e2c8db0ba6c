"""Blending five contest-scale score matrices: wall time and peak RSS, chunked vs naive.

    python bench/blend.py [--users 31360 --items 6807 --members 5] [--runs RUN_DIR ...] [--no-naive]

Without --runs, five fake `kit cv` run directories are synthesised into a temporary folder
(one shared random seen-mask per user, member scores = shared taste + member noise on
different scales, targets drawn from the taste). Each measurement runs in its own process,
so its ru_maxrss is its own:
  chunked   recsys_kit.ensemble.blend_file on the test matrices, equal weights
  naive     the reference: every matrix loaded whole into RAM, normalised and blended at once
  ensemble  the whole `kit ensemble` pipeline (cache, two weight fits, OOF + test blends)
Figures go to stdout and bench/results/blend.json. The synthesised files stay in the page
cache, so the times are compute, not disk.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

RESULTS = Path(__file__).resolve().parent / "results"


def _header(handle, shape) -> None:
    np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": shape})


def synthesise(root: Path, users: int, items: int, members: int, seed: int = 0, chunk: int = 2048) -> list[Path]:
    """Fake run directories with OOF scores; test scores are a hard link to the same file."""
    from recsys_kit import files

    rng = np.random.default_rng(seed)
    dirs = [root / f"member{m}" for m in range(members)]
    handles = []
    for d in dirs:
        d.mkdir(parents=True)
        handles.append(open(d / "oof_scores.npy", "wb"))
        _header(handles[-1], (users, items))
    popularity = np.sort(rng.gumbel(size=items)).astype(np.float32)[::-1] * 0.5
    scale = [(1.0, 0.0), (25.0, 3.0), (0.01, -2.0), (4.0, 100.0), (1e3, 0.0)]
    seen_parts, target_parts = [], []
    for start in range(0, users, chunk):
        n = min(chunk, users - start)
        # Contest-like activity: about 164 interactions per user, long tail, never below 16.
        n_seen = np.clip(rng.lognormal(np.log(110), 0.9, n), 16, items // 3).astype(int)
        seen = rng.random((n, items), dtype=np.float32) < (n_seen / items)[:, None]
        taste = rng.standard_normal((n, items), dtype=np.float32) + popularity
        truth = np.where(seen, -np.inf, taste + rng.standard_normal((n, items), dtype=np.float32))
        target = np.zeros((n, items), dtype=bool)
        np.put_along_axis(target, np.argpartition(-truth, 9, axis=1)[:, :10], True, axis=1)
        seen_parts.append(sp.csr_matrix(seen, dtype=np.float32))
        target_parts.append(sp.csr_matrix(target, dtype=np.float32))
        for m, handle in enumerate(handles):
            a, b = scale[m % len(scale)]
            noise = 0.6 + 0.3 * m
            scores = a * (taste + noise * rng.standard_normal((n, items), dtype=np.float32)) + b
            scores[seen] = -np.inf
            scores.astype("<f4").tofile(handle)
    for handle in handles:
        handle.close()
    seen, target = sp.vstack(seen_parts).tocsr(), sp.vstack(target_parts).tocsr()
    folds = (np.random.default_rng(seed + 1).permutation(users) % 5).astype(np.int16)
    for m, d in enumerate(dirs):
        os.link(d / "oof_scores.npy", d / "test_scores.npy")
        files.write_json(d / "data.json", {"fingerprint": "synthetic", "holdout_fingerprint": "synthetic",
                                          "folds_fingerprint": "synthetic", "users": users, "items": items})
        files.write_json(d / "metrics.json", {"model": f"synthetic-{m}", "recall@10": {"mean": 0, "std": 0},
                                             "ndcg@10": {"mean": 0, "std": 0}})
        files.save_npy(d / "folds.npy", folds)
        files.save_npy(d / "user_ids.npy", np.arange(users, dtype=np.int64))
        files.save_npy(d / "item_ids.npy", np.arange(items, dtype=np.int64))
        files.save_sparse(d / "holdout_input.npz", seen)
        files.save_sparse(d / "holdout_target.npz", target)
    return dirs


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def child(mode: str, dirs: list[Path], out: Path, normalize: str, chunk: int) -> dict:
    """One measurement, in this (fresh) process."""
    from recsys_kit.runs import store
    from recsys_kit.runs.run_dir import RunDir
    from recsys_kit.blending.ensemble import EnsembleOptions, blend_file, run_ensemble
    from recsys_kit.blending.arithmetic import blend_blocks, normalize_rows

    baseline = _rss_mb()
    started = time.perf_counter()
    weights = np.full(len(dirs), 1.0 / len(dirs))
    if mode == "chunked":
        members = [RunDir(d, store.read_json(d / "data.json"), {}) for d in dirs]
        blend_file(members, "test_scores.npy", out, weights,
                   EnsembleOptions(method="mean", normalize=normalize, chunk=chunk))
    elif mode == "naive":
        matrices = [np.load(d / "test_scores.npy") for d in dirs]  # whole, in RAM
        blend = blend_blocks((normalize_rows(m, normalize) for m in matrices), weights)
        np.save(out, blend)
    else:
        options = EnsembleOptions(normalize=normalize, chunk=chunk)
        out = run_ensemble(dirs, out.parent / "runs", name="bench", options=options)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    result = {"wall_s": round(wall, 2), "peak_rss_mb": round(peak, 1), "rss_after_imports_mb": round(baseline, 1)}
    if mode == "ensemble":
        metrics = store.read_json(out / "metrics.json")
        result.update(weights=[round(w, 3) for w in metrics["weights"]],
                      holdout_half_recall=round(metrics["holdout_half"]["recall@10"], 4),
                      members_holdout_half_recall=[round(m["holdout_half"]["recall@10"], 4)
                                                   for m in metrics["members"]])
    return result


def measure(mode: str, dirs, out: Path, args) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--out", str(out), "--normalize", args.normalize,
               "--chunk", str(args.chunk), "--runs", *map(str, dirs)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=31_360)
    parser.add_argument("--items", type=int, default=6_807)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--runs", type=Path, nargs="*", help="real run directories instead of synthetic ones")
    parser.add_argument("--normalize", default="zscore")
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--no-naive", action="store_true", help="skip the whole-matrix reference")
    parser.add_argument("--no-ensemble", action="store_true", help="skip the full fit pipeline")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.runs, args.out, args.normalize, args.chunk)))
        return

    with tempfile.TemporaryDirectory(prefix="blend-bench-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        dirs = args.runs or synthesise(tmp / "members", args.users, args.items, args.members)
        made = time.perf_counter() - started
        shape = np.load(dirs[0] / "test_scores.npy", mmap_mode="r").shape
        matrix_mb = shape[0] * shape[1] * 4 / 2**20
        print(f"{len(dirs)} members of {shape[0]:,} x {shape[1]:,} float32 = {matrix_mb:,.0f} MiB each"
              + ("" if args.runs else f" (synthesised in {made:.0f} s)"))
        results = {"members": len(dirs), "shape": list(shape), "matrix_mb": round(matrix_mb, 1),
                   "normalize": args.normalize, "chunk": args.chunk, "cpus": os.cpu_count(),
                   "source": [str(d) for d in args.runs] if args.runs else "synthetic"}
        modes = ["chunked"] + ([] if args.no_naive else ["naive"]) + ([] if args.no_ensemble else ["ensemble"])
        for mode in modes:
            results[mode] = measure(mode, dirs, tmp / f"{mode}.npy", args)
            figures = results[mode]
            print(f"{mode:9s} {figures['wall_s']:8.1f} s   peak RSS {figures['peak_rss_mb']:8,.0f} MiB "
                  f"= {figures['peak_rss_mb'] / matrix_mb:5.2f} x one matrix "
                  f"(after imports {figures['rss_after_imports_mb']:,.0f} MiB)")
            figures["rss_vs_matrix"] = round(figures["peak_rss_mb"] / matrix_mb, 3)
        if "naive" in results:
            chunked = np.load(tmp / "chunked.npy", mmap_mode="r")
            naive = np.load(tmp / "naive.npy", mmap_mode="r")
            results["same_output"] = bool(all(np.array_equal(chunked[s:s + 4096], naive[s:s + 4096])
                                              for s in range(0, shape[0], 4096)))
            results["naive_vs_chunked"] = {
                "time": round(results["naive"]["wall_s"] / results["chunked"]["wall_s"], 2),
                "peak_rss": round(results["naive"]["peak_rss_mb"] / results["chunked"]["peak_rss_mb"], 2)}
            print(f"naive / chunked: time x{results['naive_vs_chunked']['time']}, "
                  f"peak RSS x{results['naive_vs_chunked']['peak_rss']}; identical output: {results['same_output']}")
        if "ensemble" in results:
            e = results["ensemble"]
            print(f"ensemble weights {e['weights']}, held-out half Recall@10 {e['holdout_half_recall']} "
                  f"(members {e['members_holdout_half_recall']})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "blend.json"
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp_path, path)
    print(path)


if __name__ == "__main__":
    main()
