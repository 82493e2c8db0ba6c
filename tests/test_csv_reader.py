"""The one reader of delimited number tables (`recsys_kit.data.table`) behind train_ratings.csv and
`kit convert`: its typed fast path and its line-by-line rescan accept the same files with the same
arrays, and a line with the wrong number of fields is refused on both, naming its line (header = line 1)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from recsys_kit.data import load, sources, table
from recsys_kit.data.convert import convert
from recsys_kit.data.load import load_dataset
from recsys_kit.errors import DataError

REPO = Path(__file__).resolve().parents[1]
HEADER = "user,item,time\n"


def ratings_file(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    path = folder / "train_ratings.csv"
    path.write_bytes(text.encode("utf-8"))
    return path


def both_paths(path: Path, spec: table.Table):
    """(fast arrays or None, careful arrays or the DataError it raised)."""
    try:
        careful = table.read_careful(path, spec)
    except DataError as err:
        careful = err
    return table.read_typed(path, spec), careful


def assert_same_arrays(left: dict, right: dict) -> None:
    assert list(left) == list(right)
    for name in left:
        assert left[name].dtype == right[name].dtype, name
        assert left[name].tobytes() == right[name].tobytes(), name  # bit for bit (-0.0 is not 0.0)


# ----------------------------------------------------------------------------- the case, end to end

def test_a_four_field_row_exits_2_through_kit_cv(tmp_path):
    path = ratings_file(tmp_path, HEADER + "1,2,3\n1,3,4\n5,7,8,9\n2,2,5\n2,3,6\n")
    with pytest.raises(DataError) as err:
        load_dataset(path.parent)
    message = str(err.value)
    assert f"{path}:4: expected 3 ','-separated fields, found 4 in '5,7,8,9'" in message
    result = CliRunner().invoke(app, ["cv", "--data", str(path.parent), "--config",
                                      str(REPO / "configs" / "popularity.toml"), "--folds", "2",
                                      "--runs-dir", str(tmp_path / "runs"), "--no-lb-estimate"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "train_ratings.csv:4:" in lines[0]
    assert "found 4" in lines[0] and "fix that line" in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ----------------------------------------------------------------------------- malformed logs

BAD_LOGS = [
    # name, body after the header line, line named, words in the message
    ("four fields, first data line", "5,7,8,9\n1,2,3\n", 2, "found 4 in '5,7,8,9'"),
    ("four fields, middle", "1,2,3\n1,3,4\n5,7,8,9\n2,2,5\n", 4, "found 4"),
    ("four fields, last line without newline", "1,2,3\n5,7,8,9", 3, "found 4"),
    ("four fields on every line", "5,7,8,9\n1,2,3,4\n", 2, "found 4"),
    ("trailing separator", "1,2,3\n5,7,8,\n", 3, "found 4 in '5,7,8,'"),
    ("two fields, first data line", "5,7\n1,2,3\n", 2, "found 2 in '5,7'"),
    ("two fields, middle", "1,2,3\n5,7\n2,2,5\n", 3, "found 2"),
    ("two fields, last line", "1,2,3\n2,2,5\n5,7\n", 4, "found 2"),
    ("one field", "1,2,3\n5\n", 3, "found 1"),
    ("empty trailing field", "1,2,3\n5,7,\n", 3, "missing in column 'time'"),
    ("empty middle field", "1,2,3\n5,,8\n", 3, "missing in column 'item'"),
    ("blank lines count as lines", "1,2,3\n\n   \n\t\n5,7,8,9\n", 6, "found 4"),
    ("CRLF", "1,2,3\r\n5,7,8,9\r\n2,2,5\r\n", 3, "found 4"),
    ("lone CR", "1,2,3\r5,7,8,9\r2,2,5\r", 3, "found 4"),
    ("quoted separator is one field", '1,2,3\n1,"2,3",4\n', 3, "unparsable value '2,3' in column 'item'"),
    ("a bad value before a bad count", "1,2,3\n1,x,3\n5,7,8,9\n", 3, "unparsable value 'x'"),
    ("a bad count before a bad value", "1,2,3\n5,7,8,9\n1,x,3\n", 3, "found 4"),
    ("first bad line over columns", "1,2,3\n1,2,x\n-1,2,3\n", 3, "unparsable value 'x' in column 'time'"),
]


@pytest.mark.parametrize("body, line, words", [case[1:] for case in BAD_LOGS], ids=[case[0] for case in BAD_LOGS])
def test_a_malformed_log_is_refused_with_its_line_on_both_paths(tmp_path, body, line, words):
    path = ratings_file(tmp_path, HEADER + body)
    with pytest.raises(DataError) as err:
        load.load_ratings(path)
    assert f"{path}:{line}: " in str(err.value) and words in str(err.value), str(err.value)
    typed, careful = both_paths(path, load.ratings_table(path))
    assert typed is None  # the fast path never takes it
    assert isinstance(careful, DataError) and str(careful) == str(err.value)


@pytest.mark.parametrize("body, line, words", [
    ("1,2,3,4.5\n5,7,8\n", 3, "expected 4 ','-separated fields, found 3"),  # untyped last column missing
    ("1,2,3,4.5\n5,7,8,9,10\n", 3, "found 5"),
    ("5,7,8\n1,2,3,4.5\n", 2, "found 3"),
])
def test_an_extra_column_does_not_hide_a_short_or_long_line(tmp_path, body, line, words):
    path = ratings_file(tmp_path, "user,item,time,rating\n" + body)
    typed, careful = both_paths(path, load.ratings_table(path))
    assert typed is None and isinstance(careful, DataError)
    assert f"{path}:{line}: " in str(careful) and words in str(careful), str(careful)


# ----------------------------------------------------------------------------- well-formed logs

GOOD_LOGS = {
    # name: (file text, users, items, times, whether the fast path must take it)
    "plain": (HEADER + "1,10,5\n2,10,3\n1,11,4\n", [1, 2, 1], [10, 10, 11], [5, 3, 4], True),
    "no final newline": (HEADER + "1,10,5\n2,10,3", [1, 2], [10, 10], [5, 3], True),
    "CRLF": (HEADER.replace("\n", "\r\n") + "1,10,5\r\n2,10,3\r\n", [1, 2], [10, 10], [5, 3], True),
    "blank and whitespace lines": (HEADER + "1,10,5\n\n  \n\t\n2,10,3\n\n", [1, 2], [10, 10], [5, 3], True),
    "BOM": ("\ufeff" + HEADER + "1,10,5\n2,10,3\n", [1, 2], [10, 10], [5, 3], True),
    "columns reordered, other column": ("time,rating,item,user\n5,x,10,1\n3,,10,2\n", [1, 2], [10, 10], [5, 3],
                                        True),
    "fractional times": (HEADER + "1,10,0.1\n1,11,0.30000000000000004\n2,3,1e9\n", [1, 1, 2], [10, 11, 3],
                         [0.1, 0.30000000000000004, 1e9], True),
    "spaces around values": (" User , ITEM ,time\n 1, 10 ,5 \n2,10,3\n", [1, 2], [10, 10], [5, 3], True),
    "lone CR": (HEADER.replace("\n", "\r") + "1,10,5\r2,10,3\r", [1, 2], [10, 10], [5, 3], False),
    "quoted fields": (HEADER + '"1","10","5"\n2,10,"3"\n', [1, 2], [10, 10], [5, 3], False),
    "ids written as floats": (HEADER + "1.0,10,5\n2,1e1,3\n", [1, 2], [10, 10], [5, 3], False),
    "leading blank line": ("\n" + HEADER + "1,10,5\n", [1], [10], [5], False),
    "ids 0 and 1 only": (HEADER + "0,1,5\n1,0,3\n", [0, 1], [1, 0], [5, 3], False),
    "ids beyond 2^53": (HEADER + "9007199254740993,1,5\n2,10,3\n", [9007199254740993, 2], [1, 10], [5, 3], False),
}


@pytest.mark.parametrize("name", GOOD_LOGS)
def test_a_well_formed_log_reads_the_same_on_both_paths(tmp_path, name):
    text, users, items, times, fast = GOOD_LOGS[name]
    path = ratings_file(tmp_path, text)
    typed, careful = both_paths(path, load.ratings_table(path))
    assert not isinstance(careful, DataError), str(careful)
    expected = {"user": np.array(users, np.int64), "item": np.array(items, np.int64),
                "time": np.array(times, np.float64)}
    assert_same_arrays(careful, expected)
    if fast:
        assert typed is not None  # the usual file takes the fast path
    if typed is not None:
        assert_same_arrays(typed, careful)
    assert_same_arrays(table.read_table(path, load.ratings_table(path)), expected)


def test_a_large_well_formed_log_reads_as_pandas_typed_read_does(tmp_path):
    """What the kit read before, bit for bit: one typed pandas read of the three columns."""
    rng = np.random.default_rng(0)
    n = 20_000
    frame = pd.DataFrame({"user": rng.integers(0, 10**6, n), "item": rng.integers(0, 10**9, n),
                          "time": rng.random(n) * 10.0 ** rng.integers(-3, 12, n)})
    path = tmp_path / "train_ratings.csv"
    frame.to_csv(path, index=False, float_format="%.17g")
    reference = pd.read_csv(path, dtype={"user": np.int64, "item": np.int64, "time": np.float64}, engine="c")
    spec = load.ratings_table(path)
    typed = table.read_typed(path, spec)
    assert typed is not None
    expected = {name: reference[name].to_numpy() for name in ("user", "item", "time")}
    assert_same_arrays(typed, expected)
    assert_same_arrays(table.read_careful(path, spec), expected)


TOKENS = ["5", " 5", "5 ", "+5", "-5", "05", "5.0", "5.", "1e3", "True", "False", "true", "nan", "NA", "", " ",
          "inf", "-inf", "9223372036854775807", "9223372036854775808", "9007199254740993", "9007199254740993.0",
          "1e20", "\xa05", "0", "1", "-0", "-0.0", "0.5", "1.5", "1_0", "0x10", '"5"', '" 5"', "#N/A", "5\t"]


@pytest.mark.parametrize("kind", [table.ID, table.INT])
@pytest.mark.parametrize("column", [0, 1, 2])
def test_fast_path_keeps_only_what_the_rescan_reads_the_same(tmp_path, kind, column):
    """Every odd cell, alone or in a column of booleans or zeros: the fast path either declines
    or returns exactly the rescan's arrays; what it accepts, the rescan accepts."""
    kinds = {0: kind, 1: kind, 2: table.TIME if kind == table.ID else kind}
    spec = table.Table(",", 3, {"user": (0, kinds[0]), "item": (1, kinds[1]), "time": (2, kinds[2])}, "fix it")
    path = tmp_path / "t.csv"
    taken = 0
    for token in TOKENS:
        for others in ("7", "True", "0"):
            rows = [["3", "4", "6"], ["3", "4", "6"]]
            rows[0][column] = others
            rows[1][column] = token
            path.write_text("a,b,c\n" + "".join(",".join(row) + "\n" for row in rows))
            typed, careful = both_paths(path, spec)
            if typed is not None:
                taken += 1
                assert not isinstance(careful, DataError), (token, others, str(careful))
                assert_same_arrays(typed, careful)
    assert taken >= 10  # the fast path is really exercised


# ----------------------------------------------------------------------------- the converters' tables

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"


@pytest.mark.parametrize("lines, line, words", [
    (["1\t2\t3\t4\t5"], 4, "expected 4 '\\t'-separated fields, found 5"),
    (["1\t2\t3\t4\t"], 4, "found 5"),
    (["1\t2\t3"], 4, "found 3"),
])
def test_a_u_data_line_with_the_wrong_field_count_is_refused(tmp_path, lines, line, words):
    for where_at in ("first", "middle", "last"):
        rows = U_DATA.splitlines()
        at = {"first": 0, "middle": 2, "last": len(rows)}[where_at]
        rows[at:at] = lines
        src = tmp_path / where_at
        src.mkdir()
        (src / "u.data").write_text("\n".join(rows) + "\n")
        with pytest.raises(DataError) as err:
            convert("movielens-100k", src, tmp_path / f"out-{where_at}")
        assert f"u.data:{at + 1}: " in str(err.value) and words in str(err.value), str(err.value)
        assert "use the original GroupLens ml-100k file" in str(err.value)
        spec = table.Table("\t", 4, {"user": (0, table.INT), "item": (1, table.INT), "time": (3, table.INT)},
                           "fix", header=False)
        typed, careful = both_paths(src / "u.data", spec)
        assert typed is None and isinstance(careful, DataError)
        assert not (tmp_path / f"out-{where_at}").exists()


def test_a_well_formed_u_data_takes_the_fast_path(tmp_path):
    (tmp_path / "u.data").write_text(U_DATA)
    spec = table.Table("\t", 4, {"user": (0, table.INT), "item": (1, table.INT), "time": (3, table.INT)},
                       "fix", header=False)
    typed, careful = both_paths(tmp_path / "u.data", spec)
    assert typed is not None
    assert_same_arrays(typed, careful)
    assert careful["user"].tolist() == [196, 186, 22] and careful["time"].tolist()[0] == 881250949


def test_ml_latest_ratings_with_an_extra_field_is_refused(tmp_path):
    src = tmp_path / "latest"
    src.mkdir()
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247,7\n")
    (src / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    with pytest.raises(DataError, match=r"ratings\.csv:3: expected 4 ','-separated fields, found 5"):
        convert("movielens-latest", src, tmp_path / "out")


def test_interactions_with_an_untyped_last_column_refuses_a_short_line(tmp_path):
    """user,item,rating: the last column is not read, so a missing rating is found by counting fields."""
    path = tmp_path / "interactions.csv"
    path.write_text("user,item,rating\n1,2,5\n1,3\n2,2,4\n")
    with pytest.raises(DataError, match=r"interactions\.csv:3: expected 3 ','-separated fields, found 2"):
        sources._read_int_table(path, sep=",", ncols=3, cols={"user": 0, "item": 1}, header=True, fix="fix")
    path.write_text("user,item,rating\n1,2,5\n1,3,\n2,2,4\n")  # an empty rating is a field
    frame = sources._read_int_table(path, sep=",", ncols=3, cols={"user": 0, "item": 1}, header=True, fix="fix")
    assert frame["item"].tolist() == [2, 3, 2] and frame["user"].dtype == np.int64
