"""train.precision = auto: a cached probe picks fp32 or bf16; the probe never disturbs the training."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from recsys_kit.config import TrainConfig, load_config
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.cv.run import run_cv
from recsys_kit.models import precision
from recsys_kit.models.multidae import MultiDAE, MultiDAEConfig
from recsys_kit.models.train import RowBatches
from tests.conftest import two_cluster_rows
from tests.test_refit import tiny_dataset

QUICK = TrainConfig(epochs=2, batch_size=16, lr=3e-3, patience=2)


@pytest.fixture(autouse=True)
def _quick_probe(monkeypatch):
    monkeypatch.setattr(precision, "BUDGET_S", 0.1)  # the fewest timed rounds: two shared CI cores


@pytest.fixture
def probe_all(monkeypatch):
    monkeypatch.setattr(precision, "MIN_WORK_FLOP", 0)  # these tiny nets probe too


@pytest.fixture
def cache(tmp_path, monkeypatch, probe_all):
    monkeypatch.setenv("RECSYS_KIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def spy(monkeypatch, answer=None, real=True):
    """Counts precision.measure's calls; `answer(fp32_ms, bf16_ms)` rewrites what the real probe
    measured (real=False: answers without probing)."""
    calls, probe = [], precision.measure

    def measure(*args):
        calls.append(args)
        measured = probe(*args) if real else (None, None)
        return measured if answer is None else answer(*measured)

    monkeypatch.setattr(precision, "measure", measure)
    return calls


def fit(train=QUICK, rows=None, hidden=(16, 4)):
    return MultiDAE(MultiDAEConfig(hidden_dims=hidden), train, seed=0).fit(two_cluster_rows() if rows is None else rows)


def test_the_pick_is_cached_and_reused_and_a_new_size_probes_again(cache, monkeypatch):
    calls = spy(monkeypatch)
    first = fit().summary["precision_pick"]
    assert len(calls) == 1 and first["setting"] == "auto" and not first["cached"]
    assert first["precision"] in ("fp32", "bf16") and first["fp32_ms"] > 0 and first["machine"]
    assert (first["precision"] == "bf16") == (first["bf16_ms"] <= precision.RATIO * first["fp32_ms"])
    assert first["reason"].endswith("(probed, cached)")
    [entry] = cache.glob("precision-*.json")
    assert json.loads(entry.read_text())["precision"] == first["precision"]
    second = fit().summary["precision_pick"]
    assert len(calls) == 1, "the second fit of the same net on the same machine must not probe"
    assert second["cached"] and second["precision"] == first["precision"]
    assert second["fp32_ms"] == first["fp32_ms"] and second["reason"].endswith("(cached probe)")
    monkeypatch.setattr(precision, "MIN_WORK_FLOP", 1e30)  # a short refit of the probed net: as its folds ran
    assert fit().summary["precision_pick"]["cached"] and len(calls) == 1
    monkeypatch.setattr(precision, "MIN_WORK_FLOP", 0)
    fit(hidden=(24, 4))  # other parameter shapes: another key
    fit(dataclasses.replace(QUICK, batch_size=8))  # another batch size: another key
    assert len(calls) == 3 and len(list(cache.glob("precision-*.json"))) == 3


def test_the_pick_follows_the_measurement(cache, monkeypatch):
    spy(monkeypatch, answer=lambda fp32, bf16: (10.0, 5.0), real=False)
    model = fit()
    assert model.summary["precision"] == "bf16" and model.net.fitted_precision == "bf16"
    assert "0.50x" in model.summary["precision_pick"]["reason"]
    monkeypatch.setenv("RECSYS_KIT_CACHE", str(cache.parent / "other"))
    spy(monkeypatch, answer=lambda fp32, bf16: (10.0, 9.0), real=False)  # 0.9x: not clearly faster
    assert fit().summary["precision"] == "fp32"
    spy(monkeypatch, answer=lambda fp32, bf16: (10.0, None), real=False)  # bf16 does not run here
    monkeypatch.setenv("RECSYS_KIT_CACHE", str(cache.parent / "third"))
    assert fit().summary["precision"] == "fp32"


@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_an_explicit_precision_never_probes(cache, monkeypatch, setting):
    calls = spy(monkeypatch)
    model = fit(dataclasses.replace(QUICK, precision=setting))
    assert calls == [] and model.summary["precision"] == setting
    assert model.summary["precision_pick"] == {"setting": setting, "precision": setting, "cached": False,
                                               "reason": "set in train.precision (no probe)", "fp32_ms": None,
                                               "bf16_ms": None, "machine": precision.machine("cpu")}
    assert not cache.exists() or not list(cache.glob("precision-*.json"))


def test_a_fit_too_small_to_pay_for_the_probe_runs_fp32_unprobed(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_KIT_CACHE", str(tmp_path / "cache"))
    calls = spy(monkeypatch)
    pick = fit().summary["precision_pick"]
    assert calls == [] and pick["precision"] == "fp32" and "too small" in pick["reason"]
    assert not (tmp_path / "cache").exists()


def test_cache_off_picks_fp32_without_probing(monkeypatch, probe_all):
    monkeypatch.setenv("RECSYS_KIT_CACHE", "off")
    calls = spy(monkeypatch)
    pick = fit().summary["precision_pick"]
    assert calls == [] and pick["precision"] == "fp32" and "RECSYS_KIT_CACHE=off" in pick["reason"]


def test_an_unwritable_cache_runs_fp32_whatever_the_probe_said(tmp_path, monkeypatch, probe_all):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RECSYS_KIT_CACHE", str(blocker / "cache"))  # below a file: cannot be made
    spy(monkeypatch, answer=lambda fp32, bf16: (10.0, 5.0), real=False)
    pick = fit().summary["precision_pick"]
    assert pick["precision"] == "fp32" and "cannot be written" in pick["reason"]


def test_the_probe_leaves_every_random_generator_as_it_was(cache):
    net = MultiDAE(MultiDAEConfig(hidden_dims=(16, 4)), QUICK, seed=0).build_net(12, None)
    before = [p.detach().clone() for p in net.parameters()]
    torch.manual_seed(5)
    np.random.seed(5)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    precision.measure(net, RowBatches(two_cluster_rows()), 16, QUICK, "cpu")
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:2], numpy_state[1:2]))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # a copy trained, not the net


def test_a_probe_answering_fp32_leaves_the_fit_bit_identical_to_fp32(cache, monkeypatch):
    rows = two_cluster_rows(n_users=60)
    explicit = fit(dataclasses.replace(QUICK, precision="fp32"), rows)
    calls = spy(monkeypatch, answer=lambda fp32, bf16: (fp32, fp32 * 10))  # the real probe runs, then says fp32
    probed = fit(QUICK, rows)
    assert len(calls) == 1 and probed.summary["precision"] == "fp32"
    for a, b in zip(explicit.net.parameters(), probed.net.parameters()):
        assert torch.equal(a, b)


def test_cv_with_the_probe_answering_fp32_repeats_the_fp32_oof_scores(cache, tmp_path, monkeypatch):
    dataset = tiny_dataset()
    options = RefitOptions(mode="none", lb_estimate=False)
    base = ["model.name=multidae", "model.hidden_dims=[16,4]", "train.epochs=2", "train.batch_size=16"]
    fp32_run = run_cv(dataset, load_config(None, base + ["train.precision=fp32"]), 2, tmp_path / "runs",
                      name="fp32", refit=options)
    calls = spy(monkeypatch, answer=lambda fp32, bf16: (fp32, fp32 * 10))
    auto_run = run_cv(dataset, load_config(None, base + ["train.precision=auto"]), 2, tmp_path / "runs",
                      name="auto", refit=options)
    assert calls, "auto must have probed"
    np.testing.assert_array_equal(np.load(fp32_run / "oof_scores.npy"), np.load(auto_run / "oof_scores.npy"))
    metrics = json.loads((auto_run / "metrics.json").read_text())
    assert metrics["precision"]["setting"] == "auto" and metrics["precision"]["precision"] == "fp32"
    assert precision.describe(metrics["precision"]).startswith("precision auto -> fp32: bf16 step 10.00x")
    fp32_metrics = json.loads((fp32_run / "metrics.json").read_text())
    assert fp32_metrics["precision"]["precision"] == "fp32" and fp32_metrics["precision"]["setting"] == "fp32"


def test_predict_under_auto_scores_in_the_fitted_precision(cache, monkeypatch):
    spy(monkeypatch, answer=lambda fp32, bf16: (10.0, 5.0), real=False)
    rows = two_cluster_rows()
    auto = fit(rows=rows)
    explicit = fit(dataclasses.replace(QUICK, precision="bf16"), rows)
    np.testing.assert_array_equal(auto.score(rows), explicit.score(rows))


def fake_step(fp32_s, bf16_s, calls):
    def step(dtype):
        calls.append(dtype)
        if bf16_s is None and dtype is torch.bfloat16:
            raise RuntimeError("no bf16 kernel")
        return bf16_s if dtype is torch.bfloat16 else fp32_s
    return step


def test_the_timing_stops_as_soon_as_the_answer_is_clear():
    calls = []  # a bf16 warm-up step 4x fp32's and over SLOW_STEP_S: decided by the warm-up alone
    assert precision.time_steps(fake_step(0.1, 0.4, calls), "cpu") == pytest.approx((100.0, 400.0))
    assert len(calls) == 2 * precision.WARMUP
    calls = []  # 0.8x: near the line, MIN_ROUNDS timed rounds (or more, within the budget)
    assert precision.time_steps(fake_step(0.01, 0.008, calls), "cpu") == pytest.approx((10.0, 8.0))
    assert 2 * (precision.WARMUP + precision.MIN_ROUNDS) <= len(calls) <= 2 * (precision.WARMUP + precision.MAX_ROUNDS)
    calls = []  # 0.3x: one timed round says bf16
    assert precision.time_steps(fake_step(0.01, 0.003, calls), "cpu") == pytest.approx((10.0, 3.0))
    assert len(calls) == 2 * (precision.WARMUP + 1)
    assert precision.time_steps(fake_step(0.01, None, []), "cpu") == (pytest.approx(10.0), None)
