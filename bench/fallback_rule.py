"""Which fallback rule scores better on nested leaderboards: all or nothing, or shrinking?

    python bench/fallback_rule.py --work /tmp/lbf-mls /tmp/lbf-ml100k ... [--out JSON]

Each --work folder is a finished `bench/lb_fidelity.py` run (public data, answers.csv, runs/ with
the members' cv runs). For each, `kit ensemble` of the same members (method fit) is run three
times, changing only the fallback rule:
  clear   today's rule: the fitted blend when the held-out gain's 90% interval is above zero,
          else the best member by OOF alone;
  shrink  the same when clear; else the fitted weights times P(gain > 0), the rest on the best
          member (P from the same bootstrap over half B's users);
  none    the fitted blend always (--no-fallback), for reference;
and each CSV is graded against the hidden answers (the nested leaderboard). Prints one row per
contest and writes JSON (default bench/results/fallback_rule.json).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from lb_fidelity import finished, submit_and_grade  # noqa: E402
from recsys_kit.blending.ensemble import EnsembleOptions, run_ensemble  # noqa: E402
from recsys_kit.runs import store  # noqa: E402

RULES = {"clear": EnsembleOptions(fallback_rule="clear"), "shrink": EnsembleOptions(fallback_rule="shrink"),
         "none": EnsembleOptions(fallback=False)}


def members_of(runs_dir: Path, wanted: list[str] | None) -> list[Path]:
    """The finished cv runs in runs_dir (a blend's or a stack's config.json names its kind; a cv run's does not)."""
    runs = sorted(p for p in runs_dir.iterdir() if p.is_dir() and finished(p)
                  and "kind" not in store.read_json(p / "config.json"))
    return [p for p in runs if wanted is None or p.name in wanted]


def contest_row(work: Path, wanted: list[str] | None) -> dict:
    runs_dir, answers = work / "runs", pd.read_csv(work / "answers.csv")
    csv_dir = work / "submissions"
    csv_dir.mkdir(exist_ok=True)
    members = members_of(runs_dir, wanted)
    row = {"work": str(work), "members": [m.name for m in members],
           "member_lb": {m.name: submit_and_grade(m, "test_scores.npy", answers, csv_dir) for m in members}}
    for rule, options in RULES.items():
        name = f"rule-{rule}"
        if not finished(runs_dir / name):
            run_ensemble([str(m) for m in members], runs_dir, name=name, options=replace(options))
        metrics = store.read_json(runs_dir / name / "metrics.json")
        choice = metrics["choice"]
        row[rule] = {"lb": submit_and_grade(runs_dir / name, "test_scores.npy", answers, csv_dir),
                     "oof": metrics["recall@10"]["mean"], "used": choice["used"],
                     "weights": choice.get("weights"), "shrink_share": choice.get("shrink_share"),
                     "gain_half_b": choice.get("gain_half_b"), "gain_interval90": choice.get("gain_interval90")}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, nargs="+", required=True, help="finished lb_fidelity.py folders")
    parser.add_argument("--members", nargs="+", help="member run names (default: every cv run there)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fallback_rule.json")
    args = parser.parse_args()
    rows = []
    print(f"{'contest':<22}{'gain (90%)':>26}{'share':>7}{'clear':>9}{'shrink':>9}{'none':>9}{'best m.':>9}")
    for work in args.work:
        row = contest_row(work, args.members)
        rows.append(row)
        interval = row["clear"]["gain_interval90"] or [float("nan")] * 2
        gain = row["clear"]["gain_half_b"]
        gain = gain.get("mean") if isinstance(gain, dict) else gain
        share = row["shrink"]["shrink_share"]
        print(f"{work.name:<22}{gain:>+9.4f} [{interval[0]:+.4f},{interval[1]:+.4f}]"
              f"{'-' if share is None else f'{share:.2f}':>7}{row['clear']['lb']:>9.4f}{row['shrink']['lb']:>9.4f}"
              f"{row['none']['lb']:>9.4f}{max(row['member_lb'].values()):>9.4f}", flush=True)
    wins = sum(r["shrink"]["lb"] > r["clear"]["lb"] for r in rows)
    losses = sum(r["shrink"]["lb"] < r["clear"]["lb"] for r in rows)
    mean_ratio = sum(r["shrink"]["lb"] / r["clear"]["lb"] for r in rows) / len(rows)
    summary = {"rows": rows, "shrink_vs_clear": {"better": wins, "worse": losses, "mean_ratio": mean_ratio}}
    print(f"shrink vs clear: better on {wins}, worse on {losses} of {len(rows)}; mean LB ratio {mean_ratio:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
