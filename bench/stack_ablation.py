"""What each feature group of `kit stack` contributes: drop one group, refit, grade on a nested leaderboard.

    python bench/stack_ablation.py --work /tmp/lbf-mls [--candidates 50] [--out JSON]

--work is a finished `bench/lb_fidelity.py` folder (public data, answers.csv, runs/ with the members'
cv runs). The stack of every member there is fitted with all features (absolute counts, and counts
over their level's own scale: StackOptions.relative), then once per group of
recsys_kit.blending.stack_features.GROUPS left out (the group's columns are missing to the ranker;
counts as --relative says), each without the fallback so the ranker itself is graded; each row gives
the stack's OOF Recall@10 and its nested-leaderboard Recall@10, and the change against the first row.
--groups none: the two full rows only. Writes JSON (default bench/results/stack_ablation-<work>.json).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from fallback_rule import members_of  # noqa: E402
from lb_fidelity import finished, submit_and_grade  # noqa: E402
from recsys_kit.blending.stack import StackOptions, run_stack  # noqa: E402
from recsys_kit.blending.stack_features import GROUPS  # noqa: E402
from recsys_kit.data.load import load_dataset  # noqa: E402
from recsys_kit.runs import store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--relative", action="store_true", help="the ablation rows with relative counts")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), help="groups to drop one at a time, or none")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"stack_ablation-{args.work.name}.json"
    runs_dir, csv_dir = args.work / "runs", args.work / "submissions"
    csv_dir.mkdir(exist_ok=True)
    answers = pd.read_csv(args.work / "answers.csv")
    dataset = load_dataset(args.work / "public")
    members = members_of(runs_dir, None)
    variants = [("all", {}), ("all, relative", {"relative": True})]
    variants += [(f"drop {group}", {"drop": (group,), "relative": args.relative})
                 for group in args.groups if group != "none"]
    rows = []
    for label, change in variants:
        name = "ablation-" + label.replace(", ", "-").replace(" ", "-")
        if not finished(runs_dir / name):
            run_stack(members, runs_dir, name=name, dataset=dataset,
                      options=StackOptions(candidates=args.candidates, fallback=False, **change))
        metrics = store.read_json(runs_dir / name / "metrics.json")
        rows.append({"variant": label, "oof": metrics["recall@10"]["mean"],
                     "lb": submit_and_grade(runs_dir / name, "test_scores.npy", answers, csv_dir)})
        print(json.dumps(rows[-1]), flush=True)
    full = rows[0]
    for row in rows:
        row["oof_change"], row["lb_change"] = row["oof"] - full["oof"], row["lb"] - full["lb"]
    print(f"\n{args.work.name}: members {[m.name for m in members]}")
    print(f"{'variant':<20}{'OOF':>9}{'change':>9}{'LB':>9}{'change':>9}")
    for row in rows:
        print(f"{row['variant']:<20}{row['oof']:>9.4f}{row['oof_change']:>+9.4f}{row['lb']:>9.4f}"
              f"{row['lb_change']:>+9.4f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"work": str(args.work), "members": [m.name for m in members], "rows": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
