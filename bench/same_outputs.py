"""Does a refactor change what the kit writes? A fixed list of commands, every output digested.

    python bench/same_outputs.py --work /tmp/same-before --out before.json
    ... change the code ...
    python bench/same_outputs.py --work /tmp/same-after --out after.json --compare before.json

Runs `kit` (this checkout's, through its Typer app in a subprocess) on ml-100k converted to the
contest layout: `kit cv` of every model config with two epochs and 3 folds, `kit ensemble` of
three of them with each method, `kit submit` of a cv run, of each blend and with the time
filter, and `kit validate`. Every output is digested: each `.npy` by its bytes (bit-identical on
the CPU), each CSV by its bytes, each JSON by its values with wall times, host facts and the
work folder's path left out. `--compare` lists every digest that differs and exits 1 if any do.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout, or RECSYS_SHARED where a worktree sits elsewhere.
ML100K = Path(os.environ.get("RECSYS_SHARED", ROOT.parent / "shared")) / "data" / "ml-100k"
# Two epochs keep the autoencoders' and SASRec's runs short; the estimate's deeper fits stay on.
MODELS = {
    "popularity": [], "ease": [], "ease_user": [], "ease_recency": [], "transition": [],
    "multidae": ["train.epochs=2"], "multidae_side": ["train.epochs=2"], "multivae": ["train.epochs=2"],
    "recvae": ["train.epochs=2"], "sasrec": ["train.epochs=2"],
}
BLEND_MEMBERS = ("ease", "multidae", "transition")
METHODS = ("fit", "slots", "vote", "mean")
# Values that differ from one run to the next on the same inputs: clocks, the host, versions.
VOLATILE_KEY = re.compile(r"seconds|wall|elapsed|started|finished_at|created|^host|platform|python|"
                          r"versions?$|^torch$|^numpy$|hostname|^pid$|cpu|threads")


def kit(*args: str) -> str:
    command = [sys.executable, "-c", "from cli.main import app; app()", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"kit {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def scrub(value, work: str):
    if isinstance(value, dict):
        return {key: scrub(item, work) for key, item in value.items() if not VOLATILE_KEY.search(str(key))}
    if isinstance(value, list):
        return [scrub(item, work) for item in value]
    if isinstance(value, str):
        return value.replace(work, "<work>")
    return value


def digest(path: Path, work: str) -> str:
    if path.suffix == ".json":
        try:
            value = scrub(json.loads(path.read_text()), work)
        except json.JSONDecodeError:  # a journal of JSON lines (Optuna): one record per line
            value = [scrub(json.loads(line), work) for line in path.read_text().splitlines() if line]
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest_tree(root: Path, work: str) -> dict[str, str]:
    skipped = {".lock", ".log", ".html", ".png"}
    return {str(path.relative_to(root)): digest(path, work) for path in sorted(root.rglob("*"))
            if path.is_file() and path.suffix not in skipped and "cache" not in path.parts}


def run_all(work: Path) -> None:
    data, runs_dir, out = work / "data", work / "runs", work / "submissions"
    kit("convert", "movielens-100k", str(ML100K), str(data))
    for model, overrides in MODELS.items():
        sets = [arg for value in overrides for arg in ("--set", value)]
        kit("cv", "--data", str(data), "--config", f"configs/{model}.toml", "--folds", "3", "--name", model,
            "--runs-dir", str(runs_dir), "--device", "cpu", *sets)
    members = [str(runs_dir / model) for model in BLEND_MEMBERS]
    for method in METHODS:
        kit("ensemble", *members, "--method", method, "--name", f"blend-{method}", "--runs-dir", str(runs_dir))
    out.mkdir(parents=True)
    for run in ("ease", "sasrec", *(f"blend-{method}" for method in METHODS)):
        csv = kit("submit", str(runs_dir / run), "--out", str(out / f"{run}.csv"))
        kit("validate", csv, "--data", str(data))
    kit("submit", str(runs_dir / "ease"), "--out", str(out / "ease-time-filter.csv"), "--time-filter")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="an empty or absent folder for the runs")
    parser.add_argument("--out", type=Path, required=True, help="JSON of every output's digest")
    parser.add_argument("--compare", type=Path, help="a JSON written by an earlier call")
    args = parser.parse_args()
    if args.work.exists() and any(args.work.iterdir()):
        raise SystemExit(f"{args.work} is not empty: give a new folder")
    args.work.mkdir(parents=True, exist_ok=True)
    work = str(args.work.resolve())
    run_all(args.work.resolve())
    digests = digest_tree(args.work.resolve(), work)
    args.out.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    print(f"{len(digests)} outputs digested -> {args.out}")
    if args.compare:
        before = json.loads(args.compare.read_text())
        names = sorted(set(before) | set(digests))
        differ = [name for name in names if before.get(name) != digests.get(name)]
        for name in differ:
            print(f"differs: {name} ({'missing before' if name not in before else 'missing now' if name not in digests else 'content'})")
        print(f"{len(names) - len(differ)} of {len(names)} outputs equal")
        raise SystemExit(1 if differ else 0)


if __name__ == "__main__":
    main()
