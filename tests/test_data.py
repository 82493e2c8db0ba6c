"""Loading the contest layout, and every bad-input case: exit 2 and one line naming file and line."""
import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from recsys_kit.data.load import load_dataset
from recsys_kit.errors import DataError

GOOD = "user,item,time\n11,5,100\n11,7,101\n11,5,102\n14,7,90\n14,9,95\n"


def write(folder, name, text):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder


def test_duplicates_collapse_and_ids_map(tmp_path):
    folder = write(tmp_path / "d", "train_ratings.csv", GOOD)
    write(folder, "genres.tsv", "item\tgenre\n5\tDrama\n5\tComedy\n9\tDrama\n999\tHorror\n")
    write(folder, "titles.tsv", "item\ttitle\n5\tToy Story (1995)\n")
    dataset = load_dataset(folder)
    assert dataset.user_ids.tolist() == [11, 14] and dataset.item_ids.tolist() == [5, 7, 9]
    assert dataset.matrix.toarray().tolist() == [[1, 1, 0], [0, 1, 1]]
    assert dataset.summary["duplicates_collapsed"] == 1
    assert dataset.times[0, 0] == 102  # the latest time of the collapsed pair
    genres = dataset.item_features["genres"].toarray()
    assert dataset.feature_values["genres"].tolist() == ["Comedy", "Drama"]
    assert genres.tolist() == [[1, 1], [0, 0], [0, 1]]  # every genre of item 5, not only the first
    assert dataset.summary["genres_rows_unknown_items"] == 1
    assert set(dataset.feature_values["titles"]) == {"toy", "story", "1995"}


BAD_INPUTS = [
    ("missing file", None, "train_ratings.csv: file not found"),
    ("empty file", "", "empty file"),
    ("missing column", "user,item\n1,2\n", "missing column(s) ['time']"),
    ("header only", "user,item,time\n", "no data rows"),
    ("unparsable", "user,item,time\n1,2,3\n1,x7,4\n", "train_ratings.csv:3: unparsable value 'x7' in column 'item'"),
    ("missing id", "user,item,time\n1,2,3\n,4,5\n", "train_ratings.csv:3: missing in column 'user'"),
    ("negative id", "user,item,time\n1,2,3\n1,-4,5\n", "train_ratings.csv:3: negative id -4"),
    ("fractional id", "user,item,time\n1,2.5,3\n", "train_ratings.csv:2: unparsable value '2.5'"),
    ("bad time", "user,item,time\n1,2,yesterday\n", "train_ratings.csv:2: unparsable value 'yesterday' in column 'time'"),
]


@pytest.mark.parametrize("case,text,message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_ratings_fail_with_exit_2_and_one_line(tmp_path, case, text, message):
    folder = tmp_path / "d"
    folder.mkdir()
    if text is not None:
        (folder / "train_ratings.csv").write_text(text)
    with pytest.raises(DataError, match=None) as err:
        load_dataset(folder)
    assert message in str(err.value)
    result = CliRunner().invoke(app, ["cv", "--data", str(folder), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("text,message", [
    ("", "genres.tsv: empty file"),
    ("item\tgenre\n", "no data rows"),
    ("movie\tgenre\n1\tDrama\n", "genres.tsv:1: the header must be"),
    ("item\tgenre\nabc\tDrama\n", "genres.tsv:2: unparsable value 'abc'"),
    # pandas alone reads a longer first line's first field as a row label (columns shift) and pads a
    # shorter one; the line after the header is checked like every later one.
    ("item\tgenre\n1\t2\tDrama\n5\tComedy\n", "genres.tsv:2: 3 fields where the header has 2"),
    ("\nitem\tgenre\n\n5\n9\tDrama\n", "genres.tsv:4: 1 fields where the header has 2"),
    ("item\tgenre\n5\tDrama\n9\tDrama\tHorror\n", "genres.tsv:3"),
])
def test_bad_side_files(tmp_path, text, message):
    folder = write(tmp_path / "d", "train_ratings.csv", GOOD)
    write(folder, "genres.tsv", text)
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert message in str(err.value)


def test_bad_config_is_exit_2(tmp_path):
    folder = write(tmp_path / "d", "train_ratings.csv", GOOD)
    config = tmp_path / "bad.toml"
    config.write_text('[model]\nname = "nope"\n')
    result = CliRunner().invoke(app, ["cv", "--data", str(folder), "--config", str(config)])
    assert result.exit_code == 2 and "unknown model 'nope'" in result.output
    result = CliRunner().invoke(app, ["cv", "--data", str(folder), "--set", "train.epochs=many"])
    assert result.exit_code == 2 and "epochs" in result.output


def test_times_follow_the_dataset_rows(tmp_path):
    folder = write(tmp_path / "d", "train_ratings.csv", GOOD)
    dataset = load_dataset(folder)
    assert np.array_equal(dataset.times.indices, dataset.matrix.indices)
    assert dataset.times.toarray().tolist() == [[102, 101, 0], [0, 90, 95]]


VALID_LOGS = {
    "plain": "user,item,time\n1,10,5\n2,10,3\n1,11,4\n",
    "header case, spaces, extra column": " User ,ITEM,time ,rating\n1, 10 ,5,x\n2,10,3.5,y\n",
    "columns reordered": "time,item,user\n5,10,1\n3,10,2\n",
    "ids written as floats": "user,item,time\n1.0,10,5\n2,1e1,3\n",
    "BOM and CRLF": "\ufeffuser,item,time\r\n1,10,5\r\n2,10,3\r\n",
    "fractional times": "user,item,time\n1,10,0.1\n1,11,0.30000000000000004\n",
}


@pytest.mark.parametrize("text", VALID_LOGS.values(), ids=VALID_LOGS.keys())
def test_typed_reader_agrees_with_the_text_reader(tmp_path, text):
    """The fast typed read either declines (None) or returns exactly what the careful line-by-line reader does."""
    from recsys_kit.data import load as data
    from recsys_kit.data import table

    path = tmp_path / "train_ratings.csv"
    path.write_text(text, encoding="utf-8")
    spec = data.ratings_table(path)
    careful = table.read_careful(path, spec)
    typed = table.read_typed(path, spec)
    if text == VALID_LOGS["plain"]:
        assert typed is not None  # the common case really takes the fast path
    if typed is not None:
        for name in data.RATINGS_COLUMNS:
            assert typed[name].dtype == careful[name].dtype and np.array_equal(typed[name], careful[name])


def test_parsed_data_is_cached_and_never_stale(tmp_path, monkeypatch):
    """A second load of the same files comes from the cache, equal in every array; an edited file,
    a damaged entry or RECSYS_KIT_CACHE=off means a fresh parse."""
    monkeypatch.setenv("RECSYS_KIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "train_ratings.csv").write_text("user,item,time\n1,10,5\n2,10,3\n1,11,4\n2,12,9\n")
    (data / "genres.tsv").write_text("item\tgenre\n10\tDrama\n10\tComedy\n11\tDrama\n")
    first = load_dataset(data)
    entries = list((tmp_path / "cache").glob("dataset-*.npz"))
    assert len(entries) == 1
    again = load_dataset(data)
    for a, b in ((first.matrix, again.matrix), (first.times, again.times),
                 (first.item_features["genres"], again.item_features["genres"])):
        assert a.shape == b.shape and (a != b).nnz == 0 and a.dtype == b.dtype
    assert np.array_equal(first.user_ids, again.user_ids) and np.array_equal(first.item_ids, again.item_ids)
    assert list(again.feature_values["genres"]) == ["Comedy", "Drama"]
    assert again.summary == first.summary and again.fingerprint() == first.fingerprint()
    assert first.source is not None and again.source == first.source  # the files' digest keys the holdout

    # The same size, written within the same clock tick: the contents decide, not the time stamp.
    (data / "train_ratings.csv").write_text("user,item,time\n1,10,5\n2,10,3\n1,11,4\n2,13,9\n")
    assert 13 in load_dataset(data).item_ids
    entries[0].write_bytes(b"damaged")
    (data / "train_ratings.csv").write_text("user,item,time\n1,10,5\n2,10,3\n1,11,4\n2,12,9\n")
    assert np.array_equal(load_dataset(data).item_ids, first.item_ids)  # parsed again, not read
    monkeypatch.setenv("RECSYS_KIT_CACHE", "off")
    (data / "train_ratings.csv").write_text("user,item,time\n7,10,5\n")
    load_dataset(data)
    assert len(list((tmp_path / "cache").glob("dataset-*.npz"))) == 2  # the first two contents only
    assert entries[0].read_bytes()[:2] == b"PK"  # the damaged entry was written anew


def test_ids_and_repeated_pairs_resolve_exactly_as_unique_and_lexsort():
    """The counting paths of from_interactions equal np.unique and the lexsort rule (latest time,
    then the later line) on dense, sparse and offset ids, with and without repeated pairs."""
    from recsys_kit.data.dataset import _latest_of_each_pair, _unique_ids

    rng = np.random.default_rng(0)
    for case in range(90):
        n = int(rng.integers(0, 400))
        ids = [rng.integers(-5, 30, n), rng.integers(0, 10**12, n), rng.integers(10**6, 10**6 + 50, n)][case % 3]
        got, expected = _unique_ids(ids), np.unique(ids, return_inverse=True)
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got, expected))
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, [3, 40, 2000][case % 3])))
        rows, cols = rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)
        times = rng.integers(0, [1, 3, 100][case % 3], n).astype(float)
        key = rows * shape[1] + cols
        order = np.lexsort((times, key))
        last = order[np.r_[key[order][1:] != key[order][:-1], True]] if n else order
        assert np.array_equal(_latest_of_each_pair(rows, cols, times, shape), last), case
