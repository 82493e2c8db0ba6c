"""How many recorded public scores does the calibrated estimate need? Measured on nested contests.

    python bench/lb_calibration.py bench/results/lb_fidelity-mls.json [more lb_fidelity JSON ...]
    python bench/lb_calibration.py --pool A.json B.json C.json   # runs of one contest, pooled

`--pool`: the files are runs on one nested contest (e.g. EASE at several l2, one lb_fidelity work
folder each) and are read as one contest's models; runs of one model then calibrate each other
through their own model's pairs, as a team's usual uploads would.

Reads what bench/lb_fidelity.py measured (per model: the kit's leaderboard estimate and the nested
leaderboard's Recall@10 of its submission). For every model, and every choice of k other models
whose public scores a team would have recorded (k = 1, 2, 3; all combinations), the calibrated
estimate is the model's estimate times the geometric mean of those models' public / estimate
(recsys_kit.submission.ledger.calibrate, the rule `kit runs` applies). Prints the mean and the
largest absolute error against the nested leaderboard, beside the uncalibrated estimate's, and
writes JSON (`--out`, default bench/results/lb_calibration.json).
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from recsys_kit.submission.ledger import Pair, calibrate

ROOT = Path(__file__).resolve().parents[1]


def errors(rows: list[dict], k: int) -> list[float]:
    """|calibrated / leaderboard - 1| of every model, over every k-subset of the other models."""
    out = []
    for row in rows:
        others = [r for r in rows if r is not row]
        for chosen in itertools.combinations(others, k):
            pairs = [Pair(r["model"], r["model"], r["estimate"], r["lb_refit_full"]) for r in chosen]
            fitted = calibrate(row["estimate"], row["model"], pairs)
            out.append(abs(fitted.value / row["lb_refit_full"] - 1))
    return out


def contests(paths: list[Path], pool: bool) -> list[tuple[dict, list[dict]]]:
    """(one file's header, its models' rows) per contest; with `pool`, one contest of every file's rows
    (the same nested answers are checked, so the files are runs on one contest)."""
    measured = [json.loads(path.read_text()) for path in paths]
    rows = [[r for r in m["rows"] if r["model"] not in ("blend", "stack") and r.get("estimate")] for m in measured]
    if not pool:
        return list(zip(measured, rows))
    if any(m["answers"] != measured[0]["answers"] for m in measured):
        raise SystemExit("--pool: the files hold different nested contests (their 'answers' differ)")
    return [(measured[0], [row for group in rows for row in group])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="JSON written by bench/lb_fidelity.py")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lb_calibration.json")
    parser.add_argument("--pool", action="store_true", help="the files are runs on one contest: pool their rows")
    args = parser.parse_args()
    report = []
    print(f"{'contest':<34}{'models':>7}{'k':>3}{'mean |err|':>12}{'max |err|':>11}{'cases':>7}")
    for measured, rows in contests(args.results, args.pool):
        hidden = measured["answers"]
        name = f"{Path(measured['data']).name} (last {hidden['n_last']} + {hidden['n_random']} random)"
        plain = [abs(r["estimate"] / r["lb_refit_full"] - 1) for r in rows]
        entry = {"contest": name, "models": [r["model"] for r in rows], "uncalibrated": {
            "mean_abs_error": float(np.mean(plain)), "max_abs_error": float(np.max(plain)), "cases": len(plain)}}
        print(f"{name:<34}{len(rows):>7}{'-':>3}{100 * np.mean(plain):>11.1f}%{100 * np.max(plain):>10.1f}%"
              f"{len(plain):>7}")
        for k in (1, 2, 3):
            if len(rows) <= k:
                continue
            values = errors(rows, k)
            entry[f"k={k}"] = {"mean_abs_error": float(np.mean(values)), "max_abs_error": float(np.max(values)),
                               "cases": len(values)}
            print(f"{'':<34}{'':>7}{k:>3}{100 * np.mean(values):>11.1f}%{100 * np.max(values):>10.1f}%"
                  f"{len(values):>7}")
        report.append(entry)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
