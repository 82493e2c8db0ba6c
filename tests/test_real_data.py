"""Real data (../shared/data): short K-fold runs; Multi-DAE must beat popularity by 1.5x."""
import json

import pytest

from recsys_kit.config import load_config
from recsys_kit.convert import convert
from recsys_kit.cv import run_cv
from recsys_kit.data import load_dataset
from tests.conftest import shared_data

SETS = [("ml-100k", "movielens-100k"), ("ml-latest-small", "movielens-latest")]


def oof_recall(run_dir) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["recall@10"]["mean"]


@pytest.mark.parametrize("name,fmt", SETS, ids=[s[0] for s in SETS])
def test_multidae_beats_popularity_widely(tmp_path, name, fmt):
    data_dir = convert(fmt, shared_data(name), tmp_path / "data")["out_dir"]
    dataset = load_dataset(data_dir)
    popularity = load_config(None, ["model.name=popularity"])
    multidae = load_config(None, ["model.name=multidae", "train.epochs=25", "train.patience=5"])
    pop_recall = oof_recall(run_cv(dataset, popularity, 3, tmp_path / "runs", device="cpu"))
    dae_recall = oof_recall(run_cv(dataset, multidae, 3, tmp_path / "runs", device="cpu"))
    assert pop_recall > 0.03  # the holdout is not degenerate
    assert dae_recall >= 1.5 * pop_recall, (dae_recall, pop_recall)
