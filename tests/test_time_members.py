"""The time-aware linear members: item-to-item transitions and recency-weighted EASE."""
import numpy as np
import pytest
import scipy.sparse as sp

from recsys_kit.errors import DataError
from recsys_kit.models.ease import EASE
from recsys_kit.models.ease_recency import EASERecency, EASERecencyConfig, recency_weights
from recsys_kit.models.transition import Transition, TransitionConfig
from recsys_kit.protocol.ranking import top_k
from recsys_kit.data.interactions import Interactions


def log(sequences: list[list[int]], n_items: int) -> Interactions:
    """Interactions from each user's items, first to latest (the order key is the position)."""
    users = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
    position = np.concatenate([np.arange(len(s)) for s in sequences]).astype(np.float64)
    by_cell = np.lexsort((items, users))  # CSR order, so times and order line up with rows.data
    rows = sp.csr_matrix((np.ones(len(items), dtype=np.float32), (users[by_cell], items[by_cell])),
                         shape=(len(sequences), n_items))
    return Interactions(rows, position[by_cell], position[by_cell])


def transition(**overrides) -> Transition:
    return Transition(TransitionConfig(**overrides))


def ease(cls=EASE, **overrides):
    return cls(cls.Config(**overrides))


def pair_log(n_users: int = 80, seed: int = 0) -> Interactions:
    """Items come in pairs (0,1), (2,3), (4,5), (6,7): each user takes two or three whole pairs,
    the pairs in random order, each pair's first item always right before its second."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(n_users):
        pairs = rng.choice(4, size=rng.integers(2, 4), replace=False)
        sequences.append([item for pair in pairs for item in (2 * pair, 2 * pair + 1)])
    return log(sequences, 8)


def test_transition_scores_by_hand():
    # Training: 0 1 2 | 0 1 3 | 1 3. window 2, decay 0.5: C[0] = (0, 2, .5, .5), C[1] = (0, 0, 1, 2);
    # rows normalised: T[0] = (0, 2/3, 1/6, 1/6), T[1] = (0, 0, 1/3, 2/3); T[2] = T[3] = 0.
    train = log([[0, 1, 2], [0, 1, 3], [1, 3]], 4)
    model = transition(window=2, decay=0.5, k_recent=2, recent_decay=0.5, backward=0.0).fit(train)
    # A user who saw 1 then 0: T[0] + 0.5 T[1] = (0, 2/3, 1/3, 1/2); items 0 and 1 are seen.
    scores = model.score(log([[1, 0], [3]], 4))
    assert np.isneginf(scores[0, :2]).all()
    np.testing.assert_allclose(scores[0, 2:], [1 / 3, 1 / 2], atol=1e-5)
    # Evidence scores exactly; an item never followed by anything leaves its user popularity's
    # tie-break alone: just below 0, most popular first (3 > 2 > 1).
    assert np.all((scores[1, [0, 1, 2]] <= 0) & (scores[1, [0, 1, 2]] > -1e-5))
    assert top_k(scores[1:], 3).tolist() == [[1, 0, 2]]


def test_items_without_evidence_rank_below_any_with_evidence_however_popular():
    model = transition(window=1, backward=0.0).fit(log([[0, 1], [2, 3], [2, 3], [3]], 4))
    assert top_k(model.score(log([[0]], 4)), 3).tolist() == [[1, 3, 2]]  # then by popularity


def test_transition_pop_damping_by_hand():
    # Popularity (0: 2, 1: 3, 2: 1, 3: 2); damping 1 divides C's columns by it before normalising:
    # C[0] -> (0, 2/3, .5, .25), normalised (0, 8/17, 6/17, 3/17).
    train = log([[0, 1, 2], [0, 1, 3], [1, 3]], 4)
    model = transition(window=2, decay=0.5, k_recent=1, pop_damping=1.0, backward=0.0).fit(train)
    scores = model.score(log([[0]], 4))
    np.testing.assert_allclose(scores[0, 1:], [8 / 17, 6 / 17, 3 / 17], atol=1e-5)


def test_transition_backward_share_by_hand():
    # 0 1 2, window 1: forward C[0, 1] = C[1, 2] = 1; backward 0.5 adds C[1, 0] = C[2, 1] = 0.5,
    # so T[1] = (0.5, 0, 1) / 1.5: after item 1, item 2 is twice as likely as item 0.
    model = transition(window=1, k_recent=1, backward=0.5).fit(log([[0, 1, 2]], 3))
    scores = model.score(log([[1]], 3))
    np.testing.assert_allclose(scores[0, [0, 2]], [1 / 3, 2 / 3], atol=1e-5)


def test_transition_reads_the_next_item_that_ease_cannot():
    # Two users with the same items in opposite orders: EASE scores them identically, so it gets
    # at most one of them right; the transition model follows each one's latest item.
    train = pair_log()
    users = log([[0, 2], [2, 0]], 8)
    next_item = top_k(transition().fit(train).score(users), 1).ravel().tolist()
    assert next_item == [3, 1]
    ease_scores = ease().fit(train).score(users)
    assert np.array_equal(ease_scores[0], ease_scores[1])


def test_order_matters():
    train = pair_log()
    reversed_times = Interactions(train.rows, -train.times, -train.order)
    users = log([[0, 2]], 8)
    forward = transition().fit(train).score(users)
    backward = transition().fit(reversed_times).score(users)
    assert not np.allclose(forward, backward)
    # Reversing the scored user's own order changes the scores too, for both members.
    flipped = Interactions(users.rows, -users.times, -users.order)
    for model in (transition().fit(train), ease(EASERecency, decay=0.5).fit(train)):
        assert not np.allclose(model.score(users), model.score(flipped))


def test_ease_recency_with_decay_one_is_ease():
    train = pair_log(n_users=60)
    users = pair_log(n_users=20, seed=1)
    plain = ease(l2=10.0).fit(train).score(users)
    assert np.array_equal(ease(EASERecency, l2=10.0, decay=1.0, floor=0.3).fit(train).score(users), plain)
    assert not np.allclose(ease(EASERecency, l2=10.0, decay=0.5).fit(train).score(users), plain)


def test_ease_recency_weights_the_latest_item_most():
    assert np.allclose(recency_weights(np.arange(4), 0.5, 0.2), [1.0, 0.6, 0.4, 0.3])
    model = ease(EASERecency, decay=0.5, floor=0.0).fit(pair_log())
    weighted = model.scoring_rows(log([[5, 1, 6]], 8)).toarray()
    assert weighted[0, [6, 1, 5]].tolist() == [1.0, 0.5, 0.25]


@pytest.mark.parametrize("cls, key, value", [
    (TransitionConfig, "window", 0), (TransitionConfig, "k_recent", 0), (TransitionConfig, "decay", 0.0),
    (TransitionConfig, "decay", 1.5), (TransitionConfig, "recent_decay", -0.1),
    (TransitionConfig, "pop_damping", 1.1), (TransitionConfig, "pop_damping", -0.5),
    (EASERecencyConfig, "decay", 0.0), (EASERecencyConfig, "floor", 1.5), (EASERecencyConfig, "l2", 0.0),
])
def test_config_range_checks(cls, key, value):
    with pytest.raises(DataError, match=rf"^\[model\] {key} must"):
        cls(**{key: value})


@pytest.mark.parametrize("make", [transition, lambda: ease(EASERecency, l2=10.0)])
def test_same_inputs_same_scores_in_any_chunking(make):
    train, users = pair_log(), pair_log(n_users=30, seed=2)
    whole = make().fit(train).score(users)
    assert np.array_equal(whole, make().fit(train).score(users))
    chunks = np.vstack([make().fit(train).score(users.take(slice(start, start + 7))) for start in range(0, 30, 7)])
    assert np.array_equal(whole, chunks)
