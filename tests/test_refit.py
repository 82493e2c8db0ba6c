"""The submission's refit on every public row, and the leaderboard estimate's bookkeeping."""
import json

import numpy as np
import pytest

from recsys_kit.config import load_config
from recsys_kit.cv.run import run_cv
from recsys_kit.protocol.split import validation_slice
from recsys_kit.data.dataset import from_interactions
from recsys_kit.blending.ensemble import EnsembleOptions, run_ensemble
from recsys_kit.errors import DataError
from recsys_kit.protocol.holdout import contest_holdout
from recsys_kit.protocol.metrics import recall_per_user
from recsys_kit.models.ease import EASE, EASEConfig
from recsys_kit.cv.refit import RefitOptions, depth_estimate, level3_holdout
from recsys_kit.protocol.ranking import top_k
from tests.conftest import two_cluster_rows


def tiny_dataset(n_users=60, n_items=24, seed=0):
    rows = two_cluster_rows(n_users=n_users, n_items=n_items, seed=seed).tocoo()
    times = np.random.default_rng(seed).random(len(rows.row)) * 1000
    return from_interactions(rows.row + 1, rows.col + 10, times)


def read_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_refit_full_is_a_direct_fit_on_every_public_row_and_folds_keeps_the_fold_mean(tmp_path):
    dataset = tiny_dataset()
    config = load_config(None, ["model.name=ease", "model.l2=5"])
    run_dir = run_cv(dataset, config, 3, tmp_path, name="ease", refit=RefitOptions(mode="both"))
    direct = EASE(EASEConfig(l2=5.0)).fit(dataset.matrix).score(dataset.matrix)
    np.testing.assert_allclose(np.load(run_dir / "test_scores.npy"), direct, atol=1e-5)
    # The fold mean: each fold's EASE on its training users' holdout inputs (less the validation slice).
    holdout = contest_holdout(dataset.matrix, dataset.times, config.holdout, config.seed)
    folds = np.load(run_dir / "folds.npy")
    expected = np.zeros(dataset.matrix.shape, dtype=np.float32)
    for fold in range(3):
        fit_users, _ = validation_slice(holdout, np.flatnonzero(folds != fold), config, fold)
        expected += EASE(EASEConfig(l2=5.0)).fit(holdout.input[fit_users]).score(dataset.matrix) / 3
    np.testing.assert_allclose(np.load(run_dir / "test_scores_folds.npy"), expected, atol=1e-5)
    metrics = read_metrics(run_dir)
    assert metrics["refit"]["mode"] == "both" and metrics["refit"]["seeds"] == 1


def test_refit_folds_writes_only_the_fold_mean_and_none_writes_no_test_scores(tmp_path):
    dataset = tiny_dataset()
    config = load_config(None, ["model.name=ease", "model.l2=5"])
    folds_run = run_cv(dataset, config, 3, tmp_path, name="f", refit=RefitOptions(mode="folds", lb_estimate=False))
    both_run = run_cv(dataset, config, 3, tmp_path, name="b", refit=RefitOptions(mode="both", lb_estimate=False))
    np.testing.assert_array_equal(np.load(folds_run / "test_scores.npy"),
                                  np.load(both_run / "test_scores_folds.npy"))
    none_run = run_cv(dataset, config, 3, tmp_path, name="n", refit=RefitOptions(mode="none", lb_estimate=False))
    assert not (none_run / "test_scores.npy").exists() and "lb_estimate" not in read_metrics(none_run)
    with pytest.raises(DataError, match="--refit"):
        RefitOptions(mode="everything")


def test_autoencoder_refits_for_the_median_best_epoch_and_bags_seeds(tmp_path):
    dataset = tiny_dataset()
    config = load_config(None, ["model.name=multidae", "train.epochs=6", "train.patience=2",
                                "model.hidden_dims=[16, 8]"])
    run_dir = run_cv(dataset, config, 3, tmp_path, name="dae", refit=RefitOptions(seeds=2, lb_estimate=False))
    metrics = read_metrics(run_dir)
    best = [fold["model"]["best_epoch"] for fold in metrics["folds_detail"]]
    assert metrics["refit"]["epochs"] == int(round(float(np.median(best))))
    assert str(best) in metrics["refit"]["epochs_from"] and metrics["refit"]["seeds"] == 2
    scores = np.load(run_dir / "test_scores.npy")
    assert np.all(np.isneginf(scores[dataset.matrix.nonzero()])) and np.isfinite(scores[dataset.matrix.toarray() == 0]).all()


def test_depth_estimate_by_hand():
    recall2 = np.array([0.5, 0.3, 0.1, 0.2])
    recall3 = np.array([0.25, np.nan, 0.05, 0.1])
    entry = depth_estimate(recall2, recall3, bootstrap=50, seed=0)
    # R2 over every level-2 user (0.275); ratio on users with both levels: 0.8 / 0.4 = 2.
    assert entry["level2"] == pytest.approx(0.275) and entry["ratio"] == pytest.approx(2.0)
    assert entry["recall@10"] == pytest.approx(0.55)
    assert entry["users_level2"] == 4 and entry["users_both_levels"] == 3 and entry["coverage"] == [1.0, 0.75]
    assert entry["interval90"][0] <= entry["interval90"][1]
    # When the deeper levels score only a few (heavy) users, the chain gives no figure, and says why.
    for thin in (depth_estimate(recall2, recall3, 10, 0, coverage2=0.5),
                 depth_estimate(recall2, np.array([0.1, np.nan, np.nan, np.nan]), 10, 0),
                 depth_estimate(recall2, np.full(4, np.nan), 10, 0)):
        assert thin["recall@10"] is None and "too few users" in thin["reason"]


def test_the_estimate_in_metrics_json_is_r2_squared_over_r3_of_direct_fits(tmp_path):
    dataset = tiny_dataset(n_users=80, n_items=30)
    config = load_config(None, ["model.name=ease", "model.l2=5", "holdout.n_random=2"])
    run_dir = run_cv(dataset, config, 3, tmp_path, name="ease")
    metrics = read_metrics(run_dir)
    holdout = contest_holdout(dataset.matrix, dataset.times, config.holdout, config.seed)
    level3 = level3_holdout(holdout, config)

    def recall(inputs, target):  # EASE has no seed: a direct fit on every user's rows at that level
        return recall_per_user(top_k(EASE(EASEConfig(l2=5.0)).fit(inputs).score(inputs), 10), target, 10)

    expected = depth_estimate(recall(holdout.input, holdout.target), recall(level3.input, level3.target), 200,
                              config.seed)
    assert metrics["recall@10"]["lb_estimate"] == pytest.approx(expected["recall@10"])
    assert metrics["lb_estimate"]["level2"] == pytest.approx(expected["level2"])
    # No fit of the estimate ever trains on a holdout target: level 3's inputs lie inside level 2's.
    assert (level3.input.multiply(holdout.target)).nnz == 0 and (level3.input > holdout.input).nnz == 0
    sample = np.load(run_dir / "lb_users.npy")
    assert np.array_equal(sample, np.flatnonzero(holdout.has_target))
    assert np.load(run_dir / "lb_level2_scores.npy").shape == (len(sample), dataset.n_items)


def test_blend_of_refitted_members_gets_an_estimate_and_falls_back_when_the_gain_is_noise(tmp_path):
    dataset = tiny_dataset(n_users=90, n_items=24)
    runs_dir = tmp_path / "runs"
    shallow = ["holdout.n_random=2"]  # ten items a user: room for two levels of hiding
    # A sample smaller than the users, as at contest scale (10,000 of 31,360): the blend reads
    # sample-shaped score files (this once failed as "damaged" against the run's user count).
    refit = RefitOptions(estimate_users=40)
    ease = run_cv(dataset, load_config(None, ["model.name=ease", "model.l2=5", *shallow]), 3, runs_dir, name="ease",
                  refit=refit)
    pop = run_cv(dataset, load_config(None, ["model.name=popularity", *shallow]), 3, runs_dir, name="pop", refit=refit)
    assert len(np.load(ease / "lb_users.npy")) == 40 < dataset.n_users
    blend_dir = run_ensemble([ease, pop], runs_dir, name="blend", options=EnsembleOptions(bags=3))
    metrics = read_metrics(blend_dir)
    choice = metrics["choice"]
    low, high = choice["gain_interval90"]
    assert low <= choice["gain_half_b"] <= high
    if low <= 0:  # the fallback: toward the best member by OOF, by the evidence for the blend
        share = choice.get("shrink_share", 0.0)
        assert choice["used"] == ("blend shrunk toward ease" if share else "best member ease")
        assert metrics["weights"] == pytest.approx([share * choice["fitted_weights"][0] + 1 - share,
                                                    share * choice["fitted_weights"][1]])
    assert metrics["lb_estimate"]["recall@10"] is not None, metrics["lb_estimate"]
    assert metrics["recall@10"]["lb_estimate"] == metrics["lb_estimate"]["recall@10"]
    forced = read_metrics(run_ensemble([ease, pop], runs_dir, name="forced",
                                       options=EnsembleOptions(bags=3, fallback=False)))
    assert forced["choice"]["used"] == "blend"


def test_auto_seeds_bag_random_models_only():
    from recsys_kit.cv.refit import AUTO_SEEDS, resolved

    assert resolved(RefitOptions(), "ease").seeds == 1 and resolved(RefitOptions(), "popularity").seeds == 1
    assert resolved(RefitOptions(), "multidae").seeds == AUTO_SEEDS == 3
    assert resolved(RefitOptions(seeds=5), "multivae").seeds == 5


def test_estimate_withheld_for_coverage_fits_nothing(tmp_path, monkeypatch):
    """Short histories: the holdout leaves no user anything to hide again, which the holdouts alone
    tell; the estimate is withheld with its reason before any of its fits is made."""
    from recsys_kit.cv import refit

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(80), 4)
    items = np.concatenate([rng.choice(30, 4, replace=False) for _ in range(80)])
    dataset = from_interactions(users, items, rng.random(len(users)))
    stages = []
    real_fit_bag = refit.fit_bag
    monkeypatch.setattr(refit, "fit_bag", lambda *a, **k: stages.append(a[5]) or real_fit_bag(*a, **k))
    config = load_config(None, ["model.name=ease", "model.l2=5"])
    entry = read_metrics(run_cv(dataset, config, 3, tmp_path, name="short"))["lb_estimate"]
    assert entry["recall@10"] is None and "too few users" in entry["reason"] and entry["coverage"][1] < 0.5
    assert stages and not any(stage.startswith("estimate") for stage in stages), stages
