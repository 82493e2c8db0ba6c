"""The time-consistency filter's effect per run, refitted from what the runs saved (no training).

    python bench/time_filter_table.py RUN_DIR [RUN_DIR ...] [--out bench/results/time_filter-<name>.json]

For each `kit cv` or `kit ensemble` run made with a refit (it holds `time_filter.npz`): OOF
Recall@10 with the filter off, at the margin fitted on every user (in-sample: the best of a few
margins), and the held-out figure: the margin fitted on half the users, scored on the other half
against the filter off there. A run without times says so. Library calls only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from recsys_kit.runs import store
from recsys_kit.protocol import time_filter


def filter_row(run_dir: Path) -> dict:
    oof_scores = store.load_scores(run_dir, "oof_scores.npy")
    target = store.load_sparse(run_dir, "holdout_target.npz")
    fitted = time_filter.margin_report(oof_scores, target, time_filter.load_times(run_dir))
    name = f"{run_dir.resolve().parent.name}/{run_dir.name}"  # parent/run: runs of one model differ by folder
    return {"run": str(run_dir), "name": name, **{k: v for k, v in fitted.items() if k != "tried"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = [filter_row(run_dir) for run_dir in args.run_dirs]
    print(f"{'run':<24}{'off':>8}{'margin':>12}{'on':>8}{'gain':>9}{'half B off':>12}{'half B on':>11}{'gain B':>9}")
    for row in rows:
        if "recall@10_off" not in row:
            print(f"{row['name']:<24} {row.get('reason')}")
            continue
        half = row["holdout_half"]
        margin = "none" if row["margin"] is None else f"{row['margin']:g}"
        print(f"{row['name']:<24}{row['recall@10_off']:>8.4f}{margin:>12}{row['recall@10']:>8.4f}{row['gain']:>+9.4f}"
              f"{half['recall@10_off']:>12.4f}{half['recall@10']:>11.4f}{half['gain']:>+9.4f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
