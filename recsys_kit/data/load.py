"""Contest-layout loading: `train_ratings.csv` (user,item,time) plus optional side files.

Every problem in the input is a DataError naming the file, the line (header = line 1)
and the fix; the CLI turns it into exit status 2.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_kit.data import cache as data_cache
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


def _read_table(path: Path, columns: tuple[str, ...], sep: str) -> pd.DataFrame:
    check_text_file(path, f"put the contest's {path.name} (UTF-8 text) in that folder")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; expected a header line {sep.join(columns)!r} and data rows")
    frame = read_text_table(path, sep, f"expected a header line {sep.join(columns)!r} and data rows")
    frame.columns = [c.strip().lower() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{where(path, 1)}: missing column(s) {missing}; the header must name "
                        f"{list(columns)} (found {list(frame.columns)})")
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows after the header; the file must hold at least one row")
    return frame


def _parse_ids(path: Path, frame: pd.DataFrame, column: str, allow_float: bool = False) -> np.ndarray:
    text = frame[column].str.strip()
    values = pd.to_numeric(text, errors="coerce")
    as_float = values.to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(as_float)  # missing, unparsable, inf (an infinite time orders nothing)
    if not allow_float:
        bad |= np.where(bad, 0.0, as_float) % 1 != 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        shown = text.iloc[row]
        what = ("missing" if shown == "" else f"infinite value {shown!r}" if np.isinf(as_float[row])
                else f"unparsable value {shown!r}")
        kind = "a finite number" if allow_float else "an integer"
        raise DataError(f"{where(path, row + 2)}: {what} in column {column!r}; it must be {kind}")
    if not allow_float:
        # Read as float (written with a point or exponent, or beyond int64) an id is exact only
        # below 2^53; an int64 column is exact up to 2^63.
        limit = 2.0 ** 63 if values.dtype.kind == "i" else 2.0 ** 53
        too_big = np.abs(as_float) >= limit
        if too_big.any():
            row = int(np.flatnonzero(too_big)[0])
            raise DataError(f"{where(path, row + 2)}: id {text.iloc[row]!r} in column {column!r} is too large "
                            f"to read exactly; ids must be integers below 2^53")
    array = as_float if allow_float else values.to_numpy(np.int64)
    if not allow_float and (array < 0).any():
        row = int(np.flatnonzero(array < 0)[0])
        raise DataError(f"{where(path, row + 2)}: negative id {array[row]} in column {column!r}; "
                        f"ids must be >= 0")
    return array


RATINGS_COLUMNS = ("user", "item", "time")


def _read_ratings_typed(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The usual well-formed log in one typed read (15x faster than reading every cell as text).

    None at the first sign of anything unusual: the careful text reader then finds the problem
    and names its line, so both readers accept exactly the same files."""
    try:
        with open(path, encoding="utf-8-sig") as handle:  # pandas drops a BOM too
            header = handle.readline().rstrip("\r\n").split(",")
    except (OSError, UnicodeDecodeError):
        return None
    names = [name.strip().lower() for name in header]
    if len(set(names)) != len(names) or not all(column in names for column in RATINGS_COLUMNS):
        return None
    position = {column: names.index(column) for column in RATINGS_COLUMNS}
    dtypes = {header[position["user"]]: np.int64, header[position["item"]]: np.int64,
              header[position["time"]]: np.float64}
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):  # a failed cast warns, then raises
            warnings.simplefilter("ignore")
            frame = pd.read_csv(path, usecols=sorted(position.values()), dtype=dtypes, engine="c",
                                on_bad_lines="error")
    except (ValueError, OverflowError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError, OSError):
        return None
    if list(frame.columns) != [header[p] for p in sorted(position.values())] or len(frame) == 0:
        return None
    users, items, times = (frame[header[position[c]]].to_numpy() for c in RATINGS_COLUMNS)
    if (users.dtype != np.int64 or items.dtype != np.int64 or (users < 0).any() or (items < 0).any()
            or not np.isfinite(times).all()):
        return None
    return users, items, times.astype(np.float64, copy=False)


def load_ratings(path: Path) -> Dataset:
    check_text_file(path, f"put the contest's {path.name} (UTF-8 text) in that folder")
    typed = _read_ratings_typed(path) if path.stat().st_size > 0 else None
    if typed is not None:
        return from_interactions(*typed)
    frame = _read_table(path, RATINGS_COLUMNS, ",")
    users = _parse_ids(path, frame, "user")
    items = _parse_ids(path, frame, "item")
    times = _parse_ids(path, frame, "time", allow_float=True)
    return from_interactions(users, items, times)


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
    files = [data_dir / RATINGS_FILE, *side_paths.values()]
    if files[0].is_file() and all(path.is_file() for path in side_paths.values()):
        cached = data_cache.load(files)
        if cached is not None:
            return cached
    dataset = load_ratings(data_dir / RATINGS_FILE)
    for name, path in side_paths.items():
        load_side_file(path, name, dataset)
    dataset.summary["side_files"] = sorted(dataset.item_features)
    data_cache.store(files, dataset)
    return dataset
