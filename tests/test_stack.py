"""`kit stack`: a learned second stage finds what a blend cannot, never sees a fold user's targets,
and refuses bad inputs with one line."""
import numpy as np
import pytest
from typer.testing import CliRunner

import recsys_kit as rk
from cli.main import app
from recsys_kit.api import report, stack
from recsys_kit.blending import stack as stack_module
from recsys_kit.data.dataset import from_interactions
from recsys_kit.errors import DataError

DAY = 86_400.0


def trending_log(n_users: int = 600, n_old: int = 60, n_new: int = 30, seed: int = 0):
    """Each user's hidden latest item is the new item that came out the day before their last input.

    New item j first appears on day 10 j (five early adopters), and a user of group j ends their
    input that day with an old item, then takes item j the day after. Popularity and EASE see no
    time, so they cannot tell which new item is the user's; an item's age at the user's last time can."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []

    def add(user, item, time):
        users.append(user), items.append(item), times.append(time)

    for u in range(n_users):
        j = u % n_new
        for item in rng.choice(n_old, 6, replace=False):
            add(u, item, rng.uniform(-100, -1) * DAY)
        add(u, int(rng.integers(n_old)), 10 * j * DAY)  # the last input, on item j's first day
        add(u, n_old + j, (10 * j + 1) * DAY)  # the hidden latest item
    for j in range(n_new):  # early adopters: the item's first appearance, in their inputs
        for a in range(5):
            adopter = n_users + j * 5 + a
            for item in rng.choice(n_old, 6, replace=False):
                add(adopter, item, rng.uniform(-100, -1) * DAY)
            add(adopter, n_old + j, 10 * j * DAY - 3600)
            add(adopter, int(rng.integers(n_old)), 10 * j * DAY)
    return from_interactions(users, items, times)


def members(dataset, runs_dir):
    options = dict(folds=3, runs_dir=runs_dir, device="cpu", lb_estimate=False,
                   overrides={"holdout.n_last": 1, "holdout.n_random": 0})
    return [rk.cross_validate(dataset, "popularity", name="pop", **options),
            rk.cross_validate(dataset, "ease", name="ease", **{**options, "overrides": {
                **options["overrides"], "model.l2": 10.0}})]


@pytest.fixture(scope="module")
def trending(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    dataset = trending_log()
    return dataset, members(dataset, root / "runs"), root


def test_stack_finds_what_the_blend_cannot(trending):
    dataset, runs, root = trending
    result = stack(runs, data=dataset, runs_dir=root / "runs", name="stack", candidates=60, bootstrap=200)
    best_member = max(run.recall for run in runs)
    blend = rk.blend(runs, runs_dir=root / "runs", name="blend")
    assert result.metrics["choice"]["used"] == "stack", result.metrics["choice"]
    assert result.recall > 2 * max(best_member, blend.recall), (result.recall, best_member, blend.recall)
    assert "item_age_days" in result.metrics["features"] and "score:ease" in result.metrics["features"]
    # What decides the answer is when the item appeared against the user's last time (its age, or its
    # interactions in the week before, which only the user's own new item has): the ranker leans on that.
    importance = result.metrics["feature_importance"]
    top = max(importance, key=importance.get)
    assert set(importance) == set(result.metrics["features"])
    assert top in ("item_age_days", "popularity_last_week", "popularity_last_month"), importance
    assert importance[top] > 0.05 and importance[top] > 5 * max(importance["score:ease"], importance["score:pop"])
    page = report([result.run_dir], out=root / "stack.html").read_text()
    assert "<h2>Stack stack</h2>" in page and "item_age_days" in page
    # One hidden item per user: the stack can find no more than the candidates hold, and finds most of it.
    assert result.recall <= result.metrics["candidate_recall"] + 1e-9 and result.recall > 0.6 * result.metrics[
        "candidate_recall"]
    # An ordinary run directory: kit submit writes a valid CSV from it.
    scores = np.asarray(result.test_scores())
    assert np.isneginf(scores[dataset.matrix.nonzero()]).all() and np.isfinite(scores).sum(axis=1).min() >= 10


def test_without_times_the_stack_falls_back_to_the_best_member(trending):
    dataset, runs, root = trending
    result = stack(runs, runs_dir=root / "runs", name="no-data", candidates=40, bootstrap=200)
    choice = result.metrics["choice"]
    assert "item_age_days" in result.metrics["features"]  # named, NaN without the log's times
    if choice["used"] == "stack":
        assert choice["gain_interval90"][0] > 0
    else:  # no feature tells the new items apart: the run holds the best member's own scores
        best = max(runs, key=lambda run: run.recall)
        assert choice["used"] == f"best member {best.name}" and result.recall == pytest.approx(best.recall)
        assert np.array_equal(np.asarray(result.test_scores()), np.asarray(best.test_scores()))


def test_the_ranker_never_sees_a_fold_users_targets(trending, monkeypatch):
    dataset, runs, root = trending
    seen_users: list[set] = []
    real_fit = stack_module.fit_ranker

    def spy(table, keep, options, seed):
        seen_users.append(set(np.unique(table.users[keep]).tolist()))
        return real_fit(table, keep, options, seed)

    monkeypatch.setattr(stack_module, "fit_ranker", spy)
    stack(runs, data=dataset, runs_dir=root / "runs", name="spy", candidates=20, bootstrap=50)
    fold_of_user = runs[0].run.folds()
    folds = int(fold_of_user.max()) + 1
    assert len(seen_users) == folds + 1  # one ranker per fold, one on every user for the submission
    for fold in range(folds):
        assert seen_users[fold] and not seen_users[fold] & set(np.flatnonzero(fold_of_user == fold).tolist())


@pytest.mark.parametrize("case", ["few candidates", "other folds", "oof only"])
def test_bad_input_is_one_line(trending, tmp_path, case):
    dataset, runs, root = trending
    paths = [str(run.run_dir) for run in runs]
    if case == "few candidates":
        args, expected = [*paths, "--candidates", "5"], "--candidates 5"
    elif case == "other folds":
        other = rk.cross_validate(dataset, "popularity", folds=4, runs_dir=tmp_path, name="four", device="cpu",
                                  lb_estimate=False, overrides={"holdout.n_last": 1, "holdout.n_random": 0})
        args, expected = [paths[0], str(other.run_dir)], "fold assignment"
    else:
        oof_only = rk.cross_validate(dataset, "popularity", folds=3, runs_dir=tmp_path, name="oof", device="cpu",
                                     refit="none", overrides={"holdout.n_last": 1, "holdout.n_random": 0})
        args, expected = [paths[0], str(oof_only.run_dir)], "--refit none"
    result = CliRunner().invoke(app, ["stack", *args, "--runs-dir", str(tmp_path / "out")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0] and not (tmp_path / "out").exists()


def test_feature_groups_cover_every_column_once_and_an_unknown_group_is_refused():
    from recsys_kit.blending.stack import StackOptions
    from recsys_kit.blending.stack_features import (GROUPS, ITEM_FEATURES, USER_FEATURES, dropped_columns,
                                                    member_feature_names)

    names = ["ease", "transition"]
    width = len(member_feature_names(names)) + len(USER_FEATURES) + len(ITEM_FEATURES)
    covered = np.concatenate([dropped_columns(names, (group,)) for group in GROUPS])
    assert sorted(covered.tolist()) == list(range(width))  # each column in exactly one group
    assert dropped_columns(names, ("members",)).tolist() == [0, 1, 2, 3]
    with pytest.raises(DataError, match="unknown feature group"):
        StackOptions(drop=("genres",)).check()
