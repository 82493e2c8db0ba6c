"""The CUDA path (`--device cuda`): every model, EASE against the CPU solve, mixed precision, a whole cv.

Marked `cuda` and skipped without a CUDA device (CI has none): `pytest -m cuda tests/test_cuda.py`
on a GPU machine (bench/gpu_check.sh runs it). Nothing here imports optuna.
"""
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_kit.config import TrainConfig, load_config
from recsys_kit.cv.run import run_cv
from recsys_kit.data.dataset import from_interactions
from recsys_kit.models import REGISTRY
from recsys_kit.models.ease import EASE, EASEConfig
from recsys_kit.models.multidae import MultiDAE, MultiDAEConfig
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.protocol.ranking import top_k
from recsys_kit.data.interactions import Interactions
from tests.conftest import taste_rows, two_cluster_rows

with warnings.catch_warnings():  # until pyproject.toml registers the marker, keep collection quiet
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    cuda_mark = pytest.mark.cuda

pytestmark = [cuda_mark, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

FAST = TrainConfig(epochs=30, batch_size=16, lr=3e-3, patience=30)




def top10_overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / a.shape[1] for x, y in zip(a, b)]))


def assert_masked_scores(scores: np.ndarray, rows: sp.csr_matrix) -> None:
    assert scores.dtype == np.float32 and scores.shape == rows.shape
    assert np.all(np.isneginf(scores[rows.nonzero()]))
    assert np.isfinite(scores[rows.toarray() == 0]).all()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_fits_and_scores_on_cuda(name):
    rows = two_cluster_rows()
    order = np.random.default_rng(0).permutation(rows.nnz)
    inputs = Interactions(rows, order.astype(np.float64), order)
    model = REGISTRY[name](REGISTRY[name].Config(), FAST, seed=0, device="cuda").fit(inputs)
    scores = model.score(inputs)
    assert_masked_scores(scores, rows)
    if name != "popularity":
        best = top_k(scores, 2)
        half = rows.shape[1] // 2
        assert ((best // half) == (np.arange(rows.shape[0]) % 2)[:, None]).mean() >= 0.9


def test_ease_float64_on_cuda_equals_the_cpu_solve():
    rows = taste_rows()
    cpu = EASE(EASEConfig(l2=50.0, precision="float64"), device="cpu").fit(rows[:500])
    gpu = EASE(EASEConfig(l2=50.0, precision="float64"), device="cuda").fit(rows[:500])
    np.testing.assert_allclose(gpu.weights, cpu.weights, atol=1e-6)
    users = rows[500:]
    cpu_scores, gpu_scores = cpu.score(users), gpu.score(users)
    assert_masked_scores(gpu_scores, users)
    finite = np.isfinite(cpu_scores)
    assert np.array_equal(finite, np.isfinite(gpu_scores))
    np.testing.assert_allclose(gpu_scores[finite], cpu_scores[finite], atol=1e-5)


def test_ease_auto_solves_float32_on_cuda_with_the_cpu_float64_top10():
    rows = taste_rows()
    cpu = EASE(EASEConfig(l2=50.0, precision="float64"), device="cpu").fit(rows[:500])
    gpu = EASE(EASEConfig(l2=50.0), device="cuda").fit(rows[:500])
    assert cpu.summary["solve_precision"] == "float64" and gpu.summary["solve_precision"] == "float32"
    np.testing.assert_allclose(gpu.weights, cpu.weights, atol=1e-4)
    users = rows[500:]
    assert top10_overlap(top_k(gpu.score(users), 10), top_k(cpu.score(users), 10)) >= 0.99


def test_ease_auto_on_cuda_falls_back_to_float64_when_float32_is_singular():
    rows = sp.csr_matrix(np.ones((10_000, 2), dtype=np.float32))  # 1e4 + l2 is 1e4 in float32
    model = EASE(EASEConfig(l2=1e-4), device="cuda").fit(rows)
    assert model.summary["solve_precision"] == "float64"
    reference = EASE(EASEConfig(l2=1e-4, precision="float64"), device="cpu").fit(rows)
    np.testing.assert_allclose(model.weights, reference.weights, rtol=1e-6)


def test_multidae_on_cuda_scores_are_finite_and_masked():
    rows = two_cluster_rows(n_users=80)
    model = MultiDAE(MultiDAEConfig(hidden_dims=(32, 8)), FAST, seed=0, device="cuda").fit(rows[:60])
    assert next(model.net.parameters()).device.type == "cuda"
    assert_masked_scores(model.score(rows[60:]), rows[60:])  # fold-in users the model never saw


@pytest.mark.parametrize("precision, expected", [("auto", "fp32"), ("fp32", "fp32"), ("bf16", "bf16"),
                                                 ("fp16", "fp16")])
def test_multidae_mixed_precision_on_cuda(precision, expected):
    rows = two_cluster_rows()
    train = TrainConfig(epochs=30, batch_size=16, lr=3e-3, patience=30, precision=precision)
    model = MultiDAE(MultiDAEConfig(hidden_dims=(32, 8)), train, seed=0, device="cuda").fit(rows)
    assert model.summary["precision"] == expected  # auto = fp32: bf16 measured slower on an H200
    assert np.isfinite(model.summary["final_loss"])
    scores = model.score(rows)
    assert_masked_scores(scores, rows)
    best = top_k(scores, 2)
    half = rows.shape[1] // 2
    assert ((best // half) == (np.arange(rows.shape[0]) % 2)[:, None]).mean() >= 0.9


@pytest.mark.parametrize("name", ["ease", "multidae"])
def test_run_cv_on_cuda(tmp_path, name):
    rows = two_cluster_rows(n_users=60, n_items=24).tocoo()
    times = np.random.default_rng(0).random(len(rows.row)) * 1000
    dataset = from_interactions(rows.row + 1, rows.col + 10, times)
    config = load_config(None, [f"model.name={name}", "model.l2=5"] if name == "ease" else
                         [f"model.name={name}", "train.epochs=3", "model.hidden_dims=[16, 8]"])
    run_dir = run_cv(dataset, config, 3, tmp_path, name=name, device="cuda", refit=RefitOptions(seeds=1))
    metrics = (run_dir / "metrics.json").read_text()
    assert '"device": "cuda"' in (run_dir / "environment.json").read_text()
    oof = np.load(run_dir / "oof_scores.npy")
    assert not np.isnan(oof).any() and not np.isposinf(oof).any()
    assert np.isfinite(np.load(run_dir / "test_scores.npy")[dataset.matrix.toarray() == 0]).all()
    assert '"recall@10"' in metrics
