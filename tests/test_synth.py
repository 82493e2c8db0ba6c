"""Synthetic contest data: layout, exact sizes, determinism, safety and learnable structure."""
import numpy as np
import pandas as pd
import pytest

from recsys_kit.errors import DataError
from recsys_kit.data.synth import make_synthetic

SIZE = dict(users=300, items=400, interactions=8000)
HEADERS = {
    "train_ratings.csv": "user,item,time",
    "genres.tsv": "item\tgenre",
    "titles.tsv": "item\ttitle",
    "years.tsv": "item\tyear",
    "directors.tsv": "item\tdirector",
    "writers.tsv": "item\twriter",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "contest"
    summary = make_synthetic(out, seed=0, **SIZE)
    ratings = pd.read_csv(out / "train_ratings.csv")
    genres = pd.read_csv(out / "genres.tsv", sep="\t")
    return out, summary, ratings, genres


def test_layout_headers_and_counts(data):
    out, summary, ratings, _ = data
    assert sorted(p.name for p in out.iterdir()) == sorted(HEADERS)  # no temp files left
    for name, header in HEADERS.items():
        with open(out / name, encoding="utf-8") as fh:
            assert fh.readline().rstrip("\n") == header, name
    assert summary["path"] == str(out)
    assert summary["users"] == ratings.user.nunique() == SIZE["users"]
    assert summary["interactions"] == len(ratings)
    assert abs(len(ratings) - SIZE["interactions"]) <= 0.01 * SIZE["interactions"]
    assert summary["items"] == ratings.item.nunique() <= SIZE["items"]
    assert not ratings.duplicated(["user", "item"]).any()
    assert all(dtype.kind == "i" for dtype in ratings.dtypes)


def test_ids_times_and_activity(data):
    _, _, ratings, _ = data
    users, items = np.unique(ratings.user), np.unique(ratings.item)
    assert not np.array_equal(users, np.arange(users.size))      # sparse, contest-like ids
    assert not np.array_equal(items, np.arange(items.size))
    assert items.max() > items.size
    order = ratings.sort_values(["user", "time"], kind="stable").index
    assert (order == ratings.index).all()                        # sorted by user, then time
    assert ratings.time.min() > 900_000_000 and ratings.time.max() < 1_500_000_000
    per_user = ratings.groupby("user").size()
    assert per_user.min() >= 15 and per_user.max() <= SIZE["items"] // 2
    assert per_user.max() > 3 * per_user.median()                 # skewed activity


def test_side_files(data):
    out, _, ratings, genres = data
    read = {n: pd.read_csv(out / n, sep="\t") for n in ("titles.tsv", "years.tsv",
                                                       "directors.tsv", "writers.tsv")}
    catalog = set(read["titles.tsv"].item)
    assert set(ratings.item) <= catalog and len(catalog) == SIZE["items"]
    per_item = genres.groupby("item").size()
    assert per_item.between(1, 3).all() and set(per_item.index) == catalog
    assert 15 <= genres.genre.nunique() <= 18
    titles, years = read["titles.tsv"], read["years.tsv"]
    assert titles.item.is_unique and years.item.is_unique
    merged = titles.merge(years, on="item")
    assert (merged.title.str[-6:] == "(" + merged.year.astype(str) + ")").all()
    directors, writers = read["directors.tsv"], read["writers.tsv"]
    assert directors.director.str.fullmatch(r"nm\d{7}").all()
    assert writers.writer.str.fullmatch(r"nm\d{7}").all()
    n_dir = directors.groupby("item").size().reindex(sorted(catalog), fill_value=0)
    assert (n_dir == 1).mean() > 0.7 and (n_dir == 0).any()
    assert writers.groupby("item").size().max() <= 3


def test_same_seed_same_bytes_other_seed_differs(tmp_path, data):
    out0, *_ = data
    again = tmp_path / "again"
    other = tmp_path / "other"
    make_synthetic(again, seed=0, **SIZE)
    make_synthetic(other, seed=1, **SIZE)
    for name in HEADERS:
        assert (again / name).read_bytes() == (out0 / name).read_bytes(), name
    assert (other / "train_ratings.csv").read_bytes() != (out0 / "train_ratings.csv").read_bytes()
    assert (other / "titles.tsv").read_bytes() != (out0 / "titles.tsv").read_bytes()


def test_refuses_non_empty_directory(tmp_path):
    keep = tmp_path / "mine.txt"
    keep.write_text("user data")
    with pytest.raises(DataError, match="not empty"):
        make_synthetic(tmp_path, **SIZE)
    assert keep.read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_empty_existing_directory_is_fine(tmp_path):
    make_synthetic(tmp_path, users=40, items=60, interactions=800)
    assert (tmp_path / "train_ratings.csv").exists()


@pytest.mark.parametrize("kwargs", [dict(items=20), dict(users=0),
                                    dict(users=10, items=100, interactions=100),
                                    dict(users=10, items=100, interactions=10 * 51)])
def test_impossible_sizes(tmp_path, kwargs):
    with pytest.raises(DataError):
        make_synthetic(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_popularity_is_predictive(data):
    _, _, ratings, _ = data
    n_top = SIZE["items"] // 10
    counts = ratings.item.value_counts().to_numpy()
    assert counts[:n_top].sum() / counts.sum() > 0.30              # long tail
    last = ratings.groupby("user").tail(1)
    before = ratings.drop(last.index)
    top = before.item.value_counts().index[:n_top]
    assert last.item.isin(top).mean() > 0.25                       # random would be ~0.10


def _mean_genre_entropy(ratings, genres):
    pairs = ratings[["user", "item"]].merge(genres, on="item")
    count = pairs.groupby(["user", "genre"]).size()
    share = count / count.groupby(level=0).transform("sum")
    return float((-(share * np.log(share))).groupby(level=0).sum().mean())


def test_users_have_genre_tastes(data):
    _, _, ratings, genres = data
    shuffled = ratings.assign(item=np.random.default_rng(0).permutation(ratings.item.to_numpy()))
    real, baseline = _mean_genre_entropy(ratings, genres), _mean_genre_entropy(shuffled, genres)
    assert real < baseline - 0.15


def test_tastes_drift_over_time(data):
    _, _, ratings, genres = data
    onehot = pd.crosstab(genres.item, genres.genre).astype(float)
    onehot = onehot.div(np.linalg.norm(onehot, axis=1), axis=0)
    rank = ratings.groupby("user").cumcount(ascending=False)      # 0 = last interaction
    first = ratings.groupby("user").cumcount()

    def profile(mask):
        rows = onehot.loc[ratings.item[mask]].set_axis(ratings.user[mask].to_numpy())
        return rows.groupby(level=0).mean()

    last_item = profile(rank == 0)
    recent = profile((rank >= 1) & (rank <= 5))
    early = profile(first < 5)
    sim_recent = (last_item * recent.loc[last_item.index]).sum(axis=1).mean()
    sim_early = (last_item * early.loc[last_item.index]).sum(axis=1).mean()
    assert sim_recent > sim_early + 0.05
