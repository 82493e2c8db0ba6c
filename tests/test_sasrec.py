"""SASRec: it reads order (a next-item chain a bag-of-items model cannot see), it is reproducible
for a seed, its config checks ranges, and its CUDA path (marked `cuda`, skipped without a GPU)."""
import dataclasses
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_kit.config import TrainConfig, from_dict
from recsys_kit.errors import DataError
from recsys_kit.models.ease import EASE, EASEConfig
from recsys_kit.models.sasrec import SASRec, SASRecConfig, SequenceBatches, right_aligned
from recsys_kit.data.interactions import Interactions

with warnings.catch_warnings():  # the marker is not registered in pyproject.toml yet
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    cuda_mark = pytest.mark.cuda

# min_steps_per_epoch=0: 120 users make 4 steps of 32; the default would shrink batches to 16.
QUICK = TrainConfig(epochs=30, batch_size=32, lr=5e-3, patience=30, min_steps_per_epoch=0)
SMALL = SASRecConfig(max_len=8, dim=32, blocks=1, heads=2, dropout=0.1, loss="softmax")


@pytest.fixture(autouse=True)
def _one_thread():
    # Tensors this small gain nothing from a second thread, and on a loaded machine two threads
    # wait on each other at every op (the chain fits took 10x longer).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def with_order(rows: sp.csr_matrix, order: np.ndarray) -> Interactions:
    """Rows whose entries happened in `order` (also their times)."""
    return Interactions(rows, order.astype(np.float64), order)


def chain_log(n_users: int = 120, n_items: int = 16, seed: int = 0) -> tuple[Interactions, np.ndarray]:
    """Every user walks a fixed cycle of items (successor[i] follows i) from a random start for 3-9 steps.

    Item ids are shuffled against the cycle, so neither CSR order nor id order tells the next item;
    only the times do. Returns the log and each user's true next item."""
    rng = np.random.default_rng(seed)
    cycle = rng.permutation(n_items)
    users, items, times, following = [], [], [], []
    for user in range(n_users):
        start, length = rng.integers(n_items), rng.integers(3, 10)
        walk = cycle[(start + np.arange(length + 1)) % n_items]
        users += [user] * length
        items += walk[:-1].tolist()
        times += list(range(length))  # time = step number
        following.append(walk[-1])
    rows = sp.csr_matrix((np.ones(len(items), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    # Built the same way as `rows`, so each entry's time lands where its item does.
    time_of = sp.csr_matrix((np.asarray(times, dtype=np.float64) + 1, (users, items)), shape=rows.shape)
    return with_order(rows, (time_of.data - 1).astype(np.int64)), np.asarray(following)


def fit_chain(seed: int = 0, device: str = "cpu", train: TrainConfig = QUICK) -> tuple[SASRec, Interactions, np.ndarray]:
    log, following = chain_log()
    return SASRec(SMALL, train, seed=seed, device=device).fit(log), log, following


def test_learns_the_next_item_that_a_bag_of_items_model_cannot_see():
    model, log, following = fit_chain()
    top1 = model.score(log).argmax(axis=1)
    assert (top1 == following).mean() >= 0.9
    # The same users as bags: EASE sees both neighbours of the walk alike and finds the next one far less often.
    ease_top1 = EASE(EASEConfig(l2=1.0)).fit(log).score(log).argmax(axis=1)
    assert (ease_top1 == following).mean() <= 0.7


def test_same_seed_same_scores_and_another_seed_differs():
    first, log, _ = fit_chain(seed=3)
    second, _, _ = fit_chain(seed=3)
    assert np.array_equal(first.score(log), second.score(log))
    other, _, _ = fit_chain(seed=4)
    assert not np.array_equal(first.score(log), other.score(log))


def test_order_matters_reversing_a_users_times_changes_their_scores():
    model, log, following = fit_chain()
    reversed_log = with_order(log.rows, -log.order)  # each user's walk backwards
    forward, backward = model.score(log), model.score(reversed_log)
    assert not np.allclose(forward, backward)
    # Backwards the latest item is the walk's first one: the model no longer names the true next item.
    assert (backward.argmax(axis=1) == following).mean() < 0.5


def test_sequences_are_right_aligned_with_the_latest_item_last():
    sequences = np.array([[9, 9, 1, 2, 3], [1, 2, 3, 4, 5], [9, 9, 9, 9, 9]])
    items, lengths = right_aligned(sequences, pad=9)
    assert items.tolist() == [[1, 2, 3, 9, 9], [1, 2, 3, 4, 5], [9, 9, 9, 9, 9]]
    assert lengths.tolist() == [3, 5, 0]
    rows = sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 0, 0, 1]], dtype=np.float32))
    log = with_order(rows, np.array([2, 0, 1, 0]))  # user 0 saw item 1, then 2, then 0
    training = SequenceBatches(log, max_len=4, for_training=True)
    assert training.users.tolist() == [0]  # one item has no next item to learn
    batch = training.batch(np.array([0]), "cpu")
    assert batch.items.tolist() == [[1, 2]] and batch.targets.tolist() == [[2, 0]]
    assert batch.lengths.tolist() == [2]


def test_scores_unseen_and_empty_users_finitely():
    model, log, _ = fit_chain(train=TrainConfig(epochs=2, batch_size=32, min_steps_per_epoch=0))
    empty = Interactions(sp.csr_matrix((2, log.n_items), dtype=np.float32))
    scores = model.score(empty)
    assert scores.dtype == np.float32 and np.isfinite(scores).all()


@pytest.mark.parametrize("changes, message", [
    ({"max_len": 0}, "max_len"), ({"dim": 0}, "dim"), ({"blocks": 0}, "blocks"), ({"negatives": 0}, "negatives"),
    ({"dim": 30, "heads": 4}, "multiple of heads"), ({"dropout": 1.0}, "dropout"), ({"dropout": -0.1}, "dropout"),
    ({"loss": "bpr"}, "loss"), ({"gbce_t": 1.5}, "gbce_t"), ({"gbce_t": float("nan")}, "gbce_t"),
])
def test_config_range_checks_raise_one_line_data_errors(changes, message):
    with pytest.raises(DataError, match=message) as caught:
        SASRecConfig(**changes)
    assert "\n" not in str(caught.value)


def test_config_file_values_are_checked_and_precision_choices_too():
    with pytest.raises(DataError, match=r"sasrec.toml.*dropout"):
        from_dict({"model": {"name": "sasrec", "dropout": 1.5}}, "sasrec.toml")
    with pytest.raises(DataError, match="precision"):
        TrainConfig(precision="fp8")


@pytest.mark.parametrize("loss", ["sampled", "gbce"])
def test_sampled_negative_losses_also_learn_the_chain(loss):
    log, following = chain_log()
    config = dataclasses.replace(SMALL, loss=loss, negatives=8)
    slower = dataclasses.replace(QUICK, epochs=60, patience=60)  # a few negatives teach less per step
    top1 = SASRec(config, slower, seed=0).fit(log).score(log).argmax(axis=1)
    assert (top1 == following).mean() >= 0.8


@cuda_mark
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["auto", "fp32", "fp16"])
def test_cuda_learns_the_chain_in_each_precision(precision):
    train = dataclasses.replace(QUICK, precision=precision)
    model, log, following = fit_chain(device="cuda", train=train)
    scores = model.score(log)
    assert scores.dtype == np.float32 and np.isfinite(scores[log.rows.toarray() == 0]).all()
    assert (scores.argmax(axis=1) == following).mean() >= 0.9
    assert model.summary["precision"] == {"auto": "fp32", "fp32": "fp32", "fp16": "fp16"}[precision]
