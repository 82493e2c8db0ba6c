"""Every file the kit writes lands whole or not at all, and score matrices move a block of rows at a time.

Writing: `replacing(path)` hands out a temporary name beside `path` and renames it into place
when the write succeeded (atomic on one file system) or removes it when it failed; every writer
below (text, JSON, CSV frames, .npy, .npz, copies, score matrices by row blocks) goes through it,
so a reader never sees half a file and a user's file is replaced only by a whole new one.

Score matrices (`ScoreFile`):
Why not `np.memmap`: every page a map touches stays in the process's resident set until the map
is dropped, and the kernel maps neighbouring pages on each fault. Writing one fold's users (a
random fifth of the rows) into a contest-scale OOF map touched 782 of its 814 MB, so a `kit cv`
held each whole matrix it wrote. Here rows go through pread/pwrite into arrays the caller owns:
the file's pages stay in the page cache, not in this process, and a block's memory is freed when
the caller drops it. Indexing covers what the kit does with a score matrix: an int, a slice, an
array of row indices (any order, repeats allowed) or a boolean mask, optionally with a column
index after it; `scores[rows] = block` and `scores[rows] += block` write rows back.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from recsys_kit.errors import DataError

DTYPE = np.dtype(np.float32)
TMP = ".tmp"


RUN_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")  # one directory name: no slash, no leading dot or dash


def check_run_name(name: str, option: str = "--name") -> None:
    if not RUN_NAME.fullmatch(name) or len(name) > 200:
        raise DataError(f"{option} {name!r}: use letters, digits, '.', '_' and '-' (it names one directory)")


def check_output_dir(path: Path, option: str) -> None:
    """`path` is a writable directory or can be made one: its nearest existing ancestor is a
    writable directory, not a regular file. Called before anything is computed or drawn."""
    path = Path(path)
    for existing in (path, *path.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            raise DataError(f"{option} {path}: {existing} is a file, not a directory; pass another {option}")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise DataError(f"{option} {path}: {existing} is not writable; pass another {option}")
        return


def temporary(path: Path, unique: bool = False, suffix: str = TMP) -> Path:
    """The temporary name `path` is written under; `unique` adds the process id, for files that
    several processes may write at once (a shared study's files, the data cache)."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}{suffix}" if unique else f"{path.name}{suffix}")


@contextmanager
def replacing(path: Path, unique: bool = False, suffix: str = TMP) -> Iterator[Path]:
    """Yields the temporary path to write; renames it over `path` on success, removes it on failure."""
    tmp = temporary(path, unique, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, encoding: str | None = None) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def write_json(path: Path, payload) -> None:
    """Strict JSON: NaN and inf become null (the writer of a figure that can be missing says why
    next to it), so every JSON parser reads the file."""
    write_text(path, json.dumps(_strict(payload), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _strict(value):
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    if isinstance(value, np.ndarray):
        return _strict(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_frame(path: Path, frame, **to_csv) -> None:
    """A pandas DataFrame as CSV/TSV (`to_csv`'s keyword arguments)."""
    with replacing(path) as tmp:
        frame.to_csv(tmp, **to_csv)


def append_line(path: Path, line: str) -> None:
    """One line added at the end, whole: O_APPEND keeps lines of concurrent writers apart, and
    nothing already in the file is ever rewritten (an append-only ledger)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(handle, data)
        os.fsync(handle)
    finally:
        os.close(handle)


def save_npy(path: Path, array: np.ndarray) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def save_arrays(path: Path, arrays: dict[str, np.ndarray], unique: bool = False) -> None:
    """Named arrays in one uncompressed .npz (np.savez)."""
    with replacing(path, unique, suffix=".tmp.npz") as tmp:  # savez appends .npz to any other name
        np.savez(tmp, **arrays)


def save_sparse(path: Path, matrix: sp.csr_matrix) -> None:
    with replacing(path, suffix=".tmp.npz") as tmp:
        sp.save_npz(tmp, matrix.tocsr(), compressed=False)  # zlib took seconds at contest scale


def copy_file(source: Path, path: Path) -> None:
    with replacing(path) as tmp:
        shutil.copyfile(source, tmp)


def open_scores(path: Path, shape: tuple[int, int]) -> "ScoreFile":
    """A new float32 score matrix written under a temporary name; `finish_scores` publishes it."""
    return ScoreFile.create(temporary(path), shape)


def finish_scores(path: Path, scores: "ScoreFile") -> None:
    """Rows on disk, the file closed and renamed into place."""
    scores.flush()
    scores.close()
    os.replace(temporary(path), path)


def discard_scores(path: Path, scores: "ScoreFile") -> None:
    """After a failure half-way through: the matrix closed and its temporary removed."""
    scores.close()
    temporary(path).unlink(missing_ok=True)


def reopen_scores(path: Path) -> "ScoreFile":
    """An unfinished score matrix to write on (a resumed run): its temporary copy, or the published
    one moved back under the temporary name; ValueError/OSError when neither reads as one."""
    tmp = temporary(path)
    if not tmp.exists() and Path(path).exists():
        os.replace(path, tmp)
    return ScoreFile(tmp, writable=True)


# ----------------------------------------------------------------------------- score matrices



def npy_header(path: Path) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) from a .npy file's header; ValueError, SyntaxError
    or EOFError when it is not one."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read(handle)
        return shape, fortran_order, dtype, handle.tell()


class ScoreFile:
    _fd: int | None = None  # set once the file is open (a failed open leaves nothing to close)

    def __init__(self, path: Path, writable: bool = False):
        self.path = Path(path)
        shape, fortran_order, dtype, self.offset = npy_header(self.path)
        if len(shape) != 2 or fortran_order or dtype != DTYPE:
            raise ValueError(f"{self.path}: expected a C-order float32 matrix, found {dtype} {shape}")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = DTYPE
        self.ndim = 2
        self.row_bytes = self.shape[1] * DTYPE.itemsize
        self.writable = writable
        self._fd = os.open(self.path, os.O_RDWR if writable else os.O_RDONLY)

    @classmethod
    def create(cls, path: Path, shape: tuple[int, int]) -> "ScoreFile":
        """A new zero-filled matrix (a sparse file: nothing is written until rows are)."""
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(DTYPE),
                                                          "fortran_order": False, "shape": tuple(shape)})
            handle.truncate(handle.tell() + int(np.prod(shape, dtype=np.int64)) * DTYPE.itemsize)
        return cls(path, writable=True)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ScoreFile({str(self.path)!r}, shape={self.shape})"

    # ------------------------------------------------------------------ indexing

    def _row_index(self, key) -> tuple[np.ndarray | None, int, int, bool]:
        """(rows or None for a contiguous range, start, stop, scalar)."""
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            row = int(key) + n if key < 0 else int(key)
            if not 0 <= row < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            return None, row, row + 1, True
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return None, start, max(start, stop), False
            return np.arange(start, stop, step), 0, 0, False
        if key is Ellipsis:
            return None, 0, n, False
        rows = np.asarray(key)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise IndexError(f"boolean row mask of shape {rows.shape} for {n} rows")
            return np.flatnonzero(rows), 0, 0, False
        if rows.dtype.kind not in "iu" or rows.ndim != 1:
            raise IndexError(f"rows must be an int, a slice, a 1-D integer array or a mask, not {key!r}")
        rows = np.where(rows < 0, rows + n, rows).astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        return rows, 0, 0, False

    def _runs(self, rows: np.ndarray):
        """(position in the sorted order, first row, row count) of each run of consecutive rows."""
        if len(rows) == 0:
            return iter(())
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.r_[0, breaks]
        counts = np.diff(np.r_[starts, len(rows)])
        return zip(starts.tolist(), rows[starts].tolist(), counts.tolist())

    def _read(self, first: int, out: np.ndarray) -> None:
        view, done = memoryview(out).cast("B"), 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], self.offset + first * self.row_bytes + done)
            if got <= 0:
                raise OSError(f"{self.path}: short read at row {first} (the file is truncated)")
            done += got

    def _write(self, first: int, block: np.ndarray) -> None:
        view, done = memoryview(np.ascontiguousarray(block, dtype=DTYPE)).cast("B"), 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], self.offset + first * self.row_bytes + done)

    def _read_rows(self, rows: np.ndarray | None, start: int, stop: int) -> np.ndarray:
        if rows is None:
            out = np.empty((stop - start, self.shape[1]), dtype=DTYPE)
            if stop > start:
                self._read(start, out)
            return out
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        out = np.empty((len(rows), self.shape[1]), dtype=DTYPE)
        target = out if np.array_equal(order, np.arange(len(rows))) else np.empty_like(out)
        for position, first, count in self._runs(ordered):
            self._read(first, target[position:position + count])
        if target is not out:
            out[order] = target
        return out

    def __getitem__(self, key) -> np.ndarray:
        columns = ()
        if isinstance(key, tuple):
            key, columns = key[0], key[1:]
        rows, start, stop, scalar = self._row_index(key)
        block = self._read_rows(rows, start, stop)
        if scalar:
            return block[0][columns] if columns else block[0]
        if not columns:
            return block
        # The block's row i is the key's i-th row: numpy's own rules then apply to the rest.
        return block[(slice(None) if rows is None else np.arange(len(rows)), *columns)]

    def __setitem__(self, key, value) -> None:
        if not self.writable:
            raise ValueError(f"{self.path}: opened read-only")
        rows, start, stop, _ = self._row_index(key)
        count = (stop - start) if rows is None else len(rows)
        block = np.broadcast_to(np.asarray(value, dtype=DTYPE), (count, self.shape[1]))
        if rows is None:
            if count:
                self._write(start, block)
            return
        order = np.argsort(rows, kind="stable")
        ordered, block = rows[order], block[order]
        for position, first, run in self._runs(ordered):
            self._write(first, block[position:position + run])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    # ------------------------------------------------------------------ lifetime

    def flush(self) -> None:
        """Rows written so far reach the disk (a kill after this loses none of them)."""
        if self.writable and self._fd is not None:
            os.fdatasync(self._fd)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ScoreFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
