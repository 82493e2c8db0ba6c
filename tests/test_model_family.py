"""Multi-VAE, EASE and Multi-DAE + side embeddings: formulas, edge cases and ml-100k through run_cv."""
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_kit.config import TrainConfig, from_dict
from recsys_kit.data.convert import convert
from recsys_kit.cv.run import run_cv
from recsys_kit.data.dataset import Dataset
from recsys_kit.data.load import load_dataset
from recsys_kit.data.features import build_item_features, user_profiles
from recsys_kit.models import REGISTRY
from recsys_kit.models.ease import EASE, EASEConfig, ease_weights_on, gram_matrix
from recsys_kit.models.multidae import MultiDAE, MultiDAEConfig
from recsys_kit.models.multidae_side import MultiDAESide, MultiDAESideConfig
from recsys_kit.models.multivae import MultiVAE, MultiVAEConfig, MultiVAENet, kl_weight
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.data.interactions import ItemSide
from recsys_kit.models.train import sparse_batch
from tests.conftest import shared_data, two_cluster_rows

QUICK = TrainConfig(epochs=4, batch_size=16, lr=3e-3, patience=10)


def test_registry_holds_the_family():
    assert {"multidae_side", "multivae", "ease"} <= set(REGISTRY)


# ------------------------------------------------------------------------------------------- Multi-VAE

def test_kl_weight_reaches_the_cap_exactly_at_the_configured_epoch_and_stays():
    assert kl_weight(0.0, 0.2, 20) == 0.0
    assert kl_weight(10.0, 0.2, 20) == pytest.approx(0.1)
    assert kl_weight(19.999, 0.2, 20) < 0.2
    assert kl_weight(20.0, 0.2, 20) == 0.2
    assert all(kl_weight(p, 0.2, 20) == 0.2 for p in (20.5, 21, 60, 1e6))
    assert kl_weight(0.0, 0.3, 0) == 0.3  # no anneal: the cap from the first step


def test_training_loop_anneals_with_fractional_epochs(monkeypatch):
    seen = []
    original = MultiVAENet.loss

    def recording_loss(self, batch, progress):
        out = original(self, batch, progress)
        seen.append((progress, self.last_kl_weight))
        return out

    monkeypatch.setattr(MultiVAENet, "loss", recording_loss)
    model = MultiVAE(MultiVAEConfig(hidden_dims=(8,), kl_cap=0.5, anneal_epochs=2), QUICK, seed=1)
    model.fit(two_cluster_rows())
    progress, weights = map(np.array, zip(*seen))
    assert np.all(np.diff(progress) > 0) and progress[0] == 0.0
    assert np.all(np.diff(weights) >= 0)
    np.testing.assert_allclose(weights[progress < 2], 0.5 * progress[progress < 2] / 2)
    assert np.all(weights[progress >= 2] == 0.5) and (progress >= 2).sum() > 0
    assert model.summary["kl_weight_final"] == 0.5


def test_multivae_prediction_is_deterministic():
    rows = two_cluster_rows()
    model = MultiVAE(MultiVAEConfig(hidden_dims=(16, 8)), QUICK, seed=0).fit(rows)
    first, second = model.score(rows), model.score(rows)
    np.testing.assert_array_equal(first, second)
    assert model.net.mu.out_features == 8 and model.net.logvar.out_features == 8


# ------------------------------------------------------------------------------------------------- EASE

def numpy_ease(x: np.ndarray, l2: float) -> np.ndarray:
    """Steck 2019 as written: G = X^T X + l2 I, P = G^-1, B = -P / diag(P), diag(B) = 0."""
    gram = x.T @ x + l2 * np.eye(x.shape[1])
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


def test_ease_equals_the_formula_on_a_random_matrix():
    rng = np.random.default_rng(7)
    x = (rng.random((80, 37)) < 0.15).astype(np.float64)
    rows = sp.csr_matrix(x)
    model = EASE(EASEConfig(l2=3.0)).fit(rows)
    expected = numpy_ease(x, 3.0)
    np.testing.assert_allclose(model.weights, expected, atol=1e-6)
    scores = model.score(rows)
    plain = (x @ expected).astype(np.float32)
    plain[x > 0] = -np.inf
    np.testing.assert_allclose(scores, plain, atol=1e-5)
    assert model.summary["item_item_mb"] == pytest.approx(37 * 37 * 4 / 2**20, abs=0.01)
    # The device path (used on a GPU: upload, invert there) gives the same weights; run here on the CPU.
    gram = gram_matrix(rows, 3.0)
    np.testing.assert_allclose(ease_weights_on(gram, "cpu"), expected, atol=1e-6)
    np.testing.assert_allclose(gram, x.T @ x + 3.0 * np.eye(37))  # the device path leaves G as it was
    np.testing.assert_allclose(model._raw_scores_torch(rows.astype(np.float32)), x @ expected, atol=1e-5)


def test_ease_ignores_valid_and_on_epoch_and_rejects_a_non_positive_l2():
    rows = two_cluster_rows()
    calls = []
    EASE(EASEConfig()).fit(rows[:30], valid=(rows[30:], rows[30:]), on_epoch=calls.append)
    assert calls == []
    with pytest.raises(ValueError, match="l2"):
        EASEConfig(l2=0.0)


# ------------------------------------------------------------------------------- Multi-DAE + side info

def side_catalogue(n_items: int = 12) -> tuple[dict, dict]:
    """Genres follow the two clusters of two_cluster_rows; every item has a year and a title token."""
    half = n_items // 2
    genres = sp.csr_matrix((np.ones(n_items, np.float32), (np.arange(n_items), np.arange(n_items) // half)),
                           shape=(n_items, 2))
    years = sp.csr_matrix((np.ones(n_items, np.float32), (np.arange(n_items), np.arange(n_items) % 3)),
                          shape=(n_items, 3))
    titles = sp.csr_matrix((np.ones(n_items, np.float32), (np.arange(n_items), np.arange(n_items) % 4)),
                           shape=(n_items, 4))
    labels = {"genres": np.array(["Comedy", "Drama"], dtype=object),
              "years": np.array(["1991", "1994", "2001"], dtype=object),
              "titles": np.array(["a", "b", "c", "d"], dtype=object)}
    return {"genres": genres, "years": years, "titles": titles}, labels


def test_multidae_side_without_side_files_is_multidae_and_says_so():
    rows = two_cluster_rows()
    side = MultiDAESide(MultiDAESideConfig(hidden_dims=(16, 8)), QUICK, seed=4).fit(rows, side=ItemSide())
    plain = MultiDAE(MultiDAEConfig(hidden_dims=(16, 8)), QUICK, seed=4).fit(rows)
    assert side.summary["side_info"] == ("none: no side files for groups ['genres', 'titles', 'years', "
                                         "'directors', 'writers']; this variant adds nothing over multidae")
    np.testing.assert_array_equal(side.score(rows), plain.score(rows))


@pytest.mark.parametrize("hidden_dims", [(8,), (16, 8)])
def test_multidae_side_uses_the_side_profile_with_one_or_more_hidden_layers(hidden_dims):
    rows = two_cluster_rows()
    features, _ = side_catalogue()
    config = MultiDAESideConfig(hidden_dims=hidden_dims, side_dim=4)
    model = MultiDAESide(config, QUICK, seed=2).fit(rows[:30], side=ItemSide(features))
    assert model.summary["side_info"].startswith("9 feature columns (genres 2, titles 4, years 3)")
    assert model.net.item_side.shape == (12, 9)
    # Fold-in: users the model never saw are scored from their input rows alone.
    scores = model.score(rows[30:])
    assert scores.shape == (10, 12) and scores.dtype == np.float32
    assert np.isfinite(scores[rows[30:].toarray() == 0]).all()
    plain = MultiDAE(MultiDAEConfig(hidden_dims=hidden_dims), QUICK, seed=2).fit(rows[:30])
    assert not np.array_equal(scores, plain.score(rows[30:]))


def test_device_profile_equals_the_sparse_user_profiles():
    rows = two_cluster_rows()
    features, _ = side_catalogue()
    model = MultiDAESide(MultiDAESideConfig(hidden_dims=(8,)), QUICK, seed=0).fit(rows, side=ItemSide(features))
    batch = sparse_batch(rows, "cpu")
    on_device = torch.nn.functional.embedding_bag(batch.cols, model.net.item_side, batch.offsets, mode="mean")
    side = build_item_features(features, None, n_items=12, seed=0)
    np.testing.assert_allclose(on_device.numpy(), user_profiles(rows, side), rtol=1e-5, atol=1e-6)


def test_multidae_side_buckets_years_when_given_the_dataset():
    rows = two_cluster_rows()
    features, labels = side_catalogue()
    dataset = Dataset(rows, np.arange(rows.shape[0]), np.arange(12), item_features=features,
                      feature_values=labels)
    model = MultiDAESide(MultiDAESideConfig(hidden_dims=(8,), side_groups=("years",)), QUICK, seed=0)
    model.fit(rows, side=ItemSide.of(dataset))
    assert model.summary["side_groups"]["used"]["years"] == {"width": 2, "encoding": "5-year buckets",
                                                             "items_with_values": 12}


def test_side_config_rejects_unknown_groups():
    with pytest.raises(ValueError, match="moods"):
        from_dict({"model": {"name": "multidae_side", "side_groups": ["genres", "moods"]}})


# ------------------------------------------------------------------------------- real data: ml-100k

# Short training (small nets, few epochs) so the family runs in well under a minute on two cores.
REAL_TRAIN = {"epochs": 10, "lr": 0.003, "batch_size": 64, "min_steps_per_epoch": 8, "patience": 12}
REAL_MODELS = {
    "multidae_side": {"hidden_dims": [200]},
    "multivae": {"hidden_dims": [200], "anneal_epochs": 5},
    "ease": {},
}


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    out = tmp_path_factory.mktemp("ml100k") / "data"
    convert("movielens-100k", shared_data("ml-100k"), out)
    return load_dataset(out)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def oof_recall(dataset, runs_dir, name: str, model: dict, train: dict | None = None) -> tuple[float, dict]:
    config = from_dict({"model": {"name": name, **model}, "train": train or {}, "seed": 0})
    oof_only = RefitOptions(mode="none", lb_estimate=False)  # these tests read OOF alone
    metrics = json.loads((run_cv(dataset, config, 3, runs_dir, name=name, refit=oof_only) / "metrics.json").read_text())
    return metrics["recall@10"]["mean"], metrics


@pytest.fixture(scope="module")
def popularity_recall(ml100k, runs_dir):
    return oof_recall(ml100k, runs_dir, "popularity", {})[0]


@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_each_model_beats_popularity_on_ml100k(ml100k, runs_dir, popularity_recall, name):
    recall, metrics = oof_recall(ml100k, runs_dir, name, REAL_MODELS[name], REAL_TRAIN)
    print(f"{name}: OOF Recall@10 {recall:.4f} (popularity {popularity_recall:.4f})")
    assert 0.08 < popularity_recall < 0.16
    assert recall > popularity_recall + 0.03, (name, recall, popularity_recall)
    if name == "multidae_side":
        side = metrics["folds_detail"][0]["model"]["side_groups"]
        assert set(side["used"]) == {"genres", "titles", "years"}
        assert side["missing"] == ["directors", "writers"]
