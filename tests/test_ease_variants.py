"""EASE's EDLAE dropout and user-side EASE: formulas against numpy references, the memory refusal,
and ml-100k through run_cv against popularity computed in the same test."""
import json

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_kit.config import from_dict
from recsys_kit.data.convert import convert
from recsys_kit.cv.run import run_cv
from recsys_kit.data.load import load_dataset
from recsys_kit.errors import DataError
from recsys_kit.models import REGISTRY
from recsys_kit.models import ease as ease_module
from recsys_kit.models.ease import EASE, EASEConfig, gram_inverse_on, gram_matrix
from recsys_kit.models.ease_user import EASEUser, EASEUserConfig
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.protocol.ranking import top_k
from tests.conftest import shared_data, two_cluster_rows


def random_rows(n_users: int = 60, n_items: int = 40, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n_users, n_items)) < 0.2).astype(np.float64)


def numpy_edlae(x: np.ndarray, l2: float, dropout: float) -> np.ndarray:
    """Steck 2020 as written: Lambda = p/(1-p) diagMat(diag(X^T X)) + l2 I, P = (X^T X + Lambda)^-1,
    B = -P / diag(P) with a zero diagonal."""
    gram = x.T @ x
    penalty = dropout / (1 - dropout) * np.diag(np.diag(gram)) + l2 * np.eye(x.shape[1])
    inverse = np.linalg.inv(gram + penalty)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


# ------------------------------------------------------------------------------------- EASE dropout

def test_dropout_zero_is_plain_ease_bit_for_bit():
    rows = sp.csr_matrix(random_rows())
    for dtype in (np.float64, np.float32):
        assert np.array_equal(gram_matrix(rows, 3.0, dtype, 0.0), gram_matrix(rows, 3.0, dtype))
    assert EASEConfig().dropout == 0.0
    plain, zero = EASE(EASEConfig(l2=3.0)).fit(rows), EASE(EASEConfig(l2=3.0, dropout=0.0)).fit(rows)
    assert np.array_equal(plain.weights, zero.weights)
    assert np.array_equal(plain.score(rows), zero.score(rows))
    np.testing.assert_allclose(plain.weights, numpy_edlae(rows.toarray(), 3.0, 0.0), atol=1e-5)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_dropout_regularises_the_diagonal_as_edlae_says(precision):
    x = random_rows()
    x[:, 3] = 1.0  # a very popular item: its diagonal penalty p/(1-p) x 60 dwarfs l2
    rows = sp.csr_matrix(x)
    model = EASE(EASEConfig(l2=3.0, dropout=0.4, precision=precision)).fit(rows)
    expected = numpy_edlae(x, 3.0, 0.4)
    np.testing.assert_allclose(model.weights, expected, atol=1e-6 if precision == "float64" else 2e-5)
    plain = numpy_edlae(x, 3.0, 0.0)
    assert np.abs(expected - plain).max() > 1e-2  # the option changes the weights, not a rounding
    assert np.abs(expected[3]).sum() < np.abs(plain[3]).sum()  # the popular item predicts less
    gram = gram_matrix(rows, 3.0, np.float64, 0.4)
    np.testing.assert_allclose(np.diag(gram), np.diag(x.T @ x) / 0.6 + 3.0)
    assert model.summary["dropout"] == 0.4


def test_dropout_is_range_checked():
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(DataError, match=r"dropout must be in \[0, 1\)"):
            EASEConfig(dropout=bad)
        with pytest.raises(DataError, match="dropout"):
            EASEUserConfig(dropout=bad)
    assert from_dict({"model": {"name": "ease", "dropout": 0.25}}).model.dropout == 0.25


# ------------------------------------------------------------------------------------------ ease_user

def numpy_user_ease(x: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """(C, P): C = I - diag(P)^-1 P with a zero diagonal, P = (X X^T + l2 I)^-1 (rows regress users)."""
    inverse = np.linalg.inv(x @ x.T + l2 * np.eye(x.shape[0]))
    weights = -inverse / np.diag(inverse)[:, None]
    np.fill_diagonal(weights, 0.0)
    return weights, inverse


def test_ease_user_scores_unseen_users_by_ridge_on_the_training_users():
    x = random_rows()
    train, held_out = x[:45], x[45:]
    model = EASEUser(EASEUserConfig(l2=3.0)).fit(sp.csr_matrix(train))
    scores = model.score(sp.csr_matrix(held_out))
    _, inverse = numpy_user_ease(train, 3.0)
    expected = held_out @ train.T @ inverse @ train  # c_u = x_u X^T P, score = c_u X
    unseen = held_out == 0
    np.testing.assert_allclose(scores[unseen], expected[unseen], atol=1e-5)
    assert np.all(np.isneginf(scores[~unseen]))
    # The module docstring's push-through identity: item-side ridge without the zero diagonal.
    ridge = -3.0 * held_out @ np.linalg.inv(train.T @ train + 3.0 * np.eye(x.shape[1]))
    np.testing.assert_allclose(scores[unseen], ridge[unseen], atol=1e-5)
    assert model.summary["users_fitted"] == 45 and model.summary["solve_precision"] == "float32"


def test_ease_user_ranks_training_users_as_the_closed_form_rows():
    x = random_rows()
    model = EASEUser(EASEUserConfig(l2=3.0, precision="float64")).fit(sp.csr_matrix(x))
    scores = model.score(sp.csr_matrix(x))
    weights, inverse = numpy_user_ease(x, 3.0)
    closed_form = weights @ x
    unseen = x == 0
    # Each row is the closed form's times l2 P_uu (> 0) on the unseen items: the same ranking.
    factor = 3.0 * np.diag(inverse)[:, None]
    np.testing.assert_allclose(scores[unseen], (closed_form * factor)[unseen], atol=1e-6)
    masked = np.where(unseen, closed_form, -np.inf).astype(np.float32)
    np.testing.assert_array_equal(top_k(scores, 5), top_k(masked, 5))


def test_ease_user_device_path_and_dropout_match_numpy():
    x = random_rows()
    rows = sp.csr_matrix(x)
    gram = gram_matrix(rows.T.tocsr(), 3.0, np.float64, 0.3)
    penalty = 3.0 + 0.3 / 0.7 * x.sum(1)  # each user's item count, dropout-weighted
    expected = np.linalg.inv(x @ x.T + np.diag(penalty))
    np.testing.assert_allclose(gram_inverse_on(gram, "cpu"), expected, atol=1e-6)  # the GPU path, on the CPU
    model = EASEUser(EASEUserConfig(l2=3.0, dropout=0.3, precision="float64")).fit(rows)
    np.testing.assert_allclose(model.inverse, expected, atol=1e-6)


def test_ease_user_auto_falls_back_to_float64():
    # Two users with the same 10,000 items: X X^T = [[1e4, 1e4], [1e4, 1e4]]; + 1e-4 is lost in float32.
    rows = sp.csr_matrix(np.ones((2, 10_000), dtype=np.float32))
    with pytest.raises(np.linalg.LinAlgError, match="raise l2"):
        EASEUser(EASEUserConfig(l2=1e-4, precision="float32")).fit(rows)
    assert EASEUser(EASEUserConfig(l2=1e-4)).fit(rows).summary["solve_precision"] == "float64"


def test_ease_user_refuses_too_many_users_and_names_the_size(monkeypatch):
    monkeypatch.setattr(ease_module, "available_bytes", lambda: 2**30)  # 1 GiB free
    built = []
    monkeypatch.setattr("recsys_kit.models.ease_user.gram_matrix", lambda *a, **k: built.append(1))
    rows = sp.csr_matrix(np.tile(np.eye(5, dtype=np.float32), (4000, 1)))  # 20,000 users, 5 items
    with pytest.raises(DataError) as refused:
        EASEUser(EASEUserConfig()).fit(rows)
    message = str(refused.value)
    assert message.startswith("ease_user on 20,000 training users needs about 1.5 GiB (users^2 x 4 bytes) "
                              "but only 1.0 GiB is memory available on this machine; use `ease` instead")
    assert "a machine with more memory" in message and built == []  # refused before allocating
    with pytest.raises(DataError, match=r"needs about 4\.5 GiB \(users\^2 x 12 bytes\)"):
        EASEUser(EASEUserConfig(precision="float64")).fit(rows)
    assert "ease_user" in REGISTRY  # and so in tests/test_models.py's mixin over every model


@pytest.mark.parametrize("model", [EASE(EASEConfig(l2=1.0, dropout=0.3)), EASEUser(EASEUserConfig(dropout=0.3))])
def test_the_variants_find_the_obvious_answer_and_fold_in(model):
    rows = two_cluster_rows(n_users=40)
    model.fit(rows[:30])
    scores = model.score(rows[30:])
    assert scores.dtype == np.float32 and np.all(np.isneginf(scores[rows[30:].nonzero()]))
    assert np.isfinite(scores[rows[30:].toarray() == 0]).all()
    best = top_k(scores, 2)
    own_half = (best // 6) == (np.arange(30, 40) % 2)[:, None]
    assert own_half.all()


# ------------------------------------------------------------------------------- real data: ml-100k

def test_ease_user_beats_popularity_on_ml100k(tmp_path):
    convert("movielens-100k", shared_data("ml-100k"), tmp_path / "data")
    dataset = load_dataset(tmp_path / "data")
    recall = {}
    for name in ("popularity", "ease_user"):
        config = from_dict({"model": {"name": name}, "seed": 0})
        run = run_cv(dataset, config, 3, tmp_path / "runs", name=name,
                     refit=RefitOptions(mode="none", lb_estimate=False))
        recall[name] = json.loads((run / "metrics.json").read_text())["recall@10"]["mean"]
    print(recall)
    assert 0.08 < recall["popularity"] < 0.16
    assert recall["ease_user"] > recall["popularity"] + 0.05, recall
