import numpy as np
import scipy.sparse as sp

from recsys_kit.protocol.metrics import activity_groups, group_breakdown, ndcg_per_user, recall_per_user
from recsys_kit.protocol.ranking import mask_seen, top_k


def test_recall_divides_by_min_of_k_and_target_size():
    # user 0: 2 hits of 3 targets; user 1: 1 hit of 12 targets (denominator min(10, 12) = 10);
    # user 2: no target -> NaN, left out of means.
    top = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]] * 3)
    target = sp.csr_matrix(np.array([
        [1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1] + [0] * 8,
        [0] * 9 + [1] + [1] * 10 + [0] * 0,
        [0] * 20,
    ], dtype=np.float32))
    recall = recall_per_user(top, target, 10)
    assert recall[0] == 2 / 3
    assert recall[1] == 1 / 10
    assert np.isnan(recall[2])


def test_ndcg_by_hand():
    top = np.array([[3, 1, 2]])
    target = sp.csr_matrix(np.array([[0, 1, 0, 1]], dtype=np.float32))
    # hits at ranks 1 and 2: DCG = 1/log2(2) + 1/log2(3); ideal for 2 targets is the same.
    assert np.isclose(ndcg_per_user(top, target, 3)[0], 1.0)
    top = np.array([[0, 2, 3]])
    expected = (1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert np.isclose(ndcg_per_user(top, target, 3)[0], expected)


def test_activity_groups_are_quintiles():
    activity = np.arange(100)
    groups = activity_groups(activity)
    assert np.array_equal(np.bincount(groups), [20] * 5)
    assert groups[0] == 0 and groups[99] == 4
    breakdown = group_breakdown(np.where(activity >= 80, 1.0, 0.0), activity)
    assert breakdown["80-100%"]["mean"] == 1.0 and breakdown["0-20%"]["mean"] == 0.0


def test_masked_items_never_reach_top_k():
    scores = np.arange(12, dtype=np.float32).reshape(2, 6)
    seen = sp.csr_matrix(np.array([[0, 0, 0, 0, 1, 1], [1, 0, 0, 0, 0, 1]], dtype=np.float32))
    best = top_k(mask_seen(scores, seen), 3)
    assert best.tolist() == [[3, 2, 1], [4, 3, 2]]
