"""Convert public data sets into the kit's contest layout.

The contest layout is a folder with

- ``train_ratings.csv``: header ``user,item,time``, integer ids (the source's own ids), integer time;
- optional side files, tab-separated with a header ``item<TAB><name>`` and several rows per item allowed:
  ``genres.tsv``, ``titles.tsv``, ``years.tsv`` (``directors.tsv`` / ``writers.tsv`` when a source has them).

Side rows are written for every catalogue item the source lists, rated or not; the kit's loader ignores
(and counts) items it never sees in ``train_ratings.csv``.

This module never prints. Bad input raises :class:`recsys_kit.errors.DataError` with a one-line message that
names the file (and line) and the fix. Every output file is written under a temporary name and then moved into
place with :func:`os.replace`, and an existing non-empty output folder is refused, never overwritten.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_kit import files
from recsys_kit.errors import DataError, where
from recsys_kit.files import check_output_dir
from recsys_kit.data.sources import READERS

FORMATS = tuple(READERS)
RATINGS_FILE = "train_ratings.csv"


# --------------------------------------------------------------------------------------------- public API

def convert(fmt: str, src: Path, out_dir: Path) -> dict:
    """Convert the data set at ``src`` (format ``fmt``, one of :data:`FORMATS`) into ``out_dir``.

    ``src`` is the data set folder for the MovieLens formats and the ``<name>.txt`` file for ``s3rec``.
    ``out_dir`` must not exist or be empty. Returns a summary dict with the keys ``format``, ``users``,
    ``items`` (distinct items with at least one interaction), ``interactions`` (rows written to
    train_ratings.csv), ``side_files`` (file name -> data rows), ``notes`` (list of str: what the reader must
    know about the conversion, e.g. where ``time`` comes from) and ``out_dir`` (str).
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    src = Path(src)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    ratings, side, notes = READERS[fmt](src)

    if len(ratings) == 0:
        raise DataError(f"{where(src)}: the source holds no interactions; point SRC at a non-empty {fmt} data set")
    dups = int(ratings.duplicated(["user", "item"]).sum())
    if dups:
        notes.append(f"{dups} rows repeat an earlier (user, item) pair; all rows are kept as in the source "
                     "(the kit's loader collapses duplicate pairs)")
    catalogue = set()
    for df in side.values():
        catalogue.update(df["item"].tolist())
    if catalogue:
        rated = set(np.unique(ratings["item"].to_numpy()).tolist())
        unrated = len(catalogue - rated)
        unknown = len(rated - catalogue)
        if unrated:
            notes.append(f"side files cover {len(catalogue)} catalogue items; {unrated} of them have no "
                         "interactions (kept: the loader ignores and counts them)")
        if unknown:
            notes.append(f"{unknown} interacted items have no side rows in the source")

    ratings = ratings.sort_values(["user", "time"], kind="mergesort", ignore_index=True)
    _check_out_dir(out_dir)  # again, right before writing: never overwrite files that appeared meanwhile
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{where(out_dir)}: cannot create the output folder ({err.strerror}); "
                        "choose a writable OUT_DIR") from err
    _write_csv(ratings[["user", "item", "time"]], out_dir / RATINGS_FILE, sep=",")
    side_rows = {}
    for name, df in side.items():
        value = df.columns[1]
        if not pd.api.types.is_numeric_dtype(df[value]):
            # Side files are written unquoted (the loader reads them with QUOTE_NONE), so a value must not hold
            # the separator or a line break.
            text = df[value].astype(str)
            bad = text.str.contains(r"[\t\r\n]", regex=True)
            if bad.any():
                df = df.assign(**{value: text.str.replace(r"[\t\r\n]+", " ", regex=True)})
                notes.append(f"{int(bad.sum())} {name} values held tabs or line breaks, replaced by spaces")
        if len(df):
            _write_csv(df, out_dir / name, sep="\t")
            side_rows[name] = len(df)
    return {
        "format": fmt,
        "users": int(ratings["user"].nunique()),
        "items": int(ratings["item"].nunique()),
        "interactions": len(ratings),
        "side_files": side_rows,
        "notes": notes,
        "out_dir": str(out_dir),
    }


# --------------------------------------------------------------------------------------------- helpers

def _check_out_dir(out_dir: Path) -> None:
    check_output_dir(out_dir, "OUT_DIR")  # a file on its path, or no permission: before reading SRC
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DataError(f"{where(out_dir)}: OUT_DIR exists and is not a folder; choose a new or empty folder")
        if any(out_dir.iterdir()):
            raise DataError(f"{where(out_dir)}: OUT_DIR is not empty and files are never overwritten; "
                            "choose a new or empty folder")


def _write_csv(df: pd.DataFrame, path: Path, sep: str) -> None:
    try:
        # Unquoted: titles keep their quote characters exactly, as the kit's loader (QUOTE_NONE) reads them.
        files.write_frame(path, df, sep=sep, index=False, lineterminator="\n", quoting=csv.QUOTE_NONE,
                          escapechar=None)
    except OSError as err:
        raise DataError(f"{where(path)}: cannot write ({err.strerror}); check the free space and permissions "
                        "of OUT_DIR") from err
