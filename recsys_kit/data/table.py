"""One reader of delimited tables of numbers: the contest log (`train_ratings.csv`) and the public data
sets' rating files read by `kit convert`.

`read_table` runs two readers that accept exactly the same files and return the same arrays:

- `read_typed`, pandas' C parser with typed columns, for the usual well-formed file. It never raises:
  at the first sign of anything unusual it returns None and leaves the file to
- `read_careful`, a scan line by line that splits each line the way the C parser does (blank lines
  skipped, `"` quotes a field) and either returns the arrays or raises a DataError naming the first bad
  line (1-based, header = line 1), what is wrong with it and the fix.

Every data line must hold exactly `Table.fields` fields. The C parser does not check that by itself: it
pads a short line with missing values, never checks the first data line (a long one is cut, or its first
field silently becomes the row label) and checks no line at all when given `usecols`. So `read_typed`
reads every column, counts the first data line's fields itself, lets the parser refuse long later lines,
and finds short lines as missing values in the last column (typed) or by counting separators (untyped).
It also declines files with a lone carriage return (the parser can drop a field there) and columns whose
cells the parser reads otherwise than `parse_column`, the one definition of a good value (`_typed_ok`).
"""
from __future__ import annotations

import csv
import mmap
import warnings
from dataclasses import dataclass
from itertools import chain, islice
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_kit.errors import DataError, decoding_error, where

ID = "id"  # an integer id >= 0, written as an integer or an exact float (1.0, 1e3); int64
INT = "int"  # any integer, written the same ways; int64 (its messages end with the table's fix)
TIME = "time"  # any finite number; float64
EXACT = 2.0 ** 53  # a float-written integer is exact below this


@dataclass(frozen=True)
class Table:
    """How one delimited file is laid out."""
    sep: str
    fields: int  # fields on every data line
    columns: dict[str, tuple[int, str]]  # our name -> (0-based field, kind); read in this order
    fix: str  # how to repair a bad line, ends messages about structure
    header: bool = True  # the first non-blank line names the columns and is not data
    encoding: str = "utf-8"


class _Unparsable(Exception):
    """A record the csv module cannot split (an unclosed quote): its first line and the reason."""


def short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _records(path: Path, table: Table):
    """(line number, fields, first line) of every non-blank record; blank means empty or only spaces and
    tabs (other than the separator), as pandas' C parser skips them."""
    blank = " \t".replace(table.sep, "")
    utf8 = table.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    with open(path, encoding="utf-8-sig" if utf8 else table.encoding, newline="") as handle:
        lines = enumerate(handle, 1)
        for lineno, line in lines:
            text = line.rstrip("\r\n")
            if '"' not in text:
                fields = text.split(table.sep)
                if len(fields) > 1 or text.strip(blank):  # a blank line holds no separator
                    yield lineno, fields, text
                continue
            # A quoted field may hold the separator or run on over the next lines.
            reader = csv.reader(chain([line], (more for _, more in lines)), delimiter=table.sep, strict=False)
            try:
                yield lineno, next(reader), text
            except (csv.Error, StopIteration) as err:
                raise _Unparsable(lineno, str(err) or "a quote is never closed") from None


def read_header(path: Path, sep: str, encoding: str = "utf-8") -> tuple[int, list[str], str] | None:
    """The first non-blank line split into fields, as (line number, fields, line); None when there is none."""
    table = Table(sep, 0, {}, "", encoding=encoding)
    try:
        return next(_records(path, table), None)
    except UnicodeDecodeError:
        raise _encoding_error(path, table) from None
    except _Unparsable as err:
        raise DataError(f"{where(path, err.args[0])}: cannot parse the header ({err.args[1]}); "
                        "close the quote") from None


def _encoding_error(path: Path, table: Table) -> DataError:
    if table.encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        return decoding_error(path)
    return DataError(f"{where(path)}: not valid {table.encoding} text; {table.fix}")


# --------------------------------------------------------------------------------------------- values

def parse_column(cells: pd.Series, kind: str, name: str,
                 fix: str = "") -> tuple[np.ndarray | None, int | None, str]:
    """A column of strings as numbers: (values, None, "") or (None, first bad row, what is wrong there).

    The one definition of a good value: `read_typed` only keeps what this accepts, unchanged."""
    text = cells.str.strip()
    values = pd.to_numeric(text, errors="coerce")
    as_float = values.to_numpy(np.float64, na_value=np.nan)
    unparsable = ~np.isfinite(as_float)  # missing, unparsable, inf (an infinite time orders nothing)
    too_large = negative = np.zeros(len(as_float), bool)
    if kind != TIME:
        unparsable |= np.where(unparsable, 0.0, as_float) % 1 != 0
        # Read as float (written with a point or exponent, or beyond int64) an id is exact only
        # below 2^53; an int64 column is exact up to 2^63.
        limit = 2.0 ** 63 if values.dtype.kind == "i" else EXACT
        too_large = ~unparsable & (np.abs(np.where(unparsable, 0.0, as_float)) >= limit)
        negative = (as_float < 0) if kind == ID else negative
    bad = unparsable | too_large | negative
    if not bad.any():
        return (as_float if kind == TIME else values.to_numpy(np.int64)), None, ""
    row = int(np.flatnonzero(bad)[0])
    shown = text.iloc[row]
    if kind == INT:
        return None, row, (f"{name} {short(shown)} is too large to read exactly; {fix}" if too_large[row]
                           else f"{name} must be an integer, found {short(shown)}; {fix}")
    if unparsable[row]:
        what = ("missing" if shown == "" else f"infinite value {shown!r}" if np.isinf(as_float[row])
                else f"unparsable value {shown!r}")
        must = "a finite number" if kind == TIME else "an integer"
        return None, row, f"{what} in column {name!r}; it must be {must}"
    if too_large[row]:
        return None, row, (f"id {shown!r} in column {name!r} is too large to read exactly; "
                           "ids must be integers below 2^53")
    return None, row, f"negative id {int(as_float[row])} in column {name!r}; ids must be >= 0"


def _typed_ok(values: np.ndarray, kind: str) -> bool:
    """Whether the C parser's column is certainly what `parse_column` makes of the same cells.

    The C parser also reads a column of only True/False as 1/0, a float-written id beyond 2^53
    rounded, and "-0" as a time of -0.0: such columns go to the careful reader, which decides."""
    if len(values) == 0 or values.dtype != (np.float64 if kind == TIME else np.int64):
        return False
    low, high = values.min(), values.max()
    if kind == TIME:
        if not (np.isfinite(low) and np.isfinite(high)):
            return False
        if low >= 0 and high <= 1 and np.all((values == 0) | (values == 1)):
            return False
        return not (low <= 0 <= high and np.any(np.signbit(values) & (values == 0)))
    return -EXACT < low and high < EXACT and (kind != ID or low >= 0) and not (low >= 0 and high <= 1)


# --------------------------------------------------------------------------------------------- readers

def read_typed(path: Path, table: Table) -> dict[str, np.ndarray] | None:
    """The arrays from one typed read of a well-formed file; None at anything unusual (never raises)."""
    try:
        head = list(islice(_records(path, table), 1 + table.header))
    except (OSError, UnicodeDecodeError, _Unparsable):
        return None
    # The parser skips exactly line 1 as the header, and does not check the first data line's fields.
    if (len(head) < 1 + table.header or len(head[-1][1]) != table.fields
            or (table.header and (head[0][0] != 1 or '"' in head[0][2]))):
        return None
    dtypes = {index: np.float64 if kind == TIME else np.int64 for index, kind in table.columns.values()}
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):  # a failed cast warns, then raises
            warnings.simplefilter("ignore")
            frame = pd.read_csv(path, sep=table.sep, header=None, skiprows=1 if table.header else 0,
                                names=list(range(table.fields)), index_col=False, dtype=dtypes,
                                encoding=table.encoding, engine="c", on_bad_lines="error")
    except (ValueError, OverflowError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError, OSError):
        return None
    if frame.shape[1] != table.fields:
        return None
    arrays = {name: frame[index].to_numpy() for name, (index, _) in table.columns.items()}
    if not all(_typed_ok(arrays[name], kind) for name, (_, kind) in table.columns.items()):
        return None
    if not _plain_bytes(path, table, len(frame)):
        return None
    return arrays


def _plain_bytes(path: Path, table: Table, rows: int) -> bool:
    """No line ends in a lone carriage return (after a blank line ended so, the C parser drops a leading
    empty field), and none is short: a typed last column refuses the missing values the parser pads a
    short line with, else every line must hold `fields - 1` separators (in a file without quotes)."""
    typed_last = any(index == table.fields - 1 for index, _ in table.columns.values())
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            if typed_last and view.find(b"\r") == -1:  # the usual file: one quick look
                return True
            data = view[:]
    except (OSError, ValueError):
        return False
    if data.count(b"\r") != data.count(b"\r\n"):
        return False
    return typed_last or (b'"' not in data
                          and data.count(table.sep.encode()) == (table.fields - 1) * (rows + table.header))


def read_careful(path: Path, table: Table) -> dict[str, np.ndarray]:
    """The arrays, or a DataError naming the first line with a wrong field count or a bad value."""
    indices = [index for index, _ in table.columns.values()]
    pick = itemgetter(*indices) if len(indices) > 1 else (lambda fields: (fields[indices[0]],))
    picked: list[str] = []  # the picked fields of every good line, one line after another
    lines: list[int] = []
    wrong = None  # (line, what is wrong) of the first line that does not split into `fields` fields
    try:
        records = _records(path, table)
        if table.header:
            next(records, None)
        count, keep_line, keep = table.fields, lines.append, picked.extend
        for lineno, fields, text in records:
            if len(fields) != count:
                wrong = (lineno, f"expected {count} {table.sep!r}-separated fields, found "
                                 f"{len(fields)} in {short(text)}; {table.fix}")
                break
            keep_line(lineno)
            keep(pick(fields))
    except UnicodeDecodeError:
        raise _encoding_error(path, table) from None
    except _Unparsable as err:
        wrong = (err.args[0], f"cannot parse ({err.args[1]}); {table.fix}")
    cells = [picked[start::len(indices)] for start in range(len(indices))]
    del picked
    arrays, bad = {}, None  # bad: (row, message) of the first bad value, over all columns
    for (name, (_, kind)), column in zip(table.columns.items(), cells):
        values, row, message = parse_column(pd.Series(column, dtype=object), kind, name, table.fix)
        arrays[name] = values
        if row is not None and (bad is None or row < bad[0]):
            bad = (row, message)
    if bad is not None:  # it comes before `wrong`: the scan stopped there
        raise DataError(f"{where(path, lines[bad[0]])}: {bad[1]}")
    if wrong is not None:
        raise DataError(f"{where(path, wrong[0])}: {wrong[1]}")
    return arrays


def read_table(path: Path, table: Table) -> dict[str, np.ndarray]:
    """{column: values} of every data line in file order (int64 ids, float64 times), or a DataError."""
    typed = read_typed(path, table)
    return typed if typed is not None else read_careful(path, table)
