"""Contest-layout loading: `train_ratings.csv` (user,item,time) plus optional side files.

Every problem in the input is a DataError naming the file, the line (header = line 1)
and the fix; the CLI turns it into exit status 2.
"""
from __future__ import annotations

import csv
import re
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_kit.data import cache as data_cache
from recsys_kit.data import table
from recsys_kit.data.dataset import Dataset, from_interactions
from recsys_kit.errors import DataError, check_text_file, decoding_error, os_error, where

RATINGS_FILE = "train_ratings.csv"
SIDE_FILES = ("genres", "titles", "years", "directors", "writers")
_TOKEN = re.compile(r"[a-z0-9]+")


def read_text_table(path: Path, sep: str, fix: str) -> pd.DataFrame:
    """Every cell of a UTF-8 CSV/TSV as a string; a DataError for anything unreadable (not a file,
    not text, not UTF-8, a line that does not parse, no header)."""
    check_text_file(path, fix)
    try:
        _check_first_row(path, sep)
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                           quoting=3 if sep == "\t" else 0, engine="c", on_bad_lines="error")
    except pd.errors.ParserError as err:
        line = re.search(r"line (\d+)", str(err))
        raise DataError(f"{where(path, int(line.group(1)) if line else None)}: cannot parse "
                        f"({str(err).strip()}); fix that line") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file; {fix}") from None
    except UnicodeDecodeError:
        raise decoding_error(path) from None
    except OSError as err:
        raise os_error(path, err, fix) from None


def _check_first_row(path: Path, sep: str) -> None:
    """The first data line holds as many fields as the header. pandas checks every later line, but it
    reads a longer first line as a row label (every column shifts by one) and pads a shorter one."""
    def fields(line: str) -> int:
        return len(line.split(sep)) if sep == "\t" else len(next(csv.reader([line], delimiter=sep)))

    with open(path, encoding="utf-8", newline="") as handle:
        lines = islice(((number, line.rstrip("\r\n")) for number, line in enumerate(handle, start=1)
                        if line.strip()), 2)
        (_, header), *data = list(lines) or [(0, "")]
    if data and fields(data[0][1]) != fields(header):
        number, line = data[0]
        raise DataError(f"{where(path, number)}: {fields(line)} fields where the header has {fields(header)} "
                        f"({table.short(line)!r}); each line must hold one value per header column; fix that line")


def _parse_ids(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    """A side file's id column: int64 ids, or a DataError naming the line of the first bad one."""
    values, row, message = table.parse_column(frame[column], table.ID, column)
    if row is not None:
        raise DataError(f"{where(path, row + 2)}: {message}")
    return values


RATINGS_COLUMNS = ("user", "item", "time")
_RATINGS_KINDS = (table.ID, table.ID, table.TIME)
_RATINGS_HEADER = f"expected a header line {','.join(RATINGS_COLUMNS)!r} and data rows"


def ratings_table(path: Path) -> table.Table:
    """The layout of a train_ratings.csv, from its header (names in any case and order, other columns
    allowed): a DataError when the file holds no header or the header lacks a column."""
    header = table.read_header(path, ",")
    if header is None:
        raise DataError(f"{path}: empty file; {_RATINGS_HEADER}")
    lineno, fields, _ = header
    names = [name.strip().lower() for name in fields]
    missing = [c for c in RATINGS_COLUMNS if c not in names]
    if missing:
        raise DataError(f"{where(path, lineno)}: missing column(s) {missing}; the header must name "
                        f"{list(RATINGS_COLUMNS)} (found {names})")
    return table.Table(sep=",", fields=len(names),
                       columns={c: (names.index(c), kind) for c, kind in zip(RATINGS_COLUMNS, _RATINGS_KINDS)},
                       fix=f"each line must hold one value per header column ({len(names)} here); fix that line")


def load_ratings(path: Path) -> Dataset:
    check_text_file(path, f"put the contest's {path.name} (UTF-8 text) in that folder")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; {_RATINGS_HEADER}")
    arrays = table.read_table(path, ratings_table(path))
    if len(arrays["user"]) == 0:
        raise DataError(f"{path}: no data rows after the header; the file must hold at least one row")
    return from_interactions(arrays["user"], arrays["item"], arrays["time"])


def _multi_hot(items: np.ndarray, values: np.ndarray, dataset: Dataset) -> tuple[sp.csr_matrix, np.ndarray, int]:
    """items x distinct values (all values of an item, not just the first); unknown items dropped."""
    col_of = np.searchsorted(dataset.item_ids, items)
    col_of = np.clip(col_of, 0, dataset.n_items - 1)
    known = dataset.item_ids[col_of] == items
    labels, value_index = np.unique(values[known], return_inverse=True)
    matrix = sp.csr_matrix((np.ones(int(known.sum()), np.float32), (col_of[known], value_index)),
                           shape=(dataset.n_items, len(labels)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix, labels, int((~known).sum())


def load_side_file(path: Path, name: str, dataset: Dataset) -> None:
    frame = _read_side_frame(path, name)
    items = _parse_ids(path, frame, "item")
    values = frame.iloc[:, 1].str.strip().to_numpy(dtype=object)
    if name == "titles":
        # Titles become a bag of lower-case word tokens (the year in brackets included).
        tokens = [_TOKEN.findall(title.lower()) for title in values]
        items = np.repeat(items, [len(t) for t in tokens])
        values = np.array([tok for t in tokens for tok in t], dtype=object)
    empty = values == ""
    matrix, labels, unknown = _multi_hot(items[~empty], values[~empty].astype(str), dataset)
    dataset.item_features[name] = matrix
    dataset.feature_values[name] = labels
    dataset.summary[f"{name}_rows_unknown_items"] = unknown
    dataset.summary[f"{name}_values"] = len(labels)


def _read_side_frame(path: Path, name: str) -> pd.DataFrame:
    fix = "expected UTF-8 text with a header line 'item<TAB>value' and data rows, or delete the file"
    check_text_file(path, fix)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; {fix}")
    frame = read_text_table(path, "\t", fix)
    frame.columns = [c.strip().lower() for c in frame.columns]
    if "item" not in frame.columns or frame.shape[1] < 2:
        raise DataError(f"{where(path, 1)}: the header must be 'item<TAB>{name.rstrip('s')}' "
                        f"(found {list(frame.columns)}); fix the header")
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows after the header; add rows or delete the file")
    value_column = [c for c in frame.columns if c != "item"][0]
    return frame[["item", value_column]]


def load_dataset(data_dir: Path) -> Dataset:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: not a directory; pass the folder that holds {RATINGS_FILE}")
    side_paths = {name: data_dir / f"{name}.tsv" for name in SIDE_FILES if (data_dir / f"{name}.tsv").exists()}
    # One digest of the files keys both the lookup and the store (a tenth of a second per 100 MB).
    key = data_cache.files_key([data_dir / RATINGS_FILE, *side_paths.values()])
    cached = data_cache.load(key)
    if cached is not None:
        return cached
    dataset = load_ratings(data_dir / RATINGS_FILE)
    for name, path in side_paths.items():
        load_side_file(path, name, dataset)
    dataset.summary["side_files"] = sorted(dataset.item_features)
    dataset.source = key
    data_cache.store(key, dataset)
    return dataset
