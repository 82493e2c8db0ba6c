"""Item side features (genres, titles, years, directors, writers) and mean user profiles.

`build_item_features` turns the loader's per-group multi-hot matrices into one items x F
float32 matrix, one encoder per group, each group's rows L2-normalised so that a group with
many columns does not outweigh a group with few. `user_profiles` averages those rows over
each user's items with sparse products only: users x items is never made dense.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

SIDE_GROUPS = ("genres", "titles", "years", "directors", "writers")  # the contest's side files
RARE = "rare"  # label of the pooled column for values seen on fewer than min_count items


@dataclass
class ItemFeatures:
    matrix: sp.csr_matrix  # items x F float32, rows of items without side rows are zero
    column_labels: np.ndarray  # F strings like "genres=Drama", "titles:svd3", "years=1990-1994"
    report: dict = field(default_factory=dict)  # groups used / missing and their widths

    @property
    def width(self) -> int:
        return self.matrix.shape[1]


def split_side_input(features) -> tuple[dict[str, sp.csr_matrix], dict[str, np.ndarray]]:
    """Accept what a side model may get: an ItemSide, a Dataset (matrices and value labels) or a
    plain name -> CSR mapping (`dataset.item_features`, labels unknown)."""
    if features is None:
        return {}, {}
    if hasattr(features, "labels") and hasattr(features, "features"):  # ItemSide
        return dict(features.features), dict(features.labels)
    if hasattr(features, "item_features"):
        return dict(features.item_features), dict(getattr(features, "feature_values", {}) or {})
    return dict(features), {}


def build_item_features(item_features: Mapping[str, sp.spmatrix],
                        feature_values: Mapping[str, np.ndarray] | None = None,
                        groups: tuple[str, ...] = SIDE_GROUPS, n_items: int | None = None,
                        title_dim: int = 32, year_bucket: int = 5, min_count: int = 2,
                        seed: int = 0) -> ItemFeatures:
    """One items x F matrix from the configured groups that the data has.

    Groups named in `groups` but absent from `item_features` (or with no values) are listed
    under report["missing"]; an empty result has F = 0 and report["used"] == {}.
    """
    unknown = [g for g in groups if g not in SIDE_GROUPS]
    if unknown:
        raise ValueError(f"unknown side group(s) {unknown}; choose from {list(SIDE_GROUPS)}")
    if title_dim < 1 or year_bucket < 1 or min_count < 1:
        raise ValueError(f"title_dim, year_bucket and min_count must be >= 1, "
                         f"got {title_dim}, {year_bucket}, {min_count}")
    feature_values = dict(feature_values or {})
    blocks, labels, used, missing = [], [], {}, []
    for name in groups:
        raw = item_features.get(name)
        if raw is None or raw.shape[1] == 0 or raw.nnz == 0:
            missing.append(name)
            continue
        multi_hot = _binary(raw)
        if n_items is not None and multi_hot.shape[0] != n_items:
            raise ValueError(f"side group {name!r} has {multi_hot.shape[0]} item rows, "
                             f"the interactions have {n_items} items")
        values = feature_values.get(name)
        if values is not None and len(values) != multi_hot.shape[1]:
            values = None  # labels that do not line up with the columns are no labels
        block, block_labels, encoding = _ENCODERS[name](multi_hot, values, title_dim=title_dim,
                                                        year_bucket=year_bucket, min_count=min_count,
                                                        seed=seed)
        if block.shape[1] == 0:
            missing.append(name)
            continue
        from sklearn.preprocessing import normalize  # scikit-learn costs a second to import: only here

        blocks.append(sp.csr_matrix(normalize(block, norm="l2", axis=1)))
        labels += [f"{name}{label}" for label in block_labels]
        used[name] = {"width": int(block.shape[1]), "encoding": encoding,
                      "items_with_values": int((np.diff(multi_hot.indptr) > 0).sum())}
    rows = n_items if n_items is not None else _rows_of(item_features, groups)
    matrix = sp.hstack(blocks, format="csr", dtype=np.float32) if blocks else sp.csr_matrix((rows, 0), dtype=np.float32)
    matrix.eliminate_zeros()
    report = {"requested": list(groups), "used": used, "missing": missing, "width": int(matrix.shape[1])}
    return ItemFeatures(matrix=matrix, column_labels=np.array(labels, dtype=object), report=report)


def user_profiles(rows: sp.spmatrix, item_features) -> np.ndarray:
    """Dense users x F: the mean feature row over the items in each user's row.

    diag(1 / |row|) @ rows @ F in sparse algebra; a user with no items gets a zero profile.
    """
    if not sp.issparse(rows):
        raise TypeError(f"rows must be a scipy sparse CSR matrix, got {type(rows).__name__}")
    rows = rows.tocsr()
    if isinstance(item_features, ItemFeatures):
        item_features = item_features.matrix
    if item_features.shape[0] != rows.shape[1]:
        raise ValueError(f"rows have {rows.shape[1]} items, the item features {item_features.shape[0]}")
    # Every listed item counts once, whatever its stored value (ratings, repeated events).
    pattern = sp.csr_matrix((np.ones(rows.nnz, np.float32), rows.indices, rows.indptr), shape=rows.shape)
    lengths = np.diff(rows.indptr)
    inverse = np.divide(1.0, lengths, out=np.zeros(len(lengths)), where=lengths > 0).astype(np.float32)
    means = sp.diags(inverse) @ pattern @ item_features
    return means.toarray().astype(np.float32) if sp.issparse(means) else np.asarray(means, np.float32)


def _rows_of(item_features: Mapping[str, sp.spmatrix], groups) -> int:
    for name in groups:
        if item_features.get(name) is not None:
            return item_features[name].shape[0]
    return 0


def _binary(matrix: sp.spmatrix) -> sp.csr_matrix:
    out = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    out.sum_duplicates()
    out.eliminate_zeros()
    out.data[:] = 1.0
    return out


def _merge_columns(matrix: sp.csr_matrix, target: np.ndarray, width: int) -> sp.csr_matrix:
    """Column j -> column target[j] (-1: dropped), as one sparse product, then 0/1 again."""
    keep = target >= 0
    mapping = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (np.flatnonzero(keep), target[keep])),
                            shape=(matrix.shape[1], width))
    return _binary(matrix @ mapping)


def _column_names(values, n_columns: int) -> np.ndarray:
    """'=label' per value column, or '#j' when the labels are unknown."""
    if values is None:
        return np.array([f"#{j}" for j in range(n_columns)], dtype=object)
    return np.array([f"={v}" for v in values], dtype=object)


def _encode_multi_hot(multi_hot, values, **_):
    return multi_hot, list(_column_names(values, multi_hot.shape[1])), "multi-hot"


def _encode_rare_pooled(multi_hot, values, *, min_count: int, **_):
    """Values on fewer than min_count items share one column: alone they cannot generalise."""
    items_per_value = np.bincount(multi_hot.indices, minlength=multi_hot.shape[1])
    common = items_per_value >= min_count
    n_common = int(common.sum())
    has_rare = bool((~common).any())
    target = np.where(common, np.cumsum(common) - 1, n_common)
    block = _merge_columns(multi_hot, target, n_common + has_rare)
    labels = list(_column_names(values, multi_hot.shape[1])[common]) + ([f"={RARE}"] if has_rare else [])
    encoding = f"multi-hot, {int((~common).sum())} values on < {min_count} items pooled into '{RARE}'"
    return block, labels, encoding


def _encode_titles(multi_hot, values, *, title_dim: int, seed: int, **_):
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer

    tfidf = TfidfTransformer().fit_transform(multi_hot)
    n_items, n_tokens = multi_hot.shape
    # SVD needs more tokens (and items) than components; with few tokens the TF-IDF is small already.
    dim = min(title_dim, n_tokens - 1, n_items - 1)
    if n_tokens <= title_dim or dim < 1:
        labels = list(_column_names(values, n_tokens))
        return sp.csr_matrix(tfidf, dtype=np.float32), labels, f"tf-idf over {n_tokens} tokens (too few for SVD)"
    svd = TruncatedSVD(n_components=dim, random_state=seed % 2**32)
    dense = svd.fit_transform(tfidf).astype(np.float32)
    reduced = "" if dim == title_dim else f" (reduced from {title_dim}: {n_items} items)"
    return (sp.csr_matrix(dense), [f":svd{j}" for j in range(dim)],
            f"tf-idf over {n_tokens} tokens -> truncated SVD {dim}{reduced}")


def _encode_years(multi_hot, values, *, year_bucket: int, min_count: int, **kwargs):
    if values is None:
        # Bucketing needs the labels; without them a year is just another categorical value.
        block, labels, encoding = _encode_rare_pooled(multi_hot, None, min_count=min_count)
        return block, labels, f"{encoding} (no year labels given, so no {year_bucket}-year buckets)"
    numbers = pd.to_numeric(pd.Series(np.asarray(values, dtype=object)).astype(str).str.strip(),
                            errors="coerce").to_numpy(np.float64)
    parsed = np.isfinite(numbers) & (np.mod(numbers, 1) == 0)
    starts = np.where(parsed, np.floor(np.where(parsed, numbers, 0) / year_bucket) * year_bucket, np.nan)
    bucket_starts, bucket_of_value = np.unique(starts[parsed], return_inverse=True)
    target = np.full(len(values), -1, dtype=np.int64)
    target[parsed] = bucket_of_value
    block = _merge_columns(multi_hot, target, len(bucket_starts))
    labels = [f"={int(s)}-{int(s) + year_bucket - 1}" for s in bucket_starts]
    unparsed = int((~parsed).sum())
    encoding = f"{year_bucket}-year buckets" + (f", {unparsed} unparsable labels without a bucket" if unparsed else "")
    return block, labels, encoding


_ENCODERS = {
    "genres": _encode_multi_hot,
    "titles": _encode_titles,
    "years": _encode_years,
    "directors": _encode_rare_pooled,
    "writers": _encode_rare_pooled,
}
