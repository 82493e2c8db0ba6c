"""EASE's solver at catalogue sizes where SciPy's 32-bit OpenBLAS crashed, and its memory guard."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_kit.errors import DataError
from recsys_kit.models import ease as ease_module
from recsys_kit.models.ease import EASE, EASEConfig, fit_bytes
from tests.conftest import taste_rows


def test_the_solver_never_calls_scipys_lp64_lapack(monkeypatch):
    # SciPy's bundled LAPACK takes 32-bit integers and segfaulted in dpotrf above ~15.5k items.
    from scipy.linalg import lapack

    def crash(*args, **kwargs):
        raise AssertionError("SciPy's LP64 LAPACK was called")

    for name in ("dpotrf", "dpotri", "spotrf", "spotri"):
        monkeypatch.setattr(lapack, name, crash)
    rows = sp.random(60, 25, density=0.2, format="csr", random_state=3, dtype=np.float32)
    rows.data[:] = 1
    model = EASE(EASEConfig(l2=2.0)).fit(rows)
    x = rows.toarray().astype(np.float64)
    inverse = np.linalg.inv(x.T @ x + 2.0 * np.eye(25))
    expected = -inverse / np.diag(inverse)
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(model.weights, expected, atol=1e-6)


def test_factorises_a_16000_item_gram_matrix_in_a_subprocess():
    # Where SciPy's dpotrf died with exit 139; a subprocess, so a crash fails this test, not the run.
    script = textwrap.dedent("""
        import numpy as np
        from recsys_kit.models.ease import cholesky_in_place
        n = 16_000
        gram = np.full((n, n), 0.5)
        gram[np.diag_indices(n)] = n + 0.5
        cholesky_in_place(gram)
        # L (lower, column-major) sits in gram's upper triangle: L[j, i] == gram[i, j].
        l00 = np.sqrt(n + 0.5)
        assert np.isclose(gram[0, 0], l00) and np.isclose(gram[0, 1], 0.5 / l00), gram[:2, :2]
        assert np.isfinite(gram[n - 1, n - 1]) and gram[n - 1, n - 1] > 0
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


def test_refuses_a_fit_larger_than_memory_and_says_what_fits(monkeypatch):
    rows = sp.csr_matrix(np.tril(np.ones((30, 20), dtype=np.float32)))  # item j has 30 - j users
    monkeypatch.setattr(ease_module, "available_bytes", lambda: fit_bytes(12))
    with pytest.raises(DataError, match=r"EASE on 20 items needs .*min_item_users=\d+ keeps 12 items"):
        EASE(EASEConfig(l2=1.0, precision="float64")).fit(rows)
    EASE(EASEConfig(l2=1.0, precision="float64", min_item_users=19)).fit(rows)  # the advice, taken, fits


def test_min_item_users_fits_the_popular_items_and_scores_the_rest_zero():
    rng = np.random.default_rng(1)
    dense = (rng.random((50, 16)) < 0.3).astype(np.float32)
    dense[:, 5] = 0
    dense[:2, 5] = 1  # item 5: only two users
    rows = sp.csr_matrix(dense)
    model = EASE(EASEConfig(l2=1.0, min_item_users=3)).fit(rows)
    kept = np.flatnonzero(dense.sum(0) >= 3)
    assert 5 not in kept and model.summary["items_fitted"] == len(kept)
    subset = EASE(EASEConfig(l2=1.0)).fit(sp.csr_matrix(dense[:, kept]))
    users = sp.csr_matrix(dense[10:])
    scores = model.score(users)
    np.testing.assert_allclose(scores[:, kept], subset.score(sp.csr_matrix(dense[10:, kept])), atol=1e-6)
    unseen = dense[10:, 5] == 0
    assert np.all(scores[unseen, 5] == 0)
    with pytest.raises(ValueError, match="min_item_users"):
        EASEConfig(min_item_users=0)




def test_float32_solve_matches_float64s_top10():
    from recsys_kit.protocol.ranking import top_k

    rows = taste_rows()
    fits = {p: EASE(EASEConfig(l2=50.0, precision=p)).fit(rows[:500]) for p in ("float64", "float32")}
    assert fits["float64"].summary["solve_precision"] == "float64"
    assert fits["float32"].summary["solve_precision"] == "float32"
    assert fits["float32"].weights.dtype == np.float32
    np.testing.assert_allclose(fits["float32"].weights, fits["float64"].weights, atol=2e-5)
    best = {p: top_k(model.score(rows[500:]), 10) for p, model in fits.items()}
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(best["float32"], best["float64"])])
    assert overlap >= 0.99, overlap


def test_precision_option_is_checked_and_auto_solves_in_float32():
    from recsys_kit.models.ease import solve_dtype

    assert EASEConfig().precision == "auto"
    assert solve_dtype("auto", "cpu") is np.float32 and solve_dtype("auto", "cuda") is np.float32
    assert solve_dtype("float32", "cpu") is np.float32 and solve_dtype("float64", "cuda") is np.float64
    with pytest.raises(DataError, match="precision must be one of float64, float32, auto"):
        EASEConfig(precision="float16")
    rows = sp.csr_matrix(np.eye(6, dtype=np.float32))
    assert EASE(EASEConfig(l2=1.0)).fit(rows).summary["solve_precision"] == "float32"


def test_auto_falls_back_to_float64_when_float32_loses_positive_definiteness():
    # Items 0 and 1 bought by the same 10,000 users: G = [[1e4, 1e4], [1e4, 1e4]] + l2 I. With
    # l2 = 1e-4, 1e4 + l2 rounds to 1e4 in float32, so float32's G is singular; float64's is not.
    rows = sp.csr_matrix(np.ones((10_000, 2), dtype=np.float32))
    with pytest.raises(np.linalg.LinAlgError, match="raise l2"):
        EASE(EASEConfig(l2=1e-4, precision="float32")).fit(rows)
    model = EASE(EASEConfig(l2=1e-4)).fit(rows)
    reference = EASE(EASEConfig(l2=1e-4, precision="float64")).fit(rows)
    assert model.summary["solve_precision"] == "float64"
    np.testing.assert_array_equal(model.weights, reference.weights)


def test_float32_solve_needs_a_third_of_the_memory(monkeypatch):
    # float64: the Gram matrix (8 bytes a cell) + the float32 weights (4); float32: one matrix in place.
    assert fit_bytes(100, np.float32) * 3 == fit_bytes(100) == 100 * 100 * 12
    rows = sp.csr_matrix(np.tril(np.ones((30, 20), dtype=np.float32)))
    monkeypatch.setattr(ease_module, "available_bytes", lambda: fit_bytes(20, np.float32))
    with pytest.raises(DataError, match=r"EASE on 20 items needs .*items\^2 x 12 bytes"):
        EASE(EASEConfig(l2=1.0, precision="float64")).fit(rows)
    model = EASE(EASEConfig(l2=1.0, precision="float32")).fit(rows)
    assert model.summary["fit_peak_mb"] == round(fit_bytes(20, np.float32) / 2**20, 2)
