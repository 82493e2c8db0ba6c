"""`recsys_kit.convert` / `kit convert` on the real data sets in ../shared/data (never copied into the repo)."""
import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from cli.convert import convert as convert_command
from recsys_kit.data.convert import FORMATS, convert
from recsys_kit.errors import DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _source(*parts: str) -> Path:
    """A data set under ../shared/data; its absence is a failure (CI always has it), never a skip."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"test data missing: {path} (expected the shared data folder next to the repository, "
                    f"i.e. {DATA}); these tests need the real data sets and must not be skipped")
    return path


def _ratings(out: Path) -> pd.DataFrame:
    with open(out / "train_ratings.csv") as f:
        assert f.readline() == "user,item,time\n"
    df = pd.read_csv(out / "train_ratings.csv")
    for col in ("user", "item", "time"):
        assert df[col].dtype == np.int64, col
    return df


def _side(out: Path, name: str) -> pd.DataFrame:
    with open(out / name) as f:
        assert f.readline() == f"item\t{name.removesuffix('.tsv').rstrip('s')}\n"
    # Written unquoted, read the way the kit's loader reads side files.
    return pd.read_csv(out / name, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False, dtype={"item": "int64"})


def _no_temp_files(out: Path) -> None:
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_formats_constant():
    assert FORMATS == ("movielens-100k", "movielens-1m", "movielens-latest", "s3rec")


def test_movielens_100k(tmp_path):
    out = tmp_path / "ml100k"
    summary = convert("movielens-100k", _source("ml-100k"), out)
    assert (summary["format"], summary["users"], summary["items"], summary["interactions"]) == \
        ("movielens-100k", 943, 1682, 100000)
    assert summary["out_dir"] == str(out)
    assert set(summary["side_files"]) == {"genres.tsv", "titles.tsv", "years.tsv"}
    assert any("implicit" in note for note in summary["notes"])

    df = _ratings(out)
    assert len(df) == 100000 and df["user"].nunique() == 943 and df["item"].nunique() == 1682
    assert df["time"].min() > 800_000_000  # Unix seconds kept

    genres = _side(out, "genres.tsv")
    assert len(genres) == summary["side_files"]["genres.tsv"]
    per_item = genres.groupby("item")["genre"].apply(set)
    assert (per_item.map(len) > 1).any()  # every flagged genre, not only the first
    assert per_item[1] == {"Animation", "Children's", "Comedy"}  # Toy Story
    assert "unknown" not in set(genres["genre"])

    titles = _side(out, "titles.tsv")
    assert len(titles) == 1682
    assert titles.set_index("item").loc[1, "title"] == "Toy Story (1995)"  # title kept with its year
    years = _side(out, "years.tsv")
    assert 0 < len(years) <= 1682
    assert years.set_index("item").loc[1, "year"] == 1995
    assert years["year"].between(1900, 2000).all()
    _no_temp_files(out)


def test_movielens_latest_small(tmp_path):
    out = tmp_path / "latest"
    summary = convert("movielens-latest", _source("ml-latest-small"), out)
    assert (summary["users"], summary["items"], summary["interactions"]) == (610, 9724, 100836)
    df = _ratings(out)
    assert len(df) == 100836 and df["item"].nunique() == 9724

    genres = _side(out, "genres.tsv")
    assert "(no genres listed)" not in set(genres["genre"])
    assert genres.groupby("item").size().max() > 1
    titles = _side(out, "titles.tsv")
    movies = pd.read_csv(_source("ml-latest-small", "movies.csv"))
    assert len(titles) == len(movies) == 9742  # all catalogue items, rated or not
    # Titles kept exactly as given, commas and quotes included.
    assert (titles["title"].to_numpy() == movies["title"].to_numpy()).all()
    years = _side(out, "years.tsv").set_index("item")["year"]
    assert len(years) < len(titles)  # some titles carry no year
    with_year = movies[movies["title"].str.contains(r"\(\d{4}\)\s*$")]
    assert len(years) == len(with_year)
    assert years[1] == 1995


def test_movielens_1m_row_order_time(tmp_path):
    out = tmp_path / "ml1m"
    summary = convert("movielens-1m", _source("ml-1m-implicit"), out)
    assert (summary["users"], summary["interactions"]) == (6040, 1000209)
    assert any("no timestamps" in n and "row order in interactions.csv" in n for n in summary["notes"])

    df = _ratings(out)
    assert len(df) == 1000209 and df["user"].nunique() == 6040
    assert (np.diff(df["time"].to_numpy()) > 0).all()  # time = row index, strictly increasing
    assert df["time"].iloc[0] == 0
    source = pd.read_csv(_source("ml-1m-implicit", "interactions.csv"))
    assert (df["user"].to_numpy() == source["user"].to_numpy()).all()
    assert (df["item"].to_numpy() == source["item"].to_numpy()).all()

    genres = _side(out, "genres.tsv")
    assert genres.groupby("item")["genre"].apply(set)[1] == {"Animation", "Children's", "Comedy"}
    assert len(_side(out, "titles.tsv")) == 3883


def test_s3rec_beauty(tmp_path):
    out = tmp_path / "beauty"
    summary = convert("s3rec", _source("s3rec-seq-attr", "Beauty.txt"), out)
    assert (summary["users"], summary["interactions"]) == (22363, 198502)
    assert set(summary["side_files"]) == {"genres.tsv"}
    assert any("position in the user's sequence" in n for n in summary["notes"])

    df = _ratings(out)
    assert len(df) == 198502
    # time = 0, 1, 2, ... within each user's sequence
    expected = df.groupby("user").cumcount().to_numpy()
    assert (df["time"].to_numpy() == expected).all()
    first = _source("s3rec-seq-attr", "Beauty.txt").read_text().split("\n", 1)[0].split()
    user1 = df[df["user"] == int(first[0])]
    assert user1["item"].tolist() == [int(t) for t in first[1:]]

    genres = _side(out, "genres.tsv")
    assert genres["genre"].str.match(r"^attr\d+$").all()
    assert not genres.duplicated().any()


def test_s3rec_lastfm_dedups_repeated_attributes(tmp_path):
    summary = convert("s3rec", _source("s3rec-seq-attr", "LastFM.txt"), tmp_path / "lastfm")
    assert summary["users"] == 1090 and summary["interactions"] == 52551
    assert any("repeated attribute ids" in n for n in summary["notes"])
    genres = _side(tmp_path / "lastfm", "genres.tsv")
    assert not genres.duplicated().any()


def test_s3rec_repeated_items_are_kept_and_noted(tmp_path):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "Tiny.txt").write_text("1 5 6 5\n2 6 7\n")
    (src_dir / "Tiny_item2attributes.json").write_text('{"5": [1, 1, 2], "6": [3]}')
    summary = convert("s3rec", src_dir / "Tiny.txt", tmp_path / "out")
    assert summary["interactions"] == 5
    assert any("repeat an earlier (user, item) pair" in n for n in summary["notes"])
    df = _ratings(tmp_path / "out")
    assert df.values.tolist() == [[1, 5, 0], [1, 6, 1], [1, 5, 2], [2, 6, 0], [2, 7, 1]]
    assert _side(tmp_path / "out", "genres.tsv").values.tolist() == [[5, "attr1"], [5, "attr2"], [6, "attr3"]]


def test_movielens_1m_with_original_ratings_dat_uses_real_time(tmp_path):
    src = tmp_path / "ml-1m"
    src.mkdir()
    (src / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (src / "movies.dat").write_text("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                                    "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n",
                                    encoding="latin-1")
    summary = convert("movielens-1m", src, tmp_path / "out")
    assert not any("no timestamps" in n for n in summary["notes"])
    df = _ratings(tmp_path / "out")
    assert df.values.tolist() == [[1, 1193, 978300760], [1, 661, 978302109], [2, 1193, 978298413]]


def test_unknown_format_raises(tmp_path):
    with pytest.raises(DataError, match="unknown format 'netflix'.*movielens-100k"):
        convert("netflix", _source("ml-100k"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_source_raises(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere"))):
        convert("movielens-100k", tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(DataError, match="Nope.txt"):
        convert("s3rec", tmp_path / "Nope.txt", tmp_path / "out")
    src = tmp_path / "partial"
    src.mkdir()
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    with pytest.raises(DataError, match=r"movies\.csv"):  # a missing side source is named too
        convert("movielens-latest", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_s3rec_missing_attributes_file_raises(tmp_path):
    (tmp_path / "Solo.txt").write_text("1 2 3\n")
    with pytest.raises(DataError, match="Solo_item2attributes.json"):
        convert("s3rec", tmp_path / "Solo.txt", tmp_path / "out")


def test_bad_line_is_named(tmp_path):
    src = tmp_path / "latest"
    src.mkdir()
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,x,3.0,964982704\n")
    (src / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    with pytest.raises(DataError, match=r"ratings\.csv:3: item must be an integer, found 'x'"):
        convert("movielens-latest", src, tmp_path / "out")
    seq = tmp_path / "Bad.txt"
    seq.write_text("1 2 3\n2 4 five\n")
    (tmp_path / "Bad_item2attributes.json").write_text("{}")
    with pytest.raises(DataError, match=r"Bad\.txt:2: 'five' is not an integer"):
        convert("s3rec", seq, tmp_path / "out2")


def test_non_empty_out_dir_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "mine.txt"
    keep.write_text("user file")
    with pytest.raises(DataError, match="not empty"):
        convert("movielens-100k", _source("ml-100k"), out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and keep.read_text() == "user file"
    # An existing but empty folder is fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert convert("movielens-100k", _source("ml-100k"), empty)["interactions"] == 100000


def test_cli_prints_notes_and_out_dir_last(tmp_path):
    app = typer.Typer(add_completion=False)
    app.command()(convert_command)
    app.command("noop")(lambda: None)  # two commands, so `convert` is addressed by name as in `kit convert`
    out = tmp_path / "ml1m-cli"
    result = CliRunner().invoke(app, ["convert", "movielens-1m", str(_source("ml-1m-implicit")), str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert "no timestamps" in result.stderr and "1,000,209" in result.stderr

    again = CliRunner().invoke(app, ["convert", "movielens-1m", str(_source("ml-1m-implicit")), str(out)])
    assert again.exit_code == 2
    assert "not empty" in again.stderr
    bad = CliRunner().invoke(app, ["convert", "imdb", str(tmp_path), str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown format" in bad.stderr
