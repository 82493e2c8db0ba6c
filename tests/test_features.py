"""Item side features and user profiles: hand-computed values, no users x items densifying."""
import numpy as np
import pytest
import scipy.sparse as sp

from recsys_kit.data.features import SIDE_GROUPS, build_item_features, split_side_input, user_profiles

R2 = 1 / np.sqrt(2)


def csr(rows):
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


@pytest.fixture
def catalogue():
    """Three items: 0 is a 1994 comedy-drama by director a, 1 a 1999 drama by a and b, 2 has no side rows."""
    features = {
        "genres": csr([[1, 1], [0, 1], [0, 0]]),
        "years": csr([[1, 0], [0, 1], [0, 0]]),
        "directors": csr([[1, 0], [1, 1], [0, 0]]),
    }
    labels = {"genres": np.array(["Comedy", "Drama"], dtype=object),
              "years": np.array(["1994", "1999"], dtype=object),
              "directors": np.array(["a", "b"], dtype=object)}
    return features, labels


def test_hand_made_catalogue_gives_the_exact_matrix_and_profiles(catalogue):
    features, labels = catalogue
    side = build_item_features(features, labels, groups=("genres", "years", "directors"), year_bucket=5,
                               min_count=2)
    assert list(side.column_labels) == ["genres=Comedy", "genres=Drama", "years=1990-1994", "years=1995-1999",
                                        "directors=a", "directors=rare"]
    # The multi-hot pattern, all values of an item, then each group's row scaled to unit length.
    multi_hot = np.array([[1, 1, 1, 0, 1, 0], [0, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(side.matrix.toarray() > 0, multi_hot > 0)
    expected = np.array([[R2, R2, 1, 0, 1, 0], [0, 1, 0, 1, R2, R2], [0, 0, 0, 0, 0, 0]], dtype=np.float32)
    np.testing.assert_allclose(side.matrix.toarray(), expected, rtol=1e-6)
    assert side.matrix.dtype == np.float32
    # Users: {0, 1}, {2} (an item without side rows), nobody, {1} stored with a value of 5.
    rows = csr([[1, 1, 0], [0, 0, 1], [0, 0, 0], [0, 5, 0]])
    profiles = user_profiles(rows, side)
    by_hand = np.array([(expected[0] + expected[1]) / 2, np.zeros(6), np.zeros(6), expected[1]], dtype=np.float32)
    np.testing.assert_allclose(profiles, by_hand, rtol=1e-6)
    assert profiles.dtype == np.float32 and profiles.shape == (4, 6)


def test_report_names_used_and_missing_groups(catalogue):
    features, labels = catalogue
    report = build_item_features(features, labels).report
    assert set(report["used"]) == {"genres", "years", "directors"}
    assert report["missing"] == ["titles", "writers"]
    assert report["width"] == 6
    assert report["used"]["genres"]["width"] == 2
    assert report["used"]["directors"] == {"width": 2, "items_with_values": 2,
                                           "encoding": "multi-hot, 1 values on < 2 items pooled into 'rare'"}


def test_years_are_bucketed_and_unparsable_labels_get_no_bucket():
    years = csr([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
    labels = {"years": np.array(["1990", "1994", "2003", "unknown"], dtype=object)}
    side = build_item_features({"years": years}, labels, groups=("years",), year_bucket=5)
    assert list(side.column_labels) == ["years=1990-1994", "years=2000-2004"]
    np.testing.assert_array_equal(side.matrix.toarray(), [[1, 0], [1, 0], [0, 1], [0, 0], [1, 0]])
    assert "1 unparsable" in side.report["used"]["years"]["encoding"]


def test_years_without_labels_fall_back_to_one_column_per_value():
    years = csr([[1, 0], [1, 0], [0, 1]])
    side = build_item_features({"years": years}, None, groups=("years",), min_count=1)
    assert side.width == 2 and "no year labels" in side.report["used"]["years"]["encoding"]


def test_rare_writers_pool_into_one_column():
    writers = csr([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    side = build_item_features({"writers": writers}, None, groups=("writers",), min_count=2)
    # Value 0 is on two items; values 1, 2 and 3 are on one each and share 'rare'.
    assert list(side.column_labels) == ["writers#0", "writers=rare"]
    np.testing.assert_allclose(side.matrix.toarray(), [[R2, R2], [R2, R2], [0, 1], [0, 0]], rtol=1e-6)


def test_titles_tfidf_svd_is_seeded_unit_norm_and_shrinks_with_few_tokens():
    rng = np.random.default_rng(0)
    dense = (rng.random((60, 80)) < 0.06).astype(np.float32)
    dense[5] = 0  # an item without a title keeps a zero row
    tokens = sp.csr_matrix(dense)
    first = build_item_features({"titles": tokens}, None, groups=("titles",), title_dim=8, seed=3)
    second = build_item_features({"titles": tokens}, None, groups=("titles",), title_dim=8, seed=3)
    assert first.width == 8 and "truncated SVD 8" in first.report["used"]["titles"]["encoding"]
    np.testing.assert_array_equal(first.matrix.toarray(), second.matrix.toarray())
    norms = np.linalg.norm(first.matrix.toarray(), axis=1)
    has_title = dense.any(axis=1)
    np.testing.assert_allclose(norms[has_title], 1.0, rtol=1e-5)
    assert norms[5] == 0
    # Three tokens cannot feed a 32-wide SVD: the TF-IDF columns themselves are used.
    few = build_item_features({"titles": csr([[1, 1, 0], [0, 1, 1], [1, 0, 0]])}, None, groups=("titles",))
    assert few.width == 3 and "too few" in few.report["used"]["titles"]["encoding"]
    # Four items cannot give 32 components either: the width shrinks to items - 1.
    narrow = build_item_features({"titles": tokens[:4]}, None, groups=("titles",), title_dim=32)
    assert narrow.width == 3


def test_no_side_files_gives_an_empty_matrix_and_zero_width_profiles():
    side = build_item_features({}, None, n_items=5)
    assert side.matrix.shape == (5, 0) and side.report["used"] == {}
    assert side.report["missing"] == list(SIDE_GROUPS)
    assert user_profiles(csr([[1, 0, 0, 0, 1]]), side).shape == (1, 0)


def test_profiles_never_densify_users_by_items(monkeypatch):
    # 200,000 users x 2,000,000 items dense would be 1.6 TB: only sparse products can run this.
    n_users, n_items = 200_000, 2_000_000
    rows = sp.csr_matrix((np.ones(4, np.float32), ([0, 0, 7, 199_999], [0, 1_999_999, 5, 5])),
                         shape=(n_users, n_items))
    genres = sp.csr_matrix((np.ones(3, np.float32), ([0, 5, 1_999_999], [0, 1, 2])), shape=(n_items, 3))
    side = build_item_features({"genres": genres}, None, groups=("genres",), n_items=n_items)
    densified = []
    for cls in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix):
        original = cls.toarray

        def spy(self, *args, _original=original, **kwargs):
            densified.append(self.shape)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "toarray", spy)
    profiles = user_profiles(rows, side)
    assert all(n_items not in shape for shape in densified), densified
    assert profiles.shape == (n_users, 3)
    np.testing.assert_array_equal(profiles[0], [0.5, 0, 0.5])
    np.testing.assert_array_equal(profiles[7], [0, 1, 0])
    np.testing.assert_array_equal(profiles[199_999], [0, 1, 0])
    assert not profiles[1:7].any()


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="unknown side group"):
        build_item_features({}, None, groups=("moods",))
    with pytest.raises(ValueError, match="item rows"):
        build_item_features({"genres": csr([[1], [1]])}, None, n_items=3)
    with pytest.raises(TypeError):
        user_profiles(np.ones((2, 2)), csr([[1], [1]]))
    with pytest.raises(ValueError, match="items"):
        user_profiles(csr([[1, 1, 1]]), csr([[1], [1]]))


def test_split_side_input_takes_a_dataset_or_a_mapping(catalogue):
    features, labels = catalogue

    class DatasetLike:
        item_features = features
        feature_values = labels

    assert split_side_input(DatasetLike())[1] == labels
    assert split_side_input(features) == (features, {})
    assert split_side_input(None) == ({}, {})
