"""The README results table for one data set: every member's 5-fold OOF and the blends of them.

    python bench/members_table.py --data data/mls --work /tmp/table-mls [--models ease transition ...]
        [--device cpu] [--set train.epochs=20] [--folds 5]

Runs `run_cv` for each model (the test scores from one refit on every public row, no leaderboard
estimate: the table is about OOF), then `run_ensemble` of all of them with the fitted blend and
with the slot-reserving blend. Prints per model OOF Recall@10 mean +- std, NDCG@10, Recall@10 on
the time-tail item alone and on the random picks alone, wall seconds; per blend its held-out-half
Recall@10 next to the best member's on the same half; the blend's OOF over EASE's; and per run the
time-consistency filter's OOF Recall@10 off and at its fitted margin. Writes JSON
(`--out`, default bench/results/members-<data name>.json). Finished runs in `--work` are reused.
Library calls only (no optuna), so it also runs on a GPU machine without the CLI's extras.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import recsys_kit.models  # noqa: F401  (registers the model configs)
from recsys_kit.config import load_config
from recsys_kit.cv.run import run_cv
from recsys_kit.data.load import load_dataset
from recsys_kit.blending.ensemble import EnsembleOptions, run_ensemble
from recsys_kit.cv.refit import RefitOptions

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("ease", "ease_recency", "transition", "sasrec")


def read_metrics(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def member_row(name: str, metrics: dict) -> dict:
    by_target = metrics.get("by_target", {})
    return {"model": name, "recall": metrics["recall@10"]["mean"], "std": metrics["recall@10"]["std"],
            "ndcg": metrics["ndcg@10"]["mean"], "last": by_target.get("last", {}).get("recall@10"),
            "random": by_target.get("random", {}).get("recall@10"), "seconds": metrics["wall_seconds"],
            "time_filter": metrics.get("time_filter")}


def blend_row(method: str, metrics: dict) -> dict:
    members = metrics["members"]
    best = max(members, key=lambda m: m["holdout_half"]["recall@10"])
    return {"model": f"blend ({method})", "recall": metrics["recall@10"]["mean"], "std": metrics["recall@10"]["std"],
            "ndcg": metrics["ndcg@10"]["mean"], "half": metrics["holdout_half"]["recall@10"],
            "best_member_half": best["holdout_half"]["recall@10"], "best_member": best["name"],
            "choice": metrics.get("choice", {}).get("used"), "slots": metrics.get("slots"),
            "weights": {m["name"]: round(m["weight"], 3) for m in members}, "seconds": metrics["wall_seconds"],
            "time_filter": metrics.get("time_filter")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="MODEL:key=value for one model or key=value for all, e.g. sasrec:train.epochs=20")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    out = args.out or ROOT / "bench" / "results" / f"members-{args.data.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, run_dirs = [], []

    def save():  # after every run: a run cut short by a time limit keeps what finished
        out.write_text(json.dumps({"data": str(args.data), "device": args.device, "folds": args.folds,
                                   "rows": rows}, indent=2) + "\n")

    for model in args.models:
        run_dir = args.work / model
        metrics = read_metrics(run_dir)
        if metrics is None:
            overrides = [o.split(":", 1)[1] if ":" in o else o for o in args.overrides
                         if ":" not in o or o.split(":", 1)[0] == model]
            config = load_config(ROOT / "configs" / f"{model}.toml", overrides)
            started = time.time()
            print(f"cv {model} ...", flush=True)
            run_cv(dataset, config, args.folds, args.work, name=model, device=args.device,
                   refit=RefitOptions(mode="full", seeds=1, lb_estimate=False))
            metrics = read_metrics(run_dir)
            print(f"  done in {time.time() - started:.0f} s", flush=True)
        rows.append(member_row(model, metrics))
        run_dirs.append(run_dir)
        save()
    for method in ("fit", "slots"):
        blend_dir = args.work / f"blend-{method}"
        metrics = read_metrics(blend_dir)
        if metrics is None:
            run_ensemble(run_dirs, args.work, name=f"blend-{method}", options=EnsembleOptions(method=method))
            metrics = read_metrics(blend_dir)
        rows.append(blend_row(method, metrics))
        save()

    ease = next((row["recall"] for row in rows if row["model"] == "ease"), None)
    print(f"\n{args.data.name}: {dataset.n_users:,} users x {dataset.n_items:,} items, {dataset.matrix.nnz:,} "
          f"interactions, {args.folds}-fold, device {args.device}")
    print(f"{'model':<16}{'Recall@10':>18}{'NDCG@10':>9}{'last':>8}{'random':>8}{'half':>8}{'best half':>10}"
          f"{'xEASE':>7}{'wall':>7}")
    for row in rows:
        half = f"{row['half']:.4f}" if "half" in row else ""
        best = f"{row['best_member_half']:.4f}" if "half" in row else ""
        last = f"{row['last']:.4f}" if row.get("last") is not None else ""
        random_ = f"{row['random']:.4f}" if row.get("random") is not None else ""
        ratio = f"{row['recall'] / ease:.3f}" if ease else ""
        print(f"{row['model']:<16}{row['recall']:>9.4f} +- {row['std']:.4f}{row['ndcg']:>9.4f}{last:>8}{random_:>8}"
              f"{half:>8}{best:>10}{ratio:>7}{row['seconds']:>6.0f}s")
    for row in rows:
        if "half" in row:
            print(f"{row['model']}: choice {row['choice']}, weights {row['weights']}, slots {row['slots']}")
    for row in rows:  # the time-consistency filter, fitted on each run's OOF (in-sample: a small grid of margins)
        fitted = row.get("time_filter") or {}
        if "recall@10_off" in fitted:
            margin = "none kept" if fitted.get("margin") is None else f"margin {fitted['margin']:g}"
            half = fitted.get("holdout_half")
            half_text = f"; fitted on half A, on half B {half['gain']:+.4f}" if half else ""
            print(f"time filter {row['model']}: {fitted['recall@10_off']:.4f} -> {fitted['recall@10']:.4f} "
                  f"({margin}, gain {fitted['gain']:+.4f}{half_text})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
