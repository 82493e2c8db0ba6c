"""A parsed data set (and its holdout) kept between commands, so a contest-scale `kit cv` starts
in seconds.

Parsing a 5M-row log and building its matrices takes seconds each time a team runs a command on
the same files. The parsed arrays go to one uncompressed .npz per data folder state, keyed by each
input file's name and contents: editing, replacing or adding a file is a new key, so a stale copy
is never read. The cache is a convenience and never a failure: an unreadable or
unwritable entry is parsed again. RECSYS_KIT_CACHE names the folder (default
$XDG_CACHE_HOME/recsys-kit or ~/.cache/recsys-kit); RECSYS_KIT_CACHE=off turns it off.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_kit import files

FORMAT = 2  # bump when Dataset's arrays or their meaning change (2: the one CSV reader refuses rows a cached parse may hold)
KEEP = 8  # entries kept; older ones are removed on write


def cache_dir() -> Path | None:
    setting = os.environ.get("RECSYS_KIT_CACHE", "")
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recsys-kit"


def cache_key(files: list[Path]) -> str:
    """A digest of every file's name and bytes (a tenth of a second for a 100 MB log): a file's
    modification time can repeat within a clock tick after an edit, its contents cannot lie."""
    digest = hashlib.sha256(f"format {FORMAT}".encode())
    for path in files:
        with open(path, "rb") as handle:
            digest.update(f"{path.name}\0".encode() + hashlib.file_digest(handle, "sha1").digest())
    return digest.hexdigest()[:24]


def files_key(files: list[Path]) -> str | None:
    """The files' digest (Dataset.source), None when the cache is off (not even the digest is taken)
    or a file cannot be read (the parser then says what is wrong)."""
    if cache_dir() is None:
        return None
    try:
        return cache_key(files)
    except OSError:
        return None


def array_key(*parts) -> str:
    """A digest of arrays and plain values (the inputs of a derived result, such as a holdout)."""
    digest = hashlib.sha256(f"format {FORMAT}".encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode() + np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def load_arrays(kind: str, key: str | None) -> dict[str, np.ndarray] | None:
    folder = cache_dir()
    entry = None if folder is None or key is None else folder / f"{kind}-{key}.npz"
    if entry is None or not entry.is_file():
        return None
    try:
        with np.load(entry, allow_pickle=False) as saved:
            return dict(saved)
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def store_arrays(kind: str, key: str, arrays: dict[str, np.ndarray]) -> None:
    folder = cache_dir()
    if folder is None:
        return
    _write(folder / f"{kind}-{key}.npz", arrays, f"{kind}-*.npz")


def _write(entry: Path, arrays: dict, pattern: str) -> None:
    """entry.npz written under a temporary name, then renamed; the oldest beyond KEEP removed."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        files.save_arrays(entry, arrays, unique=True)
        entries = sorted(entry.parent.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # a cache that cannot be written is only a slower next start


def load(key: str | None):
    """The Dataset parsed before from the files whose digest is `key` (files_key), or None."""
    from recsys_kit.data.dataset import Dataset

    arrays = load_arrays("dataset", key)
    if arrays is None:
        return None
    try:
        meta = json.loads(str(arrays.pop("meta")))
        shape = tuple(meta["shape"])
        indptr, indices = arrays.pop("indptr"), arrays.pop("indices")
        matrix = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=shape)
        times = sp.csr_matrix((arrays.pop("times"), indices.copy(), indptr.copy()), shape=shape)
        dataset = Dataset(matrix, arrays.pop("user_ids"), arrays.pop("item_ids"), times,
                          summary=meta["summary"], source=key)
        for name, values in meta["features"].items():
            dataset.item_features[name] = sp.csr_matrix(
                (np.ones(len(arrays[f"f_{name}_indices"]), np.float32), arrays[f"f_{name}_indices"],
                 arrays[f"f_{name}_indptr"]), shape=(shape[1], values))
            dataset.feature_values[name] = arrays[f"f_{name}_labels"]
        return dataset
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError):
        return None  # damaged or from another version: parse again


def store(key: str | None, dataset) -> None:
    """Keep the parsed Dataset under its files' digest for the next command on them (best effort)."""
    if key is None:
        return
    arrays = {"indptr": dataset.matrix.indptr, "indices": dataset.matrix.indices,
              "times": dataset.times.data, "user_ids": dataset.user_ids, "item_ids": dataset.item_ids}
    for name, matrix in dataset.item_features.items():
        arrays[f"f_{name}_indptr"], arrays[f"f_{name}_indices"] = matrix.indptr, matrix.indices
        arrays[f"f_{name}_labels"] = np.asarray(dataset.feature_values[name], dtype=str)
    meta = {"shape": list(dataset.matrix.shape), "summary": dataset.summary,
            "features": {name: m.shape[1] for name, m in dataset.item_features.items()}}
    store_arrays("dataset", key, {"meta": np.array(json.dumps(meta)), **arrays})
