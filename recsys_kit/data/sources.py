"""Readers of public data sets (MovieLens 100K / 1M / latest, S3-Rec sequences) for `kit convert`.

Each reader takes the source path and returns ``(ratings, side, notes)``: a ``user,item,time`` int64 frame in the
source's own ids, a dict of side-file name -> ``item,<value>`` frame, and the notes a user must read about the
conversion. Bad input raises :class:`recsys_kit.errors.DataError` naming the file, the line and the fix.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_kit.data.table import INT, Table, read_header, read_table
from recsys_kit.data.table import short as _short
from recsys_kit.errors import DataError, where

_YEAR = re.compile(r"\((\d{4})\)\s*$")
_INT = re.compile(r"\s*-?\d+\s*")


# --------------------------------------------------------------------------------------------- helpers

def _text_lines(path: Path, encoding: str):
    """(1-based line number, line without its end) for every non-blank line of a text file."""
    with open(path, encoding=encoding) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield lineno, line


def _need_dir(src: Path, fmt: str, example: str) -> None:
    if not src.exists():
        raise DataError(f"{where(src)}: no such folder; point SRC at the {fmt} folder, e.g. {example}")
    if not src.is_dir():
        raise DataError(f"{where(src)}: SRC must be the {fmt} folder, not a file, e.g. {example}")


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{where(path)}: missing {what}; SRC must hold the data set's original files")
    return path


def _read_int_table(path: Path, *, sep: str, ncols: int, cols: dict[str, int], header: bool,
                    encoding: str = "utf-8", fix: str) -> pd.DataFrame:
    """The integer columns ``cols`` (name -> index) of a delimited file of ``ncols`` fields per line, as int64.

    The kit's one table reader (:mod:`recsys_kit.data.table`): a line with another field count or a non-integer
    id is a DataError naming that line (1-based, header = line 1).
    """
    spec = Table(sep=sep, fields=ncols, columns={name: (i, INT) for name, i in cols.items()}, fix=fix,
                 header=header, encoding=encoding)
    return pd.DataFrame(read_table(path, spec))


def _header_indices(path: Path, sep: str, wanted: dict[str, str], encoding: str = "utf-8") -> tuple[int, dict]:
    """Check the header line of ``path``; return (number of fields, {our name: column index})."""
    header = read_header(path, sep, encoding)
    if header is None:
        raise DataError(f"{where(path, 1)}: the file is empty; expected a header with "
                        f"{', '.join(wanted.values())}")
    lineno, fields, first = header
    names = [n.strip().strip('"') for n in fields]
    missing = [col for col in wanted.values() if col not in names]
    if missing:
        raise DataError(f"{where(path, lineno)}: header {_short(first)} lacks {', '.join(missing)}; expected the "
                        f"original file with columns {sep.join(wanted.values())}")
    return len(names), {ours: names.index(theirs) for ours, theirs in wanted.items()}


def _side_frame(rows: list[tuple[int, object]], column: str) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["item", column])
    df["item"] = df["item"].astype(np.int64)
    return df


def _title_side(titles: list[tuple[int, str]]) -> dict[str, pd.DataFrame]:
    years = []
    for item, title in titles:
        m = _YEAR.search(title)
        if m:
            years.append((item, int(m.group(1))))
    return {"titles.tsv": _side_frame(titles, "title"), "years.tsv": _side_frame(years, "year")}


def _parse_item_id(text: str, path: Path, lineno: int, fix: str) -> int:
    if not _INT.fullmatch(text):
        raise DataError(f"{where(path, lineno)}: item id must be an integer, found {_short(text)}; {fix}")
    return int(text)


# --------------------------------------------------------------------------------------------- readers

def _read_ml100k(src: Path):
    _need_dir(src, "movielens-100k", "/path/to/ml-100k (with u.data, u.item, u.genre)")
    fix = "use the original GroupLens ml-100k file"
    data = _need_file(src / "u.data", "u.data (user<TAB>item<TAB>rating<TAB>timestamp)")
    ratings = _read_int_table(data, sep="\t", ncols=4, cols={"user": 0, "item": 1, "time": 3}, header=False,
                              fix=fix)

    genre_path = _need_file(src / "u.genre", "u.genre (genre|index)")
    genre_names: dict[int, str] = {}
    for lineno, line in _text_lines(genre_path, "latin-1"):
        name, sep, idx = line.rpartition("|")
        if not sep or not _INT.fullmatch(idx) or not name:
            raise DataError(f"{where(genre_path, lineno)}: expected 'name|index', found {_short(line)}; {fix}")
        genre_names[int(idx)] = name
    if sorted(genre_names) != list(range(len(genre_names))) or not genre_names:
        raise DataError(f"{where(genre_path)}: genre indexes must run 0..n-1, found {sorted(genre_names)}; {fix}")

    item_path = _need_file(src / "u.item", "u.item (id|title|release|video release|URL|genre flags)")
    n_fields = 5 + len(genre_names)
    titles, genres = [], []
    unknown_flag = 0
    for lineno, line in _text_lines(item_path, "latin-1"):
        fields = line.split("|")
        if len(fields) != n_fields:
            raise DataError(f"{where(item_path, lineno)}: expected {n_fields} '|'-separated fields "
                            f"(5 + {len(genre_names)} genre flags), found {len(fields)}; {fix}")
        item = _parse_item_id(fields[0], item_path, lineno, fix)
        titles.append((item, fields[1]))
        for idx, flag in enumerate(fields[5:]):
            if flag not in ("0", "1"):
                raise DataError(f"{where(item_path, lineno)}: genre flag {idx + 1} must be 0 or 1, found "
                                f"{_short(flag)}; {fix}")
            if flag == "1":
                if genre_names[idx] == "unknown":
                    unknown_flag += 1
                else:
                    genres.append((item, genre_names[idx]))
    side = {"genres.tsv": _side_frame(genres, "genre"), **_title_side(titles)}
    notes = ["implicit feedback: every rated (user, item) pair in u.data is kept as an interaction, "
             "whatever its rating (1-5); ratings are dropped",
             "time = u.data timestamp (Unix seconds)"]
    if unknown_flag:
        notes.append(f"the 'unknown' genre flag is not written ({unknown_flag} items carry it); "
                     "all other flagged genres are written, several rows per item")
    return ratings, side, notes


def _read_ml1m(src: Path):
    _need_dir(src, "movielens-1m", "/path/to/ml-1m-implicit (with interactions.csv and movies.dat)")
    fix = "use the original ml-1m files"
    notes = []
    if (src / "ratings.dat").is_file():
        # The full GroupLens release: UserID::MovieID::Rating::Timestamp. Splitting on ':' lets the C parser read
        # '::' (the empty fields in between are ignored).
        path = src / "ratings.dat"
        ratings = _read_int_table(path, sep=":", ncols=7, cols={"user": 0, "item": 2, "time": 6}, header=False,
                                  encoding="latin-1", fix=fix + " (ratings.dat: UserID::MovieID::Rating::Timestamp)")
        notes.append("implicit feedback: every rated (user, item) pair in ratings.dat is kept as an interaction, "
                     "whatever its rating; ratings are dropped")
        notes.append("time = ratings.dat timestamp (Unix seconds)")
    else:
        path = _need_file(src / "interactions.csv", "interactions.csv (user,item) or ratings.dat")
        n, idx = _header_indices(path, ",", {"user": "user", "item": "item"})
        ratings = _read_int_table(path, sep=",", ncols=n, cols=idx, header=True, fix=fix + " (header user,item)")
        ratings["time"] = np.arange(len(ratings), dtype=np.int64)
        notes.append("no timestamps in source: time = row order in interactions.csv (0-based data row index), "
                     "so the 'last' items are the file's order, not real time; prefer random holdouts")
        notes.append("implicit feedback: every (user, item) pair in interactions.csv is an interaction "
                     "(the source has no ratings)")

    movies = _need_file(src / "movies.dat", "movies.dat (MovieID::Title::Genres)")
    titles, genres = [], []
    for lineno, line in _text_lines(movies, "latin-1"):
        head, sep1, rest = line.partition("::")
        title, sep2, genre_field = rest.rpartition("::")
        if not sep1 or not sep2:
            raise DataError(f"{where(movies, lineno)}: expected 'MovieID::Title::Genres', found "
                            f"{_short(line)}; {fix}")
        item = _parse_item_id(head, movies, lineno, fix)
        titles.append((item, title))
        for g in genre_field.split("|"):
            if g.strip() and g != "(no genres listed)":
                genres.append((item, g))
    side = {"genres.tsv": _side_frame(genres, "genre"), **_title_side(titles)}
    return ratings[["user", "item", "time"]], side, notes


def _read_ml_latest(src: Path):
    _need_dir(src, "movielens-latest", "/path/to/ml-latest-small (with ratings.csv and movies.csv)")
    fix = "use the original GroupLens ml-latest(-small) file"
    path = _need_file(src / "ratings.csv", "ratings.csv (userId,movieId,rating,timestamp)")
    n, idx = _header_indices(path, ",", {"user": "userId", "item": "movieId", "time": "timestamp"})
    ratings = _read_int_table(path, sep=",", ncols=n, cols=idx, header=True, fix=fix)

    movies = _need_file(src / "movies.csv", "movies.csv (movieId,title,genres)")
    titles, genres = [], []
    no_genre = 0
    with open(movies, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            head = next(reader, None)
            if head is None or [h.strip() for h in head][:3] != ["movieId", "title", "genres"]:
                raise DataError(f"{where(movies, 1)}: expected the header movieId,title,genres, found "
                                f"{_short(','.join(head or []))}; {fix}")
            for row in reader:
                lineno = reader.line_num
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) != 3:
                    raise DataError(f"{where(movies, lineno)}: expected 3 fields (movieId,title,genres), found "
                                    f"{len(row)}; quote titles that contain commas")
                item = _parse_item_id(row[0], movies, lineno, fix)
                titles.append((item, row[1]))
                if row[2].strip() == "(no genres listed)":
                    no_genre += 1
                    continue
                for g in row[2].split("|"):
                    if g.strip():
                        genres.append((item, g))
        except (csv.Error, UnicodeDecodeError) as err:
            raise DataError(f"{where(movies, reader.line_num)}: cannot parse ({err}); {fix}") from err
    side = {"genres.tsv": _side_frame(genres, "genre"), **_title_side(titles)}
    notes = ["implicit feedback: every rated (user, item) pair in ratings.csv is kept as an interaction, "
             "whatever its rating (0.5-5); ratings are dropped",
             "time = ratings.csv timestamp (Unix seconds)"]
    if no_genre:
        notes.append(f"{no_genre} movies are '(no genres listed)' and get no genre rows")
    n_titles = len(side["titles.tsv"])
    n_years = len(side["years.tsv"])
    if n_years < n_titles:
        notes.append(f"{n_titles - n_years} titles carry no '(yyyy)' year at the end and get no years.tsv row")
    return ratings, side, notes


def _read_s3rec(src: Path):
    example = "/path/to/s3rec-seq-attr/Beauty.txt (with Beauty_item2attributes.json beside it)"
    if src.is_dir():
        raise DataError(f"{where(src)}: SRC must be the <name>.txt sequence file, not a folder, e.g. {example}")
    if not src.is_file():
        raise DataError(f"{where(src)}: no such file; point SRC at the <name>.txt sequence file, e.g. {example}")
    fix = "each line must be 'user item1 item2 ...' with integer ids (S3-Rec format)"
    users, items, times = [], [], []
    seen: dict[int, int] = {}
    with open(src, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                tokens = raw.decode("ascii").split()
            except UnicodeDecodeError as err:
                raise DataError(f"{where(src, lineno)}: not a plain-text id line; {fix}") from err
            if not tokens:
                continue
            try:
                ids = [int(t) for t in tokens]
            except ValueError:
                bad = next(t for t in tokens if not _INT.fullmatch(t))
                raise DataError(f"{where(src, lineno)}: {_short(bad)} is not an integer id; {fix}") from None
            user, seq = ids[0], ids[1:]
            if not seq:
                raise DataError(f"{where(src, lineno)}: user {user} has no items; {fix}")
            if user in seen:
                raise DataError(f"{where(src, lineno)}: user {user} already has a sequence on line {seen[user]}; "
                                "each user must appear on one line only")
            seen[user] = lineno
            users.append(np.full(len(seq), user, dtype=np.int64))
            items.append(np.asarray(seq, dtype=np.int64))
            times.append(np.arange(len(seq), dtype=np.int64))
    if users:
        ratings = pd.DataFrame({"user": np.concatenate(users), "item": np.concatenate(items),
                                "time": np.concatenate(times)})
    else:
        ratings = pd.DataFrame({c: np.empty(0, dtype=np.int64) for c in ("user", "item", "time")})

    name = src.name[:-len(src.suffix)] if src.suffix else src.name
    attr_path = src.with_name(f"{name}_item2attributes.json")
    if not attr_path.is_file():
        raise DataError(f"{where(attr_path)}: missing attribute file; put {attr_path.name} beside {src.name} "
                        "(the S3-Rec release ships both)")
    try:
        with open(attr_path, encoding="utf-8") as f:
            attrs = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{where(attr_path, err.lineno)}: not valid JSON ({err.msg}); "
                        "expected {\"item\": [attr_id, ...], ...}") from err
    if not isinstance(attrs, dict):
        raise DataError(f"{where(attr_path)}: expected a JSON object {{\"item\": [attr_id, ...], ...}}")
    genres = []
    repeated = 0
    for key, values in attrs.items():
        if not _INT.fullmatch(str(key)) or not isinstance(values, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise DataError(f"{where(attr_path)}: item {key!r} must map an integer item id to a list of integer "
                            "attribute ids")
        item = int(key)
        unique = list(dict.fromkeys(values))
        repeated += len(values) - len(unique)
        genres.extend((item, f"attr{v}") for v in unique)
    side = {"genres.tsv": _side_frame(genres, "genre")}
    notes = [f"no timestamps in source: time = position in the user's sequence in {src.name} (0, 1, 2, ...; "
             "the source lists items in chronological order), so times are per-user ranks, not clock time",
             f"genres.tsv holds {attr_path.name} attribute ids as 'attr<id>' (the source has no attribute names)"]
    if repeated:
        notes.append(f"{repeated} repeated attribute ids within an item were dropped (each (item, attr) "
                     "written once)")
    return ratings, side, notes


READERS = {
    "movielens-100k": _read_ml100k,
    "movielens-1m": _read_ml1m,
    "movielens-latest": _read_ml_latest,
    "s3rec": _read_s3rec,
}
