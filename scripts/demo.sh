#!/usr/bin/env bash
# The kit's main job end to end on a synthetic contest: synth -> cv of two models (EASE and
# Multi-DAE, same folds) -> fitted blend -> submit -> validate. Nothing is overwritten: data is
# made once, every run gets a new directory, every CSV a new name.
set -euo pipefail
kit=${1:-kit}
python=$(dirname "$kit")/python
[ -x "$python" ] || python=python3
data=demo/data
started=$(date +%s)
[ -f "$data/train_ratings.csv" ] || "$kit" synth "$data" | tail -n 1
ease=$("$kit" cv --data "$data" --config configs/ease.toml --folds 5 --runs-dir demo/runs | tail -n 1)
dae=$("$kit" cv --data "$data" --config configs/multidae.toml --folds 5 --runs-dir demo/runs | tail -n 1)
blend=$("$kit" ensemble "$ease" "$dae" --runs-dir demo/runs | tail -n 1)
csv=$("$kit" submit "$blend" --out "demo/submissions/$(basename "$blend").csv" | tail -n 1)
"$kit" validate "$csv" --data "$data"
"$python" - "$ease" "$dae" "$blend" <<'PY'
import json, sys
for run in sys.argv[1:]:
    m = json.load(open(f"{run}/metrics.json"))["recall@10"]
    estimate = f"  leaderboard estimate {m['lb_estimate']:.4f}" if m.get("lb_estimate") is not None else ""
    print(f"OOF Recall@10 {m['mean']:.4f} +- {m['std']:.4f}{estimate}  {run}")
blend = json.load(open(f"{sys.argv[-1]}/metrics.json"))
print(f"blend on the held-out half of the users: Recall@10 {blend['holdout_half']['recall@10']:.4f}; "
      f"submitting: {blend['choice']['used']}")
PY
echo "submission: $csv  ($(( $(date +%s) - started )) s)"
