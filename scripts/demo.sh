#!/usr/bin/env bash
# The kit's main job end to end on a synthetic contest. Nothing is overwritten: data is made
# once, every run gets a new directory, every CSV a new name.
set -euo pipefail
kit=${1:-kit}
data=demo/data
started=$(date +%s)
[ -f "$data/train_ratings.csv" ] || "$kit" synth "$data" | tail -n 1
run=$("$kit" cv --data "$data" --config configs/multidae.toml --folds 5 --runs-dir demo/runs | tail -n 1)
csv=$("$kit" submit "$run" --out "demo/submissions/$(basename "$run").csv" | tail -n 1)
"$kit" validate "$csv" --data "$data"
python3 - "$run" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/metrics.json"))["recall@10"]
print(f"OOF Recall@10: {m['mean']:.4f} +- {m['std']:.4f}  ({sys.argv[1]})")
PY
echo "submission: $csv  ($(( $(date +%s) - started )) s)"
