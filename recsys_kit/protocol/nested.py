"""A nested contest: hide contest-like answers from a data set, so a submission can be graded.

The kit's leaderboard estimate is checked against it (bench/lb_fidelity.py): the public part
is written as a contest folder, the kit runs on it as on a real contest, and every CSV is
graded against the answers with the contest's own metric.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_kit.config import HoldoutConfig
from recsys_kit.data.load import RATINGS_FILE, SIDE_FILES, load_dataset
from recsys_kit.protocol.holdout import contest_holdout
from recsys_kit.protocol.metrics import K


def nested_contest(data_dir: Path, public_dir: Path, rule: HoldoutConfig, seed: int) -> pd.DataFrame:
    """Write the public part of `data_dir` as a contest folder; return the hidden answers (original ids)."""
    dataset = load_dataset(data_dir)
    # The contest's recipe as given: it does not adapt to short rows (the kit's holdout may).
    split = contest_holdout(dataset.matrix, dataset.times, dataclasses.replace(rule, adapt_short=False), seed,
                           dataset.source)
    public = split.input.tocoo()
    times = split.input_times.tocoo()
    frame = pd.DataFrame({"user": dataset.user_ids[public.row], "item": dataset.item_ids[public.col],
                          "time": times.data})
    if np.all(frame["time"] == frame["time"].round()):
        frame["time"] = frame["time"].astype(np.int64)
    public_dir = Path(public_dir)
    public_dir.mkdir(parents=True, exist_ok=True)
    frame.sort_values(["user", "time"], kind="stable").to_csv(public_dir / RATINGS_FILE, index=False)
    for name in SIDE_FILES:
        if (Path(data_dir) / f"{name}.tsv").exists():
            shutil.copyfile(Path(data_dir) / f"{name}.tsv", public_dir / f"{name}.tsv")
    hidden = split.target.tocoo()
    return pd.DataFrame({"user": dataset.user_ids[hidden.row], "item": dataset.item_ids[hidden.col]})


def grade(csv_path: Path, answers: pd.DataFrame) -> float:
    """The contest's Recall@10 of a submission CSV: hits / min(10, |hidden|), mean over answered users."""
    submitted = pd.read_csv(csv_path)
    hits = submitted.merge(answers, on=["user", "item"]).groupby("user").size()
    hidden = answers.groupby("user").size()
    return float((hits.reindex(hidden.index, fill_value=0) / np.minimum(K, hidden)).mean())
