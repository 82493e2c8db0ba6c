"""Blending: masks survive, normalisation never makes NaN, fitting finds planted weights,
mismatched runs are refused, memory does not grow with members, and cv -> ensemble -> submit."""
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata
from typer.testing import CliRunner

from cli.main import app
from recsys_kit import files
from recsys_kit.blending.methods import METHODS, NORMALIZERS, normalize
from recsys_kit.blending.weights import fit_weights
from recsys_kit.runs.run_dir import RunDir
from recsys_kit.blending.ensemble import EnsembleOptions, blend_file, check_compatible, run_ensemble
from recsys_kit.errors import DataError
from recsys_kit.blending.arithmetic import blend_blocks
from recsys_kit.protocol.ranking import top_k

runner = CliRunner()


def kit(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def fake_run(path: Path, oof: np.ndarray, seen: sp.csr_matrix, target: sp.csr_matrix, folds: np.ndarray,
             test: np.ndarray | None = None, fingerprint: str = "data-0", holdout: str = "holdout-0",
             item_ids: np.ndarray | None = None) -> Path:
    """A run directory laid out as `kit cv` writes it, from score matrices made here."""
    path.mkdir(parents=True)
    n_users, n_items = oof.shape
    files.write_json(path / "data.json", {"fingerprint": fingerprint, "holdout_fingerprint": holdout,
                                         "folds_fingerprint": "f", "users": n_users, "items": n_items})
    files.save_npy(path / "folds.npy", folds)
    files.save_npy(path / "user_ids.npy", np.arange(n_users) + 100)
    files.save_npy(path / "item_ids.npy", np.arange(n_items) + 7 if item_ids is None else item_ids)
    files.save_sparse(path / "holdout_input.npz", seen)
    files.save_sparse(path / "holdout_target.npz", target)
    files.save_npy(path / "oof_scores.npy", oof.astype(np.float32))
    files.save_npy(path / "test_scores.npy", (oof if test is None else test).astype(np.float32))
    files.write_json(path / "metrics.json", {"model": path.name, "recall@10": {"mean": 0.0, "std": 0.0},
                                            "ndcg@10": {"mean": 0.0, "std": 0.0}})
    return path


def masked(scores: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    out = scores.astype(np.float32).copy()
    out[seen.toarray() > 0] = -np.inf
    return out


def random_setup(n_users=300, n_items=60, seen_fraction=0.3, seed=0):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < seen_fraction).astype(np.float32)
    # Row 0 keeps exactly ten unseen items: its top-10 has no room for a mistake.
    dense[0] = 1
    dense[0, rng.choice(n_items, 10, replace=False)] = 0
    seen = sp.csr_matrix(dense)
    target = sp.csr_matrix((rng.random((n_users, n_items)) < 0.1) & (dense == 0), dtype=np.float32)
    folds = (np.arange(n_users) % 3).astype(np.int16)
    return rng, seen, target, folds


# ---------------------------------------------------------------------------- normalisation

def nasty_block() -> np.ndarray:
    inf = np.inf
    rows = [
        [-inf] * 8,  # everything masked
        [-inf] * 7 + [2.0],  # one finite entry
        [3.0] * 8,  # constant
        [1.0, 1.0, -inf, 1.0, -inf, 1.0, 1.0, 1.0],  # constant among the unmasked, zero std
        [np.nan, 1.0, 2.0, inf, -inf, 0.5, 0.5, 0.25],  # NaN and +inf from a broken model
        [3e38, -3e38, 3e38, 1.0, -1.0, 0.0, -inf, 1e-30],  # near float32 overflow
        [1e-42, 2e-42, 0.0, -1e-42, 1e-42, -inf, -inf, 5e-42],  # denormals
        [-50.0, 0.0, 80.0, 88.0, 89.0, 100.0, -inf, 1000.0],  # exp overflow for a naive softmax
    ]
    return np.array(rows, dtype=np.float32)


@pytest.mark.parametrize("method", NORMALIZERS)
def test_normalize_rows_never_nan_and_keeps_the_mask(method):
    block = nasty_block()
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no NaN-making arithmetic either
        out = normalize(block, method)
    assert out.dtype == np.float32 and out.shape == block.shape
    assert not np.isnan(out).any()
    assert np.array_equal(np.isneginf(out), ~np.isfinite(block))  # masked (and NaN/+inf) -> -inf
    assert np.isfinite(out[np.isfinite(block)]).all()
    for row, new in zip(block, out):  # never reorders: x_i < x_j => y_i <= y_j
        keep = np.isfinite(row)
        order = np.argsort(row[keep], kind="stable")
        assert (np.diff(new[keep][order]) >= 0).all()


def test_constant_rows_and_rank_values():
    out = {m: normalize(nasty_block(), m) for m in ("rank", "zscore", "softmax", "minmax")}
    assert out["rank"][1, 7] == 0.5 and (out["rank"][2] == 0.5).all()
    assert out["minmax"][1, 7] == 0.5 and (out["minmax"][2] == 0.5).all() and (out["minmax"][3][[0, 1, 3]] == 0.5).all()
    assert (out["zscore"][2] == 0).all() and (out["zscore"][3][[0, 1, 3, 5, 6, 7]] == 0).all()
    assert np.allclose(out["softmax"][2], 1 / 8)
    rng = np.random.default_rng(0)
    block = np.round(rng.normal(size=(5, 200)), 1).astype(np.float32)  # many ties
    block[rng.random(block.shape) < 0.2] = -np.inf
    ranks = normalize(block, "rank")
    for row, got in zip(block, ranks):
        keep = np.isfinite(row)
        expected = (rankdata(row[keep]) - 1) / (keep.sum() - 1)  # average ranks, best = 1
        assert np.allclose(got[keep], expected, atol=1e-6)


# ---------------------------------------------------------------------------- blending

@pytest.mark.parametrize("method", NORMALIZERS)
def test_blend_never_recommends_a_seen_item(method):
    rng, seen, _, _ = random_setup()
    # The third member's raw scores sit near float32's limit: raw ('none') sums overflow.
    members = [masked(np.clip(rng.normal(size=seen.shape), -5, 5) * scale, seen) for scale in (1, 1e3, 6e37)]
    members[1][5, :30] = -np.inf  # a member may mask more than the others: the union wins
    members[2][7] = np.nan  # a broken member row
    blocks = [normalize(m, method) for m in members]
    for weights in ([1, 0, 0], [0, 0, 1], [0.5, 0.5, 0], [0, 0, 0], [0.2, 0.3, 0.5], [0, 5, 5]):
        blend = blend_blocks(iter(blocks), weights)
        assert not np.isnan(blend).any()
        union = np.any([~np.isfinite(m) for m in members], axis=0)
        assert np.array_equal(np.isneginf(blend), union)
        best = top_k(blend, 10)
        picked = np.take_along_axis(blend, best, axis=1)
        rows_with_room = (~union).sum(axis=1) >= 10
        assert np.isfinite(picked[rows_with_room]).all()
        # Row 0 has every item masked but ten: those ten, exactly.
        assert set(best[0]) == set(np.flatnonzero(~union[0]))


def test_blend_weights_matrix_and_errors():
    a = np.array([[1.0, -np.inf, 3.0]], np.float32)
    b = np.array([[2.0, 5.0, -np.inf]], np.float32)
    two = blend_blocks([a, b], [[1, 0], [0.5, 0.5]])
    assert two.shape == (2, 1, 3)
    assert np.array_equal(two[0], [[1.0, -np.inf, -np.inf]]) and np.array_equal(two[1], [[1.5, -np.inf, -np.inf]])
    with pytest.raises(ValueError):
        blend_blocks([a, b], [1.0])  # more blocks than weights
    with pytest.raises(ValueError):
        blend_blocks([a, b], [np.nan, 1.0])


# ---------------------------------------------------------------------------- fitting

def planted(tmp_path: Path, n_users=2000, n_items=300, seed=0):
    """Members A, B, noise on different scales; the target is the top-10 of 0.7 A + 0.3 B."""
    rng, seen, _, folds = random_setup(n_users, n_items, seen_fraction=0.1, seed=seed)
    a, b, noise = (rng.normal(size=(n_users, n_items)) for _ in range(3))
    truth = masked(0.7 * a + 0.3 * b, seen)
    target = np.zeros(truth.shape, dtype=np.float32)
    np.put_along_axis(target, top_k(truth, 10), 1, axis=1)
    target = sp.csr_matrix(target)
    return [fake_run(tmp_path / name, masked(scores, seen), seen, target, folds)
            for name, scores in (("a", 5 * a + 3), ("b", 0.1 * b - 1), ("noise", noise))]


def test_fit_finds_planted_weights(tmp_path):
    members = planted(tmp_path)
    run_dir = run_ensemble(members, tmp_path / "runs", name="blend", options=EnsembleOptions(normalize="zscore"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for weights in (metrics["weights"], metrics["holdout_half"]["weights"]):
        assert np.allclose(weights, [0.7, 0.3, 0.0], atol=0.1), weights
    member_best = max(m["holdout_half"]["recall@10"] for m in metrics["members"])
    assert metrics["holdout_half"]["recall@10"] > member_best + 0.2
    assert metrics["holdout_half"]["users_evaluated"] == 1000
    assert set(metrics["groups"]["recall@10"]) == {"0-20%", "20-40%", "40-60%", "60-80%", "80-100%"}
    assert len(metrics["recall@10"]["folds"]) == 3 and metrics["users_evaluated"] == 2000


def test_coordinate_ascent_on_a_known_objective():
    best = np.array([0.1, 0.6, 0.3])
    weights, score, evaluations = fit_weights(lambda w: -np.abs(w - best).sum(), 3)
    assert np.allclose(weights, best, atol=0.051) and evaluations < 300


def test_ensemble_masks_and_copies(tmp_path):
    rng, seen, target, folds = random_setup()
    good = masked(rng.normal(size=seen.shape), seen)
    junk = masked(rng.normal(size=seen.shape) * 1e30, seen)
    junk[3, :5] = -np.inf  # its extra mask must survive, even at weight 0
    members = [fake_run(tmp_path / "good", good, seen, target, folds),
               fake_run(tmp_path / "junk", junk, seen, target, folds, test=junk[::-1].copy())]
    for method in METHODS:
        run_dir = run_ensemble(members, tmp_path / "runs", name=method, options=EnsembleOptions(method=method))
        for name, union in (("oof_scores.npy", ~np.isfinite(good) | ~np.isfinite(junk)),
                            ("test_scores.npy", ~np.isfinite(good) | ~np.isfinite(junk[::-1]))):
            blend = np.load(run_dir / name)
            assert blend.dtype == np.float32 and not np.isnan(blend).any()
            assert np.array_equal(np.isneginf(blend), union)
            picked = np.take_along_axis(blend, top_k(blend, 10), axis=1)
            assert np.isfinite(picked[(~union).sum(axis=1) >= 10]).all()
        for name in ("data.json", "folds.npy", "user_ids.npy", "item_ids.npy", "holdout_input.npz",
                     "holdout_target.npz", "config.json", "metrics.json"):
            assert (run_dir / name).exists()
        assert not list(run_dir.glob("*.tmp"))
    # An ensemble is a run like any other: it blends again.
    again = run_ensemble([tmp_path / "runs" / "fit", members[0]], tmp_path / "runs", name="fit")
    assert again.name == "fit-2"  # never overwritten


def test_vote_counts_then_summed_rank(tmp_path):
    n_items = 20
    seen = sp.csr_matrix((1, n_items), dtype=np.float32)
    target = sp.csr_matrix(np.eye(1, n_items, 3, dtype=np.float32))
    rows = []
    for top in ([1, 2, 3], [2, 3, 4], [3, 5, 6]):
        row = -np.arange(n_items, dtype=np.float32) * 1e-3  # below the top-3: lower index first
        row[top] = [10, 9, 8]
        rows.append(row[None])
    members = [fake_run(tmp_path / f"m{i}", row, seen, target, np.zeros(1, np.int16)) for i, row in enumerate(rows)]
    for rank_weighted in (False, True):
        run_dir = run_ensemble(members, tmp_path / "runs", options=EnsembleOptions(
            method="vote", top_n=3, rank_weighted=rank_weighted, chunk=1))
        best = top_k(np.load(run_dir / "oof_scores.npy"), 7)[0]
        # Plain: 3 has three votes, 2 two; items 1, 5, 4, 6 one each, ordered by summed rank
        # (8, 11, 12, 14); item 0 (no vote) comes after all of them despite its summed rank 9.
        # Rank-weighted: 3 (1/3+2/3+1), 2 (2/3+1), 1 (1), 5 (2/3), then 4 and 6 (1/3) by summed rank.
        assert list(best) == [3, 2, 1, 5, 4, 6, 0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"] == "vote" and metrics["recall@10"]["pooled"] == 1.0


# ---------------------------------------------------------------------------- refusal

def test_refuses_runs_that_do_not_line_up(tmp_path):
    rng, seen, target, folds = random_setup()
    scores = masked(rng.normal(size=seen.shape), seen)
    base = fake_run(tmp_path / "base", scores, seen, target, folds)
    cases = {
        "fold assignment": fake_run(tmp_path / "folds", scores, seen, target, folds[::-1].copy()),
        "data fingerprint": fake_run(tmp_path / "data", scores, seen, target, folds, fingerprint="data-1"),
        "holdout": fake_run(tmp_path / "holdout", scores, seen, target, folds, holdout="holdout-1"),
        "item ids": fake_run(tmp_path / "ids", scores, seen, target, folds, item_ids=np.arange(60) * 2),
    }
    for what, other in cases.items():
        with pytest.raises(DataError, match=what) as err:
            check_compatible([base, other])
        message = str(err.value)
        assert "\n" not in message and str(other) in message and "rerun `kit cv`" in message
    with pytest.raises(DataError, match="listed twice"):
        check_compatible([base, tmp_path / "base"])
    with pytest.raises(DataError, match="at least two"):
        check_compatible([base])
    with pytest.raises(DataError, match="not a directory"):
        check_compatible([base, tmp_path / "nope"])
    with pytest.raises(DataError, match="--method .*unknown"):
        run_ensemble([base, cases["holdout"]], tmp_path / "runs", options=EnsembleOptions(method="stack"))
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_refuses_an_oof_only_run_and_names_the_fix(tmp_path):
    rng, seen, target, folds = random_setup()
    scores = masked(rng.normal(size=seen.shape), seen)
    base = fake_run(tmp_path / "base", scores, seen, target, folds)
    oof_only = fake_run(tmp_path / "oof_only", scores, seen, target, folds)
    (oof_only / "test_scores.npy").unlink()  # what `kit cv --refit none` leaves
    metrics = json.loads((oof_only / "metrics.json").read_text())
    files.write_json(oof_only / "metrics.json", {**metrics, "refit": {"mode": "none"}})
    with pytest.raises(DataError, match="--refit none") as err:
        check_compatible([base, oof_only])
    assert str(oof_only) in str(err.value) and "rerun that `kit cv` without --refit none" in str(err.value)
    result = kit("submit", oof_only, "--out", tmp_path / "sub.csv", code=2)  # the same words at submit
    assert "without --refit none" in result.output and not (tmp_path / "sub.csv").exists()


# ---------------------------------------------------------------------------- memory

def test_peak_memory_does_not_grow_with_members(tmp_path):
    rng, seen, target, folds = random_setup(n_users=2000, n_items=500, seen_fraction=0.05)
    runs_ = [RunDir(fake_run(tmp_path / f"m{i}", masked(rng.normal(size=seen.shape), seen), seen, target, folds),
                    {"users": 2000, "items": 500}, {}) for i in range(6)]
    options = EnsembleOptions(method="mean", normalize="rank", chunk=200)
    peaks = []
    for n in (2, 6):
        tracemalloc.start()
        blend_file(runs_[:n], "oof_scores.npy", tmp_path / f"out{n}.npy", np.full(n, 1 / n), options, target=target)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    chunk_bytes = 200 * 500 * 4
    assert peaks[1] < 1.3 * peaks[0], peaks  # members are read one at a time
    assert peaks[1] < 25 * chunk_bytes, (peaks, chunk_bytes)  # a handful of chunk-sized arrays, not a matrix


# ---------------------------------------------------------------------------- end to end

def test_cli_cv_ensemble_submit_validate(tmp_path):
    data, runs_dir = tmp_path / "data", tmp_path / "runs"
    kit("synth", data, "--users", 300, "--items", 150, "--interactions", 9000, "--seed", 2)
    common = ("--data", data, "--folds", 3, "--runs-dir", runs_dir, "--device", "cpu")
    kit("cv", *common, "--config", "configs/popularity.toml", "--name", "pop")
    kit("cv", *common, "--config", "configs/multidae.toml", "--name", "dae", "--set", "train.epochs=3",
        "--refit-seeds", 1)
    result = kit("ensemble", runs_dir / "pop", runs_dir / "dae", "--runs-dir", runs_dir, "--name", "blend")
    run_dir = runs_dir / "blend"
    assert result.stdout.strip().splitlines()[-1] == str(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["recall@10"]["mean"] <= 1 and 0 < metrics["holdout_half"]["recall@10"] <= 1
    assert abs(sum(metrics["weights"]) - 1) < 1e-9 and [m["name"] for m in metrics["members"]] == ["pop", "dae"]
    csv = tmp_path / "blend.csv"
    kit("submit", run_dir, "--out", csv)
    kit("validate", csv, "--data", data)
    # A run on other folds is refused with one line and exit 2.
    kit("cv", "--data", data, "--folds", 2, "--runs-dir", runs_dir, "--device", "cpu",
        "--config", "configs/popularity.toml", "--name", "pop2")
    refused = kit("ensemble", runs_dir / "pop", runs_dir / "pop2", "--runs-dir", runs_dir, code=2)
    assert "fold assignment" in refused.output and "error:" in refused.output
    assert "--normalize" in kit("ensemble", runs_dir / "pop", runs_dir / "dae", "--runs-dir", runs_dir,
                                          "--normalize", "bogus", code=2).output
