"""The public leaderboard in the loop: every submitted CSV and every public score, one append-only ledger.

`kit submit` appends a "submit" record (the CSV's path and digest, the run that wrote it) to
`ledger.jsonl` in the run's runs directory; `kit lb CSV|RUN SCORE` appends a "public" record,
matched to its run through the CSV's digest, so a renamed or moved CSV still finds its run. Lines
are only ever appended (recsys_kit.files.append_line), never rewritten: the ledger is the team's
table of local score against public score that every team kept by hand.

`calibrate` turns the recorded pairs (the run's leaderboard estimate, or OOF Recall@10 when it has
none, against its public score) into a ratio that corrects every other run's figure on the same
data: one pair gives its ratio; more give the geometric mean of the ratios with a t interval;
pairs of the run's own model, when there are any, are used alone (its bias is its own).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from recsys_kit import files
from recsys_kit.errors import DataError, where

LEDGER = "ledger.jsonl"
# Pairs of the same model before its own ratio replaces the ratio of all pairs. One: on a nested
# contest hiding the last 3 + 7 random (ml-latest-small), the estimate's error had opposite signs
# for EASE (+14%) and transition (-17%), so other models' ratios made it worse (docs/results.md).
FAMILY_PAIRS = 1


def csv_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _append(runs_dir: Path, record: dict) -> dict:
    record = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    files.append_line(Path(runs_dir) / LEDGER, json.dumps(record, sort_keys=True))
    return record


def record_submission(run_dir: Path, csv_path: Path) -> dict:
    """A "submit" record in the run's runs directory: which run wrote this CSV (by its digest)."""
    run_dir = Path(run_dir).resolve()
    return _append(run_dir.parent, {"kind": "submit", "run": str(run_dir), "csv": str(Path(csv_path).resolve()),
                                    "digest": csv_digest(csv_path)})


def read_ledger(runs_dir: Path) -> list[dict]:
    """Every record, oldest first ([] when nothing was submitted yet)."""
    path = Path(runs_dir) / LEDGER
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{where(path, number)}: not a JSON record; the ledger is append-only, so "
                            f"remove that line by hand") from None
        records.append(record)
    return records


def record_public(target: Path, score: float, runs_dir: Path | None = None, note: str | None = None) -> dict:
    """A "public" record: `score` on the leaderboard for a run directory, or for a CSV that `kit submit`
    wrote (found through its digest in `runs_dir`'s ledger)."""
    from recsys_kit.runs.run_dir import RunDir

    if not (isinstance(score, (int, float)) and 0 <= score <= 1):
        raise DataError(f"SCORE {score!r}: a Recall@10 lies between 0 and 1; pass the public score as shown")
    target = Path(target)
    if target.is_dir():
        run = RunDir(target).require_finished()
        return _append(run.path.resolve().parent, {"kind": "public", "run": str(run.path.resolve()),
                                                   "score": float(score), "note": note})
    if not target.is_file():
        raise DataError(f"{target}: no such CSV or run directory; pass the submitted CSV or its run")
    digest = csv_digest(target)
    ledger_dir = Path(runs_dir) if runs_dir is not None else Path("runs")
    submitted = [r for r in read_ledger(ledger_dir) if r.get("kind") == "submit" and r.get("digest") == digest]
    if not submitted:
        raise DataError(f"{target}: no `kit submit` recorded in {ledger_dir / LEDGER} wrote this file (digest "
                        f"{digest}); pass the run directory instead, or --runs-dir where its run lives")
    return _append(ledger_dir, {"kind": "public", "run": submitted[-1]["run"], "csv": str(target.resolve()),
                                "digest": digest, "score": float(score), "note": note})


def public_scores(runs_dir: Path) -> dict[str, float]:
    """Run path -> its latest recorded public score."""
    return {r["run"]: float(r["score"]) for r in read_ledger(runs_dir) if r.get("kind") == "public"}


@dataclass(frozen=True)
class Pair:
    run: str
    model: str | None
    base: float  # the run's leaderboard estimate (or OOF Recall@10 when it has none)
    public: float


@dataclass(frozen=True)
class Calibrated:
    value: float
    interval90: tuple[float, float] | None  # None with one pair
    pairs: int
    family: str | None  # the model family whose own pairs were used, None: every pair


def ratio_of(pairs: list[Pair]) -> tuple[float, tuple[float, float] | None]:
    """The geometric mean of public / base over the pairs, with a 90% t interval from two pairs on."""
    logs = [math.log(p.public / p.base) for p in pairs if p.base > 0 and p.public > 0]
    if not logs:
        raise ValueError("no pair with positive figures")
    mean = sum(logs) / len(logs)
    if len(logs) < 2:
        return math.exp(mean), None
    from scipy import stats

    spread = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1) / len(logs))
    half = stats.t.ppf(0.95, len(logs) - 1) * spread
    return math.exp(mean), (math.exp(mean - half), math.exp(mean + half))


def calibrate(base: float | None, model: str | None, pairs: list[Pair], run: str | None = None) -> Calibrated | None:
    """`base` corrected by the recorded pairs of the same data (the run's own pair left out)."""
    pairs = [p for p in pairs if p.run != run and p.base > 0 and p.public > 0]
    if base is None or not pairs:
        return None
    family = [p for p in pairs if p.model == model]
    used = family if model is not None and len(family) >= FAMILY_PAIRS else pairs
    ratio, interval = ratio_of(used)
    return Calibrated(base * ratio, None if interval is None else (base * interval[0], base * interval[1]),
                      len(used), model if used is family else None)
