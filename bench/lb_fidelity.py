"""Does the kit's leaderboard estimate predict the leaderboard? A nested contest with hidden answers.

    python bench/lb_fidelity.py --data data/ml-1m --work /tmp/lbf-ml1m [--models popularity ease ...]

From a contest-layout data set, hide contest-like answers one level up (each user's last
`--n-last` items by time plus `--n-random` random earlier ones, keeping at least `--min-keep`),
write the rest as the public contest, and run the kit's own loop on it: `kit cv` of every model
(with the test scores both from the refit on every public row and from the fold average),
`kit ensemble` of all of them, `kit submit` of each, then grade every CSV against the hidden
answers with the contest's metric (Recall@10 = hits / min(10, |hidden|), mean over users).

Prints and writes JSON (`--out`, default bench/results/lb_fidelity-<data name>.json): per model
the OOF figure, the kit's leaderboard estimate, the nested leaderboard with `--refit full` and with
`folds`, the errors of estimate and OOF against the leaderboard, and whether the rankings agree.
Runs already finished in `--work` are reused, so a second call only redoes what is missing.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_kit.runs import store
from recsys_kit.config import HoldoutConfig, load_config
from recsys_kit.cv.run import run_cv
from recsys_kit.data.load import load_dataset
from recsys_kit.runs.run_dir import RunDir
from recsys_kit.blending.stack import StackOptions, run_stack
from recsys_kit.blending.ensemble import EnsembleOptions, blend_lb_estimate, run_ensemble
from recsys_kit.protocol.nested import grade, nested_contest
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.submission.contest_csv import write_submission

ROOT = Path(__file__).resolve().parents[1]


def finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").exists()


def run_model(model: str, public_dir: Path, runs_dir: Path, folds: int, overrides: list[str], seeds: int,
              estimate_seeds: int = 0) -> Path:
    run_dir = runs_dir / model
    if finished(run_dir):
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished run of this bench: start it again
    config = load_config(ROOT / "configs" / f"{model}.toml", overrides)
    run_cv(load_dataset(public_dir), config, folds, runs_dir, name=model, device="cpu",
           refit=RefitOptions(mode="both", seeds=seeds, estimate_seeds=estimate_seeds))
    return run_dir


def submit_and_grade(run_dir: Path, scores_name: str, answers: pd.DataFrame, out_dir: Path) -> float:
    """Through `kit submit`'s own writer; a fold-average submission is written from a copy."""
    source = run_dir
    if scores_name != "test_scores.npy":
        source = out_dir / f"{run_dir.name}-folds"
        source.mkdir(parents=True, exist_ok=True)
        for name in ("user_ids.npy", "item_ids.npy", "data.json"):
            shutil.copyfile(run_dir / name, source / name)
        (source / "test_scores.npy").unlink(missing_ok=True)
        (source / "test_scores.npy").symlink_to((run_dir / scores_name).resolve())
    csv = out_dir / f"{source.name}.csv"
    csv.unlink(missing_ok=True)
    write_submission(source, csv)
    return grade(csv, answers)


def stack_row(members: list[Path], public_dir: Path, runs_dir: Path, answers: pd.DataFrame, csv_dir: Path,
              candidates: int) -> dict:
    """`kit stack` of every model's run (with the public folder's times and side files), graded."""
    stack_dir = runs_dir / "stack"
    if stack_dir.exists() and not finished(stack_dir):
        shutil.rmtree(stack_dir)
    started = time.time()
    if not finished(stack_dir):
        run_stack(members, runs_dir, name="stack", options=StackOptions(candidates=candidates),
                  dataset=load_dataset(public_dir))
    metrics = store.read_json(stack_dir / "metrics.json")
    return {"model": "stack", "run": str(stack_dir), "oof": metrics["recall@10"]["mean"],
            "oof_std": metrics["recall@10"]["std"], "estimate": None, "estimate_interval90": None,
            "lb_refit_full": submit_and_grade(stack_dir, "test_scores.npy", answers, csv_dir),
            "lb_refit_folds": None, "choice": metrics.get("choice"), "candidate_recall": metrics["candidate_recall"],
            "cv_wall_seconds": metrics["wall_seconds"], "bench_seconds": round(time.time() - started, 1)}


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2:
        return None
    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="contest-layout folder (kit convert)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder: public data, runs, CSVs")
    parser.add_argument("--models", nargs="+",
                        default=["popularity", "ease", "multidae", "multidae_side", "multivae"])
    parser.add_argument("--n-last", type=int, default=1)
    parser.add_argument("--n-random", type=int, default=9)
    parser.add_argument("--min-keep", type=int, default=2)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--refit-seeds", type=int, default=0, help="kit cv --refit-seeds for every model (0 = auto)")
    parser.add_argument("--estimate-seeds", type=int, default=0,
                        help="fits per estimate level for every model (0 = as many as the refit bags)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the nested contest's answers")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for every model")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--candidates", type=int, default=50, help="kit stack --candidates")
    parser.add_argument("--no-stack", action="store_true", help="skip the kit stack row")
    parser.add_argument("--reestimate", action="store_true",
                        help="recompute each reused run's estimate from its lb_* rows with this kit's rule")
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"lb_fidelity-{args.data.name}.json"
    public_dir, runs_dir, csv_dir = args.work / "public", args.work / "runs", args.work / "submissions"
    answers_path = args.work / "answers.csv"
    if not answers_path.exists():
        rule = HoldoutConfig(n_last=args.n_last, n_random=args.n_random, min_input=args.min_keep)
        nested_contest(args.data, public_dir, rule, args.seed).to_csv(answers_path, index=False)
    answers = pd.read_csv(answers_path)
    csv_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for model in args.models:
        started = time.time()
        run_dir = run_model(model, public_dir, runs_dir, args.folds, args.overrides, args.refit_seeds,
                            args.estimate_seeds)
        metrics = store.read_json(run_dir / "metrics.json")
        if args.reestimate:
            member = RunDir(run_dir, store.read_json(run_dir / "data.json"), metrics)
            metrics["lb_estimate"] = blend_lb_estimate([member], np.ones(1), EnsembleOptions())
            metrics["recall@10"]["lb_estimate"] = metrics["lb_estimate"]["recall@10"]
        row = {"model": model, "run": str(run_dir), "oof": metrics["recall@10"]["mean"],
               "oof_std": metrics["recall@10"]["std"], "estimate": metrics["recall@10"].get("lb_estimate"),
               "estimate_interval90": metrics.get("lb_estimate", {}).get("interval90"),
               "lb_refit_full": submit_and_grade(run_dir, "test_scores.npy", answers, csv_dir),
               "lb_refit_folds": submit_and_grade(run_dir, "test_scores_folds.npy", answers, csv_dir),
               "cv_wall_seconds": metrics["wall_seconds"], "bench_seconds": round(time.time() - started, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    blend_dir = runs_dir / "ensemble"
    if blend_dir.exists() and not finished(blend_dir):
        shutil.rmtree(blend_dir)
    if len(rows) > 1 and not finished(blend_dir):
        run_ensemble([r["run"] for r in rows], runs_dir, name="ensemble", options=EnsembleOptions())
    if len(rows) > 1:
        blend = store.read_json(blend_dir / "metrics.json")
        if blend.get("lb_estimate", {}).get("recall@10") is not None and args.reestimate:
            members = [RunDir(Path(r["run"]), store.read_json(Path(r["run"]) / "data.json"),
                              store.read_json(Path(r["run"]) / "metrics.json")) for r in rows]
            blend["lb_estimate"] = blend_lb_estimate(members, np.asarray(blend["weights"]), EnsembleOptions())
            blend["recall@10"]["lb_estimate"] = blend["lb_estimate"]["recall@10"]
        rows.append({"model": "blend", "run": str(blend_dir), "oof": blend["recall@10"]["mean"],
                     "oof_std": blend["recall@10"]["std"], "estimate": blend["recall@10"].get("lb_estimate"),
                     "estimate_interval90": (blend.get("lb_estimate") or {}).get("interval90"),
                     "lb_refit_full": submit_and_grade(blend_dir, "test_scores.npy", answers, csv_dir),
                     "lb_refit_folds": None, "choice": blend.get("choice"),
                     "cv_wall_seconds": blend["wall_seconds"]})

    if len([r for r in rows if r["model"] != "blend"]) > 1 and not args.no_stack:
        rows.append(stack_row([Path(r["run"]) for r in rows if r["model"] != "blend"], public_dir, runs_dir,
                              answers, csv_dir, args.candidates))

    for row in rows:
        lb = row["lb_refit_full"]
        row["estimate_error"] = None if row.get("estimate") is None else row["estimate"] / lb - 1
        row["oof_error"] = row["oof"] / lb - 1
    singles = [r for r in rows if r["model"] not in ("blend", "stack") and r["estimate"] is not None]
    summary = {
        "data": str(args.data), "answers": {"n_last": args.n_last, "n_random": args.n_random,
                                            "min_keep": args.min_keep, "seed": args.seed,
                                            "users": int(answers["user"].nunique()), "pairs": len(answers)},
        "rank_spearman_estimate_vs_lb": spearman([r["estimate"] for r in singles],
                                                 [r["lb_refit_full"] for r in singles]),
        "rank_spearman_oof_vs_lb": spearman([r["oof"] for r in rows if r["model"] not in ("blend", "stack")],
                                            [r["lb_refit_full"] for r in rows
                                             if r["model"] not in ("blend", "stack")]),
        "same_best_model": (max(singles, key=lambda r: r["estimate"])["model"] ==
                            max(singles, key=lambda r: r["lb_refit_full"])["model"]) if singles else None,
        "rows": rows}
    print(f"\n{args.data.name}: nested contest, {summary['answers']['users']:,} users, hidden = last "
          f"{args.n_last} + {args.n_random} random (keep >= {args.min_keep})")
    print(f"{'model':<14}{'OOF':>8}{'estimate':>10}{'LB full':>10}{'LB folds':>10}{'est err':>9}{'OOF err':>9}")
    for r in rows:
        estimate = f"{r['estimate']:.4f}" if r["estimate"] is not None else "-"
        folds = f"{r['lb_refit_folds']:.4f}" if r["lb_refit_folds"] is not None else "-"
        error = f"{100 * r['estimate_error']:+.1f}%" if r["estimate_error"] is not None else "-"
        print(f"{r['model']:<14}{r['oof']:>8.4f}{estimate:>10}{r['lb_refit_full']:>10.4f}{folds:>10}"
              f"{error:>9}{100 * r['oof_error']:>+8.1f}%")
    def fmt(value):
        return "-" if value is None else f"{value:.2f}"

    print(f"rank agreement (Spearman) estimate vs LB {fmt(summary['rank_spearman_estimate_vs_lb'])}, "
          f"OOF vs LB {fmt(summary['rank_spearman_oof_vs_lb'])}; same best model: {summary['same_best_model']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
