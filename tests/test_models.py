"""One mixin run over every registered model (as benfred/implicit's recommender_base_test)."""
import numpy as np
import pytest
import scipy.sparse as sp

from recsys_kit.config import TrainConfig
from recsys_kit.models import REGISTRY
from recsys_kit.protocol.ranking import top_k
from recsys_kit.data.interactions import Interactions
from tests.conftest import two_cluster_rows

FAST = TrainConfig(epochs=30, batch_size=16, lr=3e-3, patience=30)


# The interface, not the capacity, is under test: the widest nets get test-sized layers.
SMALL = {"recvae": {"hidden_dim": 64, "latent_dim": 16, "layers": 2}}


def make(name, seed=0):
    return REGISTRY[name](REGISTRY[name].Config(**SMALL.get(name, {})), FAST, seed=seed, device="cpu")


@pytest.mark.parametrize("name", sorted(REGISTRY))
class TestEveryModel:
    def test_scores_are_float32_with_seen_items_masked(self, name):
        rows = two_cluster_rows()
        scores = make(name).fit(rows).score(rows)
        assert scores.dtype == np.float32 and scores.shape == rows.shape
        assert np.all(np.isneginf(scores[rows.nonzero()]))
        assert np.isfinite(scores[rows.toarray() == 0]).all()

    def test_fold_in_of_unseen_users(self, name):
        rows = two_cluster_rows(n_users=40)
        model = make(name).fit(rows[:30])
        assert model.score(rows[30:]).shape == (10, rows.shape[1])

    def test_same_seed_same_scores(self, name):
        rows = two_cluster_rows()
        first = make(name, seed=5).fit(rows).score(rows)
        second = make(name, seed=5).fit(rows).score(rows)
        assert np.array_equal(first, second)

    def test_rejects_dense_and_mismatched_input(self, name):
        rows = two_cluster_rows()
        model = make(name).fit(rows)
        with pytest.raises(TypeError):
            model.score(rows.toarray())
        with pytest.raises(ValueError):
            model.score(sp.csr_matrix((2, rows.shape[1] + 1), dtype=np.float32))


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - {"popularity"}))
def test_personalised_models_find_the_obvious_answer(name):
    # Each user's two missing items lie in their own half; a personalised model must find them.
    # Random times: a sequential model reading CSR order would learn "ids only rise" and have
    # nothing after each user's largest id.
    rows = two_cluster_rows()
    order = np.random.default_rng(0).permutation(rows.nnz)
    rows = Interactions(rows, order.astype(np.float64), order)
    best = top_k(make(name).fit(rows).score(rows), 2)
    half = rows.shape[1] // 2
    own_half = (best // half) == (np.arange(rows.shape[0]) % 2)[:, None]
    assert own_half.mean() >= 0.9


def test_popularity_ranks_by_count():
    rows = sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float32))
    scores = make("popularity").fit(rows).score(sp.csr_matrix((1, 4), dtype=np.float32))
    assert top_k(scores, 4).tolist() == [[2, 1, 0, 3]]
