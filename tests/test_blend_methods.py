"""Blend methods and normalisations by name: min-max on hand-computed rows, every registered
method keeps masks and makes no NaN, and the slot-reserving blend gives the top slot to the member
that is best there, in its metrics, its estimate and the top-10 `kit submit` writes."""
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys_kit import files
from recsys_kit.blending.methods import METHODS, NORMALIZERS, Blend, minmax_rows, normalize, reserve_slots
from recsys_kit.blending.ensemble import EnsembleOptions, run_ensemble
from recsys_kit.protocol.metrics import recall_per_user
from recsys_kit.protocol.ranking import top_k
from tests.test_ensemble import fake_run, kit, masked, random_setup

inf, nan = np.inf, np.nan


# ---------------------------------------------------------------------------- min-max

def test_minmax_on_hand_computed_rows():
    block = np.array([
        [1.0, -inf, 3.0, 2.0],  # masked entries stay out of min and max
        [-10.0, -6.0, -8.0, -9.0],
        [4.0, 4.0, -inf, 4.0],  # all finite entries equal: no spread, 0.5
        [-inf, 7.0, -inf, -inf],  # a lone finite entry is a constant row
        [-inf, -inf, -inf, -inf],  # nothing finite: stays masked
        [nan, -2.0, inf, 6.0],  # NaN and +inf from a broken model are masked too
        [3e38, -3e38, 0.0, -inf],  # max - min overflows float32
    ], dtype=np.float32)
    expected = np.array([
        [0.0, -inf, 1.0, 0.5],
        [0.0, 1.0, 0.5, 0.25],
        [0.5, 0.5, -inf, 0.5],
        [-inf, 0.5, -inf, -inf],
        [-inf, -inf, -inf, -inf],
        [-inf, 0.0, -inf, 1.0],
        [1.0, 0.0, 0.5, -inf],
    ], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = minmax_rows(block)
    assert out.dtype == np.float32 and np.array_equal(out, expected)
    assert np.array_equal(normalize(block, "minmax"), expected)
    assert minmax_rows(np.zeros((3, 0), np.float32)).shape == (3, 0)


def test_minmax_stays_in_the_unit_interval_on_random_rows():
    rng = np.random.default_rng(0)
    block = (rng.normal(size=(50, 40)) * 10.0 ** rng.integers(-40, 38, size=(50, 1))).astype(np.float32)
    block[rng.random(block.shape) < 0.3] = -inf
    out = minmax_rows(block)
    finite = np.isfinite(block)
    assert np.array_equal(np.isneginf(out), ~finite) and (out[finite] >= 0).all() and (out[finite] <= 1).all()
    for row, got in zip(block, out):  # order kept; the row's extremes map to 0 and 1
        keep = np.isfinite(row)
        if keep.sum() > 1 and np.ptp(row[keep]) > 0:
            assert got[keep][np.argmin(row[keep])] == 0 and got[keep][np.argmax(row[keep])] == 1
            order = np.argsort(row[keep], kind="stable")
            assert (np.diff(got[keep][order]) >= 0).all()


# ---------------------------------------------------------------------------- the registry

@pytest.mark.parametrize("normalisation", NORMALIZERS)
@pytest.mark.parametrize("name", METHODS)
def test_every_method_is_finite_where_members_are_and_masked_where_any_is(name, normalisation):
    rng, seen, _, _ = random_setup(n_users=40, n_items=30)
    # The third member's raw scores sit near float32's limit: raw ('none') sums saturate.
    raws = [masked(rng.normal(size=seen.shape) * scale, seen) for scale in (1, 1e3, 6e37)]
    raws[1][5, :20] = -inf  # a member may mask more than the others
    raws[2][7] = nan  # a broken member row
    raws[0][9, 3] = inf
    union = np.any([~np.isfinite(r) for r in raws], axis=0)
    blends = [Blend(np.array([0.2, 0.3, 0.5]), slots=3, reserved=2), Blend(np.array([1.0, 0.0, 0.0])),
              Blend(np.array([0.0, 0.5, 0.5]), slots=10, reserved=1)]
    with np.errstate(invalid="raise"):
        out = METHODS[name].combine(iter(raws), blends, EnsembleOptions(method=name, normalize=normalisation))
    assert out.shape == (len(blends), *seen.shape)
    for block in out:
        assert not np.isnan(block).any()
        assert np.array_equal(np.isneginf(block), union)
        assert np.isfinite(block[~union]).all()


def test_reserve_slots_puts_the_members_best_unmasked_items_first():
    blend = np.array([[0.1, 0.9, -inf, 0.5, 0.3],
                      [3.4e38, 3e38, -3.4e38, -inf, 0.0],  # raw scores at float32's limit
                      [-inf, 1.0, -inf, -inf, -inf]], dtype=np.float32)  # fewer free items than slots
    own = np.array([[5.0, 1.0, 9.0, 2.0, 4.0],  # its best item (2) is masked in the blend: skipped
                    [0.0, 0.0, 1.0, 5.0, -1.0],
                    [9.0, 0.0, 8.0, 7.0, 6.0]], dtype=np.float32)
    out = reserve_slots(blend, own, 2)
    assert np.array_equal(np.isneginf(out), np.isneginf(blend)) and not np.isnan(out).any()
    assert np.isfinite(out[np.isfinite(blend)]).all()
    assert list(top_k(out[:1], 4)[0]) == [0, 4, 1, 3]  # own's 0 and 4, then the blend's 1 and 3
    assert list(top_k(out[1:2], 4)[0]) == [2, 0, 1, 4]  # own's 2 and 0 (0 ties 1: column order), then 1
    assert np.flatnonzero(np.isfinite(out[2])).tolist() == [1]
    assert np.array_equal(reserve_slots(blend, own, 0), blend)


# ---------------------------------------------------------------------------- the slot blend

def sequential_case(tmp_path, n_users=600, n_items=80, seed=1):
    """'general' ranks 9 of each user's hidden items first, 'seq' ranks the 10th (the next item)
    first and is noise below it: no weighting finds all ten, reserving the top slot for seq does.
    Both runs carry estimate rows equal to their OOF rows (level 3 = level 2)."""
    rng, seen, _, folds = random_setup(n_users, n_items, seen_fraction=0.1, seed=seed)
    general, seq = (masked(rng.normal(size=seen.shape), seen) for _ in range(2))
    target = np.zeros(seen.shape, dtype=np.float32)
    np.put_along_axis(target, top_k(general, 9), 1, axis=1)
    np.put_along_axis(target, top_k(seq, 1), 1, axis=1)
    target = sp.csr_matrix(target)
    dirs = []
    for name, scores in (("general", general), ("seq", seq)):
        path = fake_run(tmp_path / name, scores, seen, target, folds)
        files.save_npy(path / "lb_users.npy", np.arange(n_users))
        for level in ("level2", "level3"):
            files.save_npy(path / f"lb_{level}_scores.npy", scores.astype(np.float32))
            files.save_sparse(path / f"lb_{level}_target.npz", target)
        dirs.append(path)
    return dirs, [general, seq], target


def slot_lists(raws, weights, slots: int, reserved: int, normalisation: str, k: int = 10) -> np.ndarray:
    """Per user: the reserved member's best `slots` unmasked items, then the weighted blend's best of
    the rest, written out item by item (the blend summed in float32 as the kit sums it)."""
    blocks = [normalize(r, normalisation) for r in raws]
    union = np.any([~np.isfinite(b) for b in blocks], axis=0)
    blend = np.zeros(union.shape, dtype=np.float32)
    for weight, block in zip(weights, blocks):
        if weight != 0:
            blend += np.where(union, np.float32(0), block) * np.float32(weight)
    lists = []
    for user in range(len(union)):
        free = np.flatnonzero(~union[user])
        first = list(free[np.argsort(-raws[reserved][user, free], kind="stable")][:slots])
        rest = [i for i in free[np.argsort(-blend[user, free], kind="stable")] if i not in first]
        lists.append(first + rest[:k - len(first)])
    return np.array(lists)


def test_slots_reserve_the_top_slot_for_the_member_best_there(tmp_path):
    dirs, raws, target = sequential_case(tmp_path)
    slotted = json.loads((run_ensemble(dirs, tmp_path / "runs", name="slots", options=EnsembleOptions(
        method="slots", bags=3)) / "metrics.json").read_text())
    plain = json.loads((run_ensemble(dirs, tmp_path / "runs", name="fit", options=EnsembleOptions(
        bags=3)) / "metrics.json").read_text())
    for where in (slotted, slotted["holdout_half"], slotted["fit"]):
        assert where["slots"] == {"slots": 1, "member": "seq"}
    assert plain["slots"] == {"slots": 0, "member": None}
    assert slotted["choice"]["used"] == "blend" and slotted["choice"]["gain_interval90"][0] > 0
    members_b = max(m["holdout_half"]["recall@10"] for m in slotted["members"])
    assert slotted["holdout_half"]["recall@10"] > max(members_b, plain["holdout_half"]["recall@10"]) + 0.05
    assert "reserved slots" in slotted["holdout_half"]["note"]

    run_dir = tmp_path / "runs" / "slots"
    written = np.load(run_dir / "test_scores.npy")
    union = ~np.isfinite(raws[0]) | ~np.isfinite(raws[1])
    assert not np.isnan(written).any() and np.array_equal(np.isneginf(written), union)
    expected = slot_lists(raws, slotted["weights"], 1, 1, "zscore")
    assert np.array_equal(top_k(written, 10), expected)  # what `kit submit` takes
    # The estimate blends the members' estimate rows with the slots too: level 2 here is the OOF rows.
    oof_recall = recall_per_user(top_k(np.load(run_dir / "oof_scores.npy"), 10), target, 10).mean()
    assert slotted["lb_estimate"]["level2"] == pytest.approx(oof_recall)
    assert slotted["lb_estimate"]["level2"] > plain["lb_estimate"]["level2"] + 0.05


def test_cli_slots_ensemble_then_submit_writes_the_slot_lists(tmp_path):
    dirs, raws, _ = sequential_case(tmp_path)
    runs_dir, csv = tmp_path / "runs", tmp_path / "slots.csv"
    result = kit("ensemble", *dirs, "--method", "slots", "--normalize", "minmax", "--bags", 2,
                 "--runs-dir", runs_dir, "--name", "slots")
    run_dir = runs_dir / "slots"
    assert result.stdout.strip().splitlines()[-1] == str(run_dir)
    assert "reserved slots: written 1 for seq" in result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"] == "slots" and metrics["normalize"] == "minmax"
    assert metrics["slots"] == {"slots": 1, "member": "seq"}
    kit("submit", run_dir, "--out", csv)
    rows = pd.read_csv(csv)
    expected = slot_lists(raws, metrics["weights"], 1, 1, "minmax")
    assert np.array_equal(rows["user"].to_numpy(), np.repeat(np.arange(len(raws[0])) + 100, 10))
    assert np.array_equal(rows["item"].to_numpy().reshape(-1, 10), expected + 7)  # fake_run's item ids


def test_cli_cv_slots_ensemble_submit_validate(tmp_path):
    data, runs_dir = tmp_path / "data", tmp_path / "runs"
    kit("synth", data, "--users", 300, "--items", 150, "--interactions", 9000, "--seed", 2)
    common = ("--data", data, "--folds", 3, "--runs-dir", runs_dir, "--device", "cpu", "--config", "configs/ease.toml")
    for l2 in (50, 500):
        kit("cv", *common, "--name", f"ease{l2}", "--set", f"model.l2={l2}")
    members = [runs_dir / "ease50", runs_dir / "ease500"]
    result = kit("ensemble", *members, "--method", "slots", "--no-fallback", "--runs-dir", runs_dir, "--name", "slots")
    run_dir = runs_dir / "slots"
    assert result.stdout.strip().splitlines()[-1] == str(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"] == "slots" and 0 < metrics["holdout_half"]["recall@10"] <= 1
    assert 0 <= metrics["slots"]["slots"] <= 10 and metrics["choice"]["used"] == "blend"
    assert metrics["recall@10"]["lb_estimate"] is not None, metrics["lb_estimate"]
    csv = tmp_path / "slots.csv"
    kit("submit", run_dir, "--out", csv)
    kit("validate", csv, "--data", data)
    raws = [np.load(m / "test_scores.npy") for m in members]
    reserved = [m.name for m in members].index(metrics["slots"]["member"]) if metrics["slots"]["slots"] else 0
    expected = slot_lists(raws, metrics["weights"], metrics["slots"]["slots"], reserved, "zscore")
    item_ids = np.load(run_dir / "item_ids.npy")
    order = np.argsort(np.load(run_dir / "user_ids.npy"), kind="stable")
    assert np.array_equal(pd.read_csv(csv)["item"].to_numpy().reshape(-1, 10), item_ids[expected[order]])


def test_fallback_rule_shrink_keeps_a_share_of_the_blend_by_the_gains_evidence():
    """clear: all or nothing; shrink: the fitted weights times P(gain > 0), the rest on the best
    member by OOF; both keep a blend whose gain is clear of zero, and no evidence keeps none."""
    from types import SimpleNamespace

    from recsys_kit.blending.ensemble import EnsembleOptions
    from recsys_kit.blending.weights import bootstrap_means, choose_blend
    from recsys_kit.seeds import derive_seed

    rng = np.random.default_rng(0)
    members = [SimpleNamespace(name="a", metrics={"recall@10": {"mean": 0.20}}),
               SimpleNamespace(name="b", metrics={"recall@10": {"mean": 0.10}})]
    half_b = np.arange(400) % 2 == 1
    member_recall = rng.random((2, 400))
    fitted = np.array([0.6, 0.4])
    shares = []
    for shift, expect_clear in ((0.004, False), (0.5, True), (-0.3, False)):
        check = {"recall": member_recall[:1] + shift + rng.normal(0, 0.05, 400), "member_recall": member_recall}
        clear = choose_blend(members, check, half_b, fitted, EnsembleOptions(fallback_rule="clear"))
        shrunk = choose_blend(members, check, half_b, fitted, EnsembleOptions(fallback_rule="shrink"))
        assert clear["gain_interval90"] == shrunk["gain_interval90"]
        if expect_clear:
            assert clear["used"] == shrunk["used"] == "blend" and shrunk["weights"] == fitted.tolist()
            continue
        assert clear["used"] == "best member a" and clear["weights"] == [1.0, 0.0]
        gain = np.where(half_b, check["recall"][0] - member_recall[0], np.nan)
        means = bootstrap_means(gain, 1000, derive_seed(0, "gain"))
        share = float(np.mean(means > 0))
        shares.append(share)
        if share == 0:
            assert shrunk["used"] == "best member a"
        else:
            assert shrunk["used"] == "blend shrunk toward a" and shrunk["shrink_share"] == pytest.approx(share)
            assert np.allclose(shrunk["weights"], share * fitted + (1 - share) * np.array([1.0, 0.0]))
    # shift -0.3: no evidence at all, so nothing of the blend is kept; a small gain keeps part of it.
    assert shrunk["used"] == "best member a" and 0 < shares[0] < 0.95
    with pytest.raises(Exception, match="fallback-rule"):
        EnsembleOptions(fallback_rule="soft").check()
