import numpy as np
import scipy.sparse as sp

from recsys_kit.data.interactions import Interactions
from recsys_kit.protocol.time_filter import fit_margin, item_first_seen, push_future, user_last_time


def interactions(dense_times: np.ndarray) -> Interactions:
    """users x items array of times, NaN where no interaction."""
    present = ~np.isnan(dense_times)
    rows = sp.csr_matrix(present.astype(np.float32))
    times = dense_times[present]  # row-major, the CSR entry order of sorted indices
    return Interactions(rows, times)


def test_first_seen_and_last_time():
    log = interactions(np.array([[1.0, np.nan, 5.0], [3.0, 7.0, np.nan], [np.nan] * 3]))
    np.testing.assert_array_equal(item_first_seen(log), [1.0, 7.0, 5.0])
    np.testing.assert_array_equal(user_last_time(log), [5.0, 7.0, -np.inf])


def test_push_future_moves_late_items_below_the_rest_and_keeps_the_mask():
    block = np.array([[3.0, -np.inf, 2.0, 9.0, 8.0]], dtype=np.float32)
    first_seen = np.array([0.0, 0.0, 0.0, 20.0, 30.0])
    out = push_future(block.copy(), np.array([10.0]), first_seen, margin=5.0)
    assert out[0, 1] == -np.inf
    assert np.all(np.isfinite(out[0, [0, 2, 3, 4]]))
    assert list(np.argsort(-out[0])[:4]) == [0, 2, 3, 4]  # kept items first, then late ones in order
    untouched = push_future(block.copy(), np.array([10.0]), first_seen, margin=25.0)
    assert out[0, 4] < out[0, 2] and untouched[0, 3] == 9.0 and untouched[0, 4] < out[0, 0] + 100


def planted(n_users=300, n_items=40, seed=0, late_is_target=False):
    """Items 0-9 appear at time 100+ (late); every user's last time is < 50. Scores rank the late
    items first; targets are late items only when `late_is_target`."""
    rng = np.random.default_rng(seed)
    first_seen = np.where(np.arange(n_items) < 10, 100.0 + np.arange(n_items), rng.uniform(0, 40, n_items))
    last_time = rng.uniform(40, 50, n_users)
    scores = rng.random((n_users, n_items)).astype(np.float32)
    scores[:, :10] += 1.0
    target = np.zeros((n_users, n_items), dtype=np.float32)
    for user in range(n_users):
        pool = np.arange(10) if late_is_target else np.arange(10, n_items)
        target[user, rng.choice(pool, 3, replace=False)] = 1
    return scores, sp.csr_matrix(target), last_time, first_seen


def test_fit_margin_turns_the_filter_on_when_late_items_are_never_hidden():
    scores, target, last_time, first_seen = planted()
    fitted = fit_margin(scores, target, last_time, first_seen)
    assert fitted["margin"] is not None and fitted["gain"] > 0.2
    assert fitted["margin"] <= 100.0 - 40.0  # pushes the late block for most users
    assert {entry["margin"] for entry in fitted["tried"]} >= {"off", 0.0}
    half = fitted["holdout_half"]  # fitted on half the users, scored on the other half
    assert half["margin"] is not None and half["gain"] > 0.2


def test_fit_margin_keeps_the_filter_off_when_late_items_are_the_answers():
    scores, target, last_time, first_seen = planted(late_is_target=True)
    fitted = fit_margin(scores, target, last_time, first_seen)
    assert fitted["margin"] is None and fitted["gain"] == 0
    assert fitted["holdout_half"]["margin"] is None and fitted["holdout_half"]["gain"] == 0


def release_log(seed=0):
    """Items 0-4 are released at time 1000 and then taken by every late user; early users (active
    before 500) never had them. Popularity puts 0-4 first for everyone: the filter should not."""
    from recsys_kit.data.dataset import from_interactions

    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for user in range(120):
        late = user % 2 == 0
        base = 1000.0 if late else 0.0
        picked = list(rng.choice(np.arange(5, 40), 8, replace=False)) + ([0, 1, 2, 3, 4] if late else [])
        users += [user] * len(picked)
        items += picked
        times += list(base + np.sort(rng.uniform(0, 400, len(picked))))
    return from_interactions(users, items, times)


def test_cv_fits_the_margin_and_submit_applies_it(tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from cli.main import app
    from recsys_kit.config import HoldoutConfig, RunConfig
    from recsys_kit.cv.run import run_cv
    from recsys_kit.models.popularity import PopularityConfig
    from recsys_kit.cv.refit import RefitOptions

    dataset = release_log()
    config = RunConfig(model=PopularityConfig(), holdout=HoldoutConfig(n_last=1, n_random=3))
    run_dir = run_cv(dataset, config, 3, tmp_path, name="pop", refit=RefitOptions(lb_estimate=False))
    import json
    fitted = json.loads((run_dir / "metrics.json").read_text())["time_filter"]
    assert fitted["margin"] is not None and fitted["gain"] > 0
    runner = CliRunner()
    plain = runner.invoke(app, ["submit", str(run_dir), "--out", str(tmp_path / "plain.csv")])
    filtered = runner.invoke(app, ["submit", str(run_dir), "--out", str(tmp_path / "filtered.csv"), "--time-filter"])
    assert plain.exit_code == 0 and filtered.exit_code == 0, filtered.output
    assert "time filter margin" in filtered.output
    early = set(dataset.user_ids[1::2].tolist())
    late_items = {0, 1, 2, 3, 4}
    plain_rows, filtered_rows = pd.read_csv(tmp_path / "plain.csv"), pd.read_csv(tmp_path / "filtered.csv")
    assert plain_rows[plain_rows.user.isin(early)].item.isin(late_items).any()
    assert not filtered_rows[filtered_rows.user.isin(early)].item.isin(late_items).any()
