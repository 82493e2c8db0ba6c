"""Real data (../shared/data): short K-fold runs; Multi-DAE must beat popularity by 1.5x; the
leaderboard estimate and the refit hold up on a nested contest with hidden answers."""
import json

import pytest

from recsys_kit.data.convert import convert
from recsys_kit.cv.run import run_cv
from recsys_kit.config import HoldoutConfig, load_config
from recsys_kit.data.load import load_dataset
from recsys_kit.protocol.nested import grade, nested_contest
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.submission.contest_csv import write_submission
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
    oof_only = RefitOptions(mode="none", lb_estimate=False)  # this test reads OOF alone
    pop_recall = oof_recall(run_cv(dataset, popularity, 3, tmp_path / "runs", device="cpu", refit=oof_only))
    dae_recall = oof_recall(run_cv(dataset, multidae, 3, tmp_path / "runs", device="cpu", refit=oof_only))
    assert pop_recall > 0.03  # the holdout is not degenerate
    assert dae_recall >= 1.5 * pop_recall, (dae_recall, pop_recall)


def test_estimate_and_refit_on_a_nested_ml100k_contest(tmp_path):
    # Hide last 1 + 9 random per user from ml-100k, run the kit on the rest, grade against the answers.
    data_dir = convert("movielens-100k", shared_data("ml-100k"), tmp_path / "data")["out_dir"]
    answers = nested_contest(data_dir, tmp_path / "public", HoldoutConfig(), seed=7)
    dataset = load_dataset(tmp_path / "public")
    figures = {}
    for model in ("popularity", "ease"):
        run_dir = run_cv(dataset, load_config(None, [f"model.name={model}"]), 5, tmp_path / "runs", name=model,
                         device="cpu", refit=RefitOptions(mode="both"))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        write_submission(run_dir, tmp_path / f"{model}.csv")
        figures[model] = {"oof": metrics["recall@10"]["mean"], "estimate": metrics["recall@10"]["lb_estimate"],
                          "lb": grade(tmp_path / f"{model}.csv", answers)}
    ease, pop = figures["ease"], figures["popularity"]
    assert ease["lb"] > 1.5 * pop["lb"], figures  # the baseline, graded the same way
    for figure in figures.values():
        # The estimate lands nearer the leaderboard than OOF does, and within 10% of it.
        assert abs(figure["estimate"] - figure["lb"]) < abs(figure["oof"] - figure["lb"]), figures
        assert abs(figure["estimate"] / figure["lb"] - 1) < 0.10, figures
