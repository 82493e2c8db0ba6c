"""Split invariants (as lenskit's tests/splitting): what a fold model may see, and in what order."""
import numpy as np
import pytest
import scipy.sparse as sp

from recsys_kit.config import HoldoutConfig, RunConfig, TrainConfig
from recsys_kit.data.dataset import from_interactions
from recsys_kit.protocol.holdout import assign_folds, contest_holdout
from recsys_kit.models.base import Recommender
from recsys_kit.models.popularity import PopularityConfig
from recsys_kit.data.interactions import Interactions, row_entries
from recsys_kit.protocol.split import fold_splits, holdout_inputs, public_rows


def tied_log(n_users=40, n_items=30, seed=3):
    """A log where sessions share one time stamp, so ties must be broken."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for user in range(n_users):
        picked = rng.choice(n_items, size=rng.integers(6, 20), replace=False)
        users += [user] * len(picked)
        items += list(picked)
        times += list(np.sort(rng.integers(0, 5, len(picked))) * 100)  # ~5 distinct times per user
    return from_interactions(users, items, times)


def config_for(**train):
    return RunConfig(model=PopularityConfig(), holdout=HoldoutConfig(n_last=1, n_random=2, min_input=2),
                     train=TrainConfig(valid_fraction=0.2, **train), seed=11)


def entries(rows: sp.csr_matrix, user_ids=None) -> set[tuple[int, int]]:
    coo = rows.tocoo()
    ids = np.arange(rows.shape[0]) if user_ids is None else user_ids
    return set(zip(ids[coo.row].tolist(), coo.col.tolist()))


def test_row_entries_concatenates_the_rows_ranges():
    indptr = np.array([0, 2, 2, 5, 6])
    assert row_entries(indptr, np.array([2, 0, 1, 3])).tolist() == [2, 3, 4, 0, 1, 5]
    assert row_entries(indptr, np.array([1])).tolist() == []


def test_a_fold_model_never_receives_a_fold_users_row_or_any_target():
    dataset = tied_log()
    config = config_for()
    holdout = contest_holdout(dataset.matrix, dataset.times, config.holdout, config.seed)
    fold_of_user = assign_folds(dataset.n_users, 4, config.seed)
    all_targets = entries(holdout.target)
    seen_folds = []
    for split in fold_splits(holdout, fold_of_user, config):
        seen_folds.append(split.fold)
        fold_users = set(split.users.tolist())
        # The fit rows carry no user id: recover them by matching each fit row to its input row.
        fit_users = np.flatnonzero(fold_of_user != split.fold)
        train_pairs = set()
        for row in range(split.train.n_users):
            items = frozenset(split.train.rows[row].indices.tolist())
            owners = [u for u in fit_users if frozenset(holdout.input[u].indices.tolist()) == items]
            assert owners, "every fit row is some training user's input row"
            assert not fold_users & set(owners)
            train_pairs |= {(owners[0], i) for i in items}
        assert not train_pairs & all_targets
        # Validation inputs and targets are parts of training users' inputs: never a hidden target.
        if split.valid is not None:
            valid_items = set(split.valid[0].rows.indices.tolist()) | set(split.valid[1].indices.tolist())
            assert valid_items <= set(holdout.input[fit_users].indices.tolist())
        # Scored rows are exactly the fold users' inputs; their targets stay with the loop.
        assert entries(split.inputs.rows, split.users) == entries(holdout.input[split.users], split.users)
        assert entries(split.target, split.users) == entries(holdout.target[split.users], split.users)
    assert seen_folds == [0, 1, 2, 3]


def test_inputs_keep_each_users_time_order_with_ties_broken_as_the_holdout_broke_them():
    dataset = tied_log()
    config = config_for()
    holdout = contest_holdout(dataset.matrix, dataset.times, config.holdout, config.seed)
    public = public_rows(dataset, holdout)
    inputs = holdout_inputs(holdout)
    for user in range(dataset.n_users):
        full_order = public.take([user])
        sequence = full_order.rows.indices[full_order.time_order()]
        times = full_order.times[full_order.time_order()]
        assert np.all(np.diff(times) >= 0), "ordered by time"
        targets = set(holdout.target[user].indices.tolist())
        # The latest item of the public order is hidden (n_last=1), and the input sequence is the
        # public sequence with the targets removed: the same tie-breaks.
        if targets:
            assert sequence[-1] in targets
        kept = [item for item in sequence if item not in targets]
        one = inputs.take([user])
        assert one.rows.indices[one.time_order()].tolist() == kept
        assert one.sequences(4, pad=-1)[0].tolist() == ([-1] * 4 + kept)[-4:]
        assert one.recency()[one.time_order()].tolist() == list(range(len(kept)))[::-1]


def test_interactions_take_keeps_times_and_order_aligned():
    dataset = tied_log()
    holdout = contest_holdout(dataset.matrix, dataset.times, HoldoutConfig(), 0)
    public = public_rows(dataset, holdout)
    picked = public.take(np.array([7, 2, 7]))
    for out_row, user in enumerate([7, 2, 7]):
        start, stop = dataset.matrix.indptr[user], dataset.matrix.indptr[user + 1]
        lo, hi = picked.rows.indptr[out_row], picked.rows.indptr[out_row + 1]
        assert picked.rows.indices[lo:hi].tolist() == dataset.matrix.indices[start:stop].tolist()
        assert picked.times[lo:hi].tolist() == dataset.times.data[start:stop].tolist()
        assert picked.order[lo:hi].tolist() == holdout.order[start:stop].tolist()
    assert public.take(slice(3, 6)).rows.shape == (3, dataset.n_items)
    with pytest.raises(ValueError, match="times has"):
        Interactions(dataset.matrix, np.zeros(3))


def test_models_are_never_handed_the_dataset(tmp_path, monkeypatch):
    """What run_cv passes to fit and score is Interactions and ItemSide, whatever the model."""
    from recsys_kit.cv.run import run_cv
    from recsys_kit.cv.refit import RefitOptions
    import recsys_kit.models as models

    received = []

    class Spy(Recommender):
        name = "spy"
        deterministic = True

        def fit(self, train, side=None, valid=None, on_epoch=None):
            received.append(("fit", type(train).__name__, type(side).__name__))
            self.n_items = train.n_items
            return self

        def _raw_scores(self, inputs):
            received.append(("score", type(inputs).__name__))
            return np.zeros(inputs.shape, np.float32)

    monkeypatch.setitem(models.REGISTRY, "popularity", Spy)
    run_cv(tied_log(), config_for(), 3, tmp_path, name="spy", refit=RefitOptions(lb_estimate=True, seeds=1))
    assert {entry[1] for entry in received} == {"Interactions"}
    assert {entry[2] for entry in received if entry[0] == "fit"} == {"ItemSide"}
    assert sum(entry[0] == "fit" for entry in received) == 3 + 1 + 2  # folds, refit, two estimate levels


def test_target_parts_split_the_tail_from_the_random_picks():
    dataset = tied_log()
    config = config_for()
    holdout = contest_holdout(dataset.matrix, dataset.times, config.holdout, config.seed)
    last, random = holdout.target_part(True), holdout.target_part(False)
    assert (last + random != holdout.target).nnz == 0
    assert last.multiply(random).nnz == 0
    public = public_rows(dataset, holdout)
    for user in np.flatnonzero(holdout.has_target):
        one = public.take([user])
        latest = one.rows.indices[one.time_order()][-1]
        assert last[user].indices.tolist() == [latest]  # n_last = 1
        assert len(random[user].indices) <= 2


def test_cv_reports_recall_by_target_kind(tmp_path):
    from recsys_kit.cv.run import run_cv
    from recsys_kit.cv.refit import RefitOptions
    import json

    run_dir = run_cv(tied_log(), config_for(), 3, tmp_path, name="pop", refit=RefitOptions(mode="none",
                                                                                           lb_estimate=False))
    by_target = json.loads((run_dir / "metrics.json").read_text())["by_target"]
    assert by_target["last"]["users"] > 0 and by_target["random"]["users"] > 0
    assert 0 <= by_target["last"]["recall@10"] <= 1 and 0 <= by_target["random"]["recall@10"] <= 1
