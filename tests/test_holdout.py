import numpy as np
import scipy.sparse as sp

from recsys_kit.config import HoldoutConfig
from recsys_kit.protocol.holdout import assign_folds, contest_holdout
from recsys_kit.data.dataset import from_interactions


def random_log(n_users=60, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < 0.3).astype(np.float32)
    dense[:5, :] = 0
    dense[:5, :3] = 1  # five short users: 3 items each
    matrix = sp.csr_matrix(dense)
    times = matrix.copy()
    times.data = rng.permutation(matrix.nnz).astype(np.float64)
    return matrix, times


def test_input_plus_target_is_the_matrix_and_disjoint():
    matrix, times = random_log()
    holdout = contest_holdout(matrix, times, HoldoutConfig(n_last=1, n_random=4, min_input=2), seed=1)
    assert (holdout.input + holdout.target - matrix).nnz == 0
    assert holdout.input.multiply(holdout.target).nnz == 0


def test_target_holds_the_latest_item_and_the_minimum_input_is_kept():
    matrix, times = random_log()
    config = HoldoutConfig(n_last=1, n_random=4, min_input=2)
    holdout = contest_holdout(matrix, times, config, seed=1)
    for user in range(matrix.shape[0]):
        row_items = matrix[user].indices
        row_times = times[user].toarray().ravel()[row_items]
        latest = row_items[np.argmax(row_times)]
        target = set(holdout.target[user].indices)
        assert latest in target
        assert len(target) == min(5, len(row_items) - 2)
        assert holdout.input[user].nnz >= 2
    # users with 3 items keep 2 and get only the tail item
    assert np.diff(holdout.target.indptr)[:5].tolist() == [1] * 5


def test_users_too_short_get_no_target():
    matrix = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=np.float32))
    holdout = contest_holdout(matrix, None, HoldoutConfig(n_last=1, n_random=1, min_input=2), seed=0)
    assert holdout.has_target.tolist() == [False, True]


def test_holdout_is_seeded():
    matrix, times = random_log()
    config = HoldoutConfig()
    first = contest_holdout(matrix, times, config, seed=3).target
    assert (first != contest_holdout(matrix, times, config, seed=3).target).nnz == 0
    assert (first != contest_holdout(matrix, times, config, seed=4).target).nnz > 0


def test_folds_partition_users_and_are_seeded():
    folds = assign_folds(103, 5, seed=0)
    assert set(folds.tolist()) == set(range(5))
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    assert np.array_equal(folds, assign_folds(103, 5, seed=0))
    assert not np.array_equal(folds, assign_folds(103, 5, seed=1))


def test_rank_within_rows_matches_lexsort():
    """The one-sort ranking equals np.lexsort with the row as the last key: ties in time, ties the
    float squeeze makes, unsorted rows, a constant key and a span too small to scale."""
    from recsys_kit.protocol.holdout import _rank_within_rows

    rng = np.random.default_rng(3)
    for case in range(60):
        n = int(rng.integers(0, 2000))
        rows = rng.integers(0, int(rng.integers(1, 50)), n)
        if case % 2:
            rows = np.sort(rows)
        times = [rng.integers(0, 20, n).astype(np.float64), rng.random(n) * 1e9, np.zeros(n),
                 np.round(rng.random(n), 2) * 1e12, rng.integers(0, 3, n) * 1e-320][case % 5]
        tiebreak = rng.random(n) if case % 3 else np.round(rng.random(n), 1)
        for keys in ((tiebreak, times), (tiebreak,), (times,)):
            order = np.lexsort((*keys, rows))
            expected = np.empty(n, dtype=np.int64)
            starts = np.searchsorted(rows[order], rows[order], side="left")
            expected[order] = np.arange(n) - starts
            assert np.array_equal(_rank_within_rows(rows, *keys), expected), case


def test_random_draw_ranks_a_prefix_exactly():
    """The random draw ranks only each row's smallest keys, yet chooses exactly what ranking every
    entry chooses: rows short of the cutoff, tied keys, drawn counts of zero and of the whole pool."""
    from recsys_kit.protocol.holdout import _rank_within_rows, _smallest_in_rows

    rng = np.random.default_rng(11)
    for case in range(200):
        lengths = rng.integers(0, [3, 30, 300][case % 3], int(rng.integers(1, 40)))
        rows = np.repeat(np.arange(len(lengths)), lengths)
        n_last = np.minimum(rng.integers(0, 4), lengths)
        position = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        key = rng.random(len(rows)) + (position >= (lengths - n_last)[rows]) * 2.0
        if case % 4 == 0:
            key = np.round(key, 1)  # ties, also at the cutoff
        count = np.minimum(rng.integers(0, 12, len(lengths)), lengths - n_last)
        expected = _rank_within_rows(rows, key) < count[rows]
        assert np.array_equal(_smallest_in_rows(rows, key, count, lengths - n_last), expected), case


def test_cached_draws_give_the_same_holdout(tmp_path, monkeypatch):
    """The holdout's draws are kept between commands: the second call reads them and builds the
    same holdout as a fresh draw; other settings or another seed are other entries."""
    import scipy.sparse as sp

    from recsys_kit.config import HoldoutConfig
    from recsys_kit.protocol.holdout import contest_holdout

    rng = np.random.default_rng(5)
    matrix = sp.random(60, 40, density=0.3, format="csr", random_state=1, dtype=np.float32)
    matrix.data[:] = 1
    times = matrix.copy()
    times.data = rng.integers(0, 9, matrix.nnz).astype(np.float64)  # ties: the random tie-break matters
    monkeypatch.setenv("RECSYS_KIT_CACHE", "off")
    fresh = contest_holdout(matrix, times, HoldoutConfig(), seed=3)
    monkeypatch.setenv("RECSYS_KIT_CACHE", str(tmp_path))
    first, again = (contest_holdout(matrix, times, HoldoutConfig(), seed=3) for _ in range(2))
    assert len(list(tmp_path.glob("holdout-*.npz"))) == 1
    for holdout in (first, again):
        assert (holdout.target != fresh.target).nnz == 0 and (holdout.input != fresh.input).nnz == 0
        assert np.array_equal(holdout.order, fresh.order)
        assert np.array_equal(holdout.target_is_last, fresh.target_is_last)
    contest_holdout(matrix, times, HoldoutConfig(), seed=4)
    contest_holdout(matrix, times, HoldoutConfig(n_random=2), seed=3)
    assert len(list(tmp_path.glob("holdout-*.npz"))) == 3
    # Keyed by the parsed files' digest: the same draws, another entry; other rows under that
    # digest (a Dataset changed after parsing) are drawn anew, never read from the entry.
    by_source = contest_holdout(matrix, times, HoldoutConfig(), seed=3, source="digest")
    assert (by_source.target != fresh.target).nnz == 0
    assert len(list(tmp_path.glob("holdout-*.npz"))) == 4
    fewer, fewer_times = matrix[:50], times[:50]
    assert (contest_holdout(fewer, fewer_times, HoldoutConfig(), seed=3, source="digest").target
            != contest_holdout(fewer, fewer_times, HoldoutConfig(), seed=3).target).nnz == 0
    assert len(list(tmp_path.glob("holdout-*.npz"))) == 6


def test_short_rows_are_hidden_at_most_half_and_the_user_is_told():
    """adapt_short: with the median user under twice what the rule hides, the holdout hides at most
    half that median (the time tail first) and says so; the fixed recipe, asked for, is noted when it
    leaves users under half their rows; long rows keep the rule as it is."""
    from recsys_kit.protocol.holdout import effective_rule, input_shortfall

    rng = np.random.default_rng(0)
    for length in (8, 60):
        users, items = np.repeat(np.arange(200), length), np.concatenate([rng.choice(500, length, replace=False)
                                                                           for _ in range(200)])
        dataset = from_interactions(users, items, np.arange(len(users)))
        lengths = np.diff(dataset.matrix.indptr)
        for config, hidden, kept, note in (
                (HoldoutConfig(), [1, 3] if length == 8 else [1, 9], 4 if length == 8 else 50,
                 "public rows are short (median 8)" if length == 8 else None),
                (HoldoutConfig(adapt_short=False), [1, 9], max(2, length - 10),
                 "leaves the median scored user 2 of their 8" if length == 8 else None),
                (HoldoutConfig(n_random=2), [1, 2], length - 3, None)):
            holdout = contest_holdout(dataset.matrix, dataset.times, config, seed=0)
            found = input_shortfall(lengths, holdout, config)
            rule = effective_rule(config, lengths)
            assert [rule.n_last, rule.n_random] == found["hidden"] == hidden
            assert found["median_public_rows"] == length and found["median_input_rows"] == kept
            assert (found["note"] is None) if note is None else (note in found["note"]), found["note"]
    assert effective_rule(HoldoutConfig(n_last=0, n_random=9), np.full(10, 6)).n_random == 3
