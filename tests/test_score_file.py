"""ScoreFile: numpy's row indexing semantics over a .npy file, without a memory map."""
import numpy as np
import pytest

from recsys_kit.files import ScoreFile


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((37, 5)).astype(np.float32)
    np.save(tmp_path / "m.npy", reference)
    return ScoreFile(tmp_path / "m.npy"), reference


KEYS = [3, -1, slice(None), slice(4, 20), slice(30, 99), slice(2, 30, 3), slice(10, 5),
        np.array([5, 1, 1, 36, 0, 2, 3, 4]), np.array([], dtype=np.int64), np.arange(37) % 2 == 0,
        (np.array([4, 2]), np.array([0, 3])), (slice(1, 3), 2), Ellipsis]


@pytest.mark.parametrize("key", KEYS, ids=[repr(k)[:30] for k in KEYS])
def test_reads_match_numpy(pair, key):
    scores, reference = pair
    got = scores[key]
    assert got.dtype == np.float32 and np.array_equal(got, reference[key])


def test_writes_match_numpy_and_reopen(tmp_path):
    rng = np.random.default_rng(1)
    reference = np.zeros((23, 4), dtype=np.float32)
    scores = ScoreFile.create(tmp_path / "w.npy", reference.shape)
    assert np.array_equal(scores[:], reference)  # a new matrix reads as zeros
    for key in (np.array([7, 3, 4, 5, 20]), slice(0, 2), 22, np.arange(23) % 3 == 0):
        value = rng.standard_normal(reference[key].shape).astype(np.float32)
        scores[key] = value
        reference[key] = value
        scores[key] += 1.5  # read-modify-write, as the fold mean accumulates
        reference[key] += 1.5
    scores.flush()
    scores.close()
    assert np.array_equal(np.load(tmp_path / "w.npy"), reference)  # a plain .npy for numpy too
    again = ScoreFile(tmp_path / "w.npy")
    assert np.array_equal(np.asarray(again), reference)
    with pytest.raises(ValueError, match="read-only"):
        again[0] = 1.0


def test_bad_keys_and_files(pair, tmp_path):
    scores, _ = pair
    with pytest.raises(IndexError):
        scores[37]
    with pytest.raises(IndexError):
        scores[np.array([0, 40])]
    np.save(tmp_path / "f64.npy", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="float32"):
        ScoreFile(tmp_path / "f64.npy")
