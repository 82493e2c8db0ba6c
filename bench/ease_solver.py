"""EASE's solver at contest catalogue sizes: fit time and peak RSS, side by side with references.

    python bench/ease_solver.py [--items 6807 12000 20000] [--native-blas]

Each (solver, size) runs in its own process on the same Gram matrix X^T X + l2 I of a random
sparse X (users = 1.5 x items, 60 items a user), so a crash is a result and RSS is per solver:
  kit        recsys_kit's path: torch LAPACK, Cholesky factor and inverse in place
  scipy_lp64 the previous path: SciPy's dpotrf/dpotri in place (32-bit-integer OpenBLAS)
  numpy_inv  numpy.linalg.inv (64-bit-integer OpenBLAS, LU, out of place): the reference
`--native-blas` unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for the children, as on a
machine that does not pin OpenBLAS's kernel (the setting where SciPy's dpotrf segfaulted).
Writes bench/results/ease_solver.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, scipy.sparse as sp, torch
    from recsys_kit.models.ease import ease_weights, gram_matrix
    method, n_items = sys.argv[1], int(sys.argv[2])
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rng = np.random.default_rng(0)
    n_users, per_user = int(1.5 * n_items), 60
    cols = rng.integers(0, n_items, size=n_users * per_user)
    rows = sp.csr_matrix((np.ones(len(cols), np.float32), (np.repeat(np.arange(n_users), per_user), cols)),
                         shape=(n_users, n_items))
    rows.data[:] = 1
    started = time.perf_counter()
    gram = gram_matrix(rows, 500.0)
    gram_seconds = time.perf_counter() - started
    before = rss()
    started = time.perf_counter()
    if method == "kit":
        weights = ease_weights(gram)
    elif method == "scipy_lp64":
        from scipy.linalg import lapack
        factor, info = lapack.dpotrf(gram.T, lower=0, clean=0, overwrite_a=1)
        inverse, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    elif method == "numpy_inv":
        inverse = np.linalg.inv(gram)
    seconds = time.perf_counter() - started
    print(json.dumps({"gram_seconds": round(gram_seconds, 2), "solve_seconds": round(seconds, 2),
                      "peak_rss_mb": round(rss() / 2**20), "rss_before_solve_mb": round(before / 2**20),
                      "gram_mb": round(gram.nbytes / 2**20)}))
""")


def run(method: str, n_items: int, native_blas: bool) -> dict:
    env = dict(os.environ)
    if native_blas:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", CHILD, method, str(n_items)], capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        reason = "segfault" if done.returncode in (-11, 139) else done.stderr.strip().splitlines()[-1:]
        return {"method": method, "items": n_items, "exit": done.returncode, "failed": reason}
    return {"method": method, "items": n_items, "exit": 0, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[6807, 12000, 20000])
    parser.add_argument("--methods", nargs="+", default=["kit", "scipy_lp64", "numpy_inv"])
    parser.add_argument("--native-blas", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ease_solver.json"))
    args = parser.parse_args()
    results = []
    for n_items in args.items:
        for method in args.methods:
            result = run(method, n_items, args.native_blas)
            results.append(result)
            if result["exit"]:
                print(f"{n_items:>6} items  {method:<11} FAILED: exit {result['exit']} ({result['failed']})",
                      flush=True)
            else:
                print(f"{n_items:>6} items  {method:<11} solve {result['solve_seconds']:7.1f} s  peak RSS "
                      f"{result['peak_rss_mb']:6,} MB  (Gram {result['gram_mb']:,} MB, built in "
                      f"{result['gram_seconds']:.1f} s)", flush=True)
        by_method = {r["method"]: r for r in results if r["items"] == n_items and not r["exit"]}
        if "kit" in by_method and "numpy_inv" in by_method:
            ratio = by_method["kit"]["solve_seconds"] / by_method["numpy_inv"]["solve_seconds"]
            print(f"{n_items:>6} items  kit / numpy.linalg.inv time: {ratio:.2f}x", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"native_blas": args.native_blas, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
