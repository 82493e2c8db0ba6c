"""What the second stage sees of a (user, candidate item) pair: members' scores and ranks, the user, the item.

A `Level` is one regime of rows: the OOF level (each user's holdout input rows, the members'
out-of-fold scores, the hidden items as labels) or the test level (every public row, the members'
test scores). Features are computed from the level's own rows and times only, so the ranker
trained on OOF candidates sees at the test level the same quantities, measured the same way.

Every feature is named (`FEATURES` plus one score and one rank per member); side features need
the contest folder's item files (genres, years) and times need the log's, else they are NaN,
which the gradient-boosted ranker handles as missing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys_kit.blending.arithmetic import normalize_rows
from recsys_kit.protocol.ranking import top_k

DAY = 86_400.0
USER_FEATURES = ("input_length", "time_span_days", "items_last_day", "items_last_week")
ITEM_FEATURES = ("popularity", "popularity_last_week", "popularity_last_month", "item_age_days",
                 "release_year_gap", "genre_share")


# Feature groups, for an ablation (StackOptions.drop): each name -> the features it covers.
GROUPS = {"members": None,  # every member's score and rank
          "user": USER_FEATURES,
          "popularity": ("popularity", "popularity_last_week", "popularity_last_month"),
          "item_age": ("item_age_days",),
          "side": ("release_year_gap", "genre_share")}


def dropped_columns(names: list[str], drop: tuple[str, ...]) -> np.ndarray:
    """Column indices (member features first, then USER_FEATURES + ITEM_FEATURES) of the groups in `drop`."""
    columns = feature_names(names)
    out = []
    for group in drop:
        covered = GROUPS[group]
        out += [i for i, c in enumerate(columns) if (c.split(":")[0] in ("score", "rank") if covered is None
                                                    else c in covered)]
    return np.array(sorted(set(out)), dtype=np.int64)


def feature_names(names: list[str]) -> list[str]:
    """Every column of a candidate table, in order: each member's score and rank, then the user's and item's."""
    return member_feature_names(names) + list(USER_FEATURES) + list(ITEM_FEATURES)


def member_feature_names(names: list[str]) -> list[str]:
    return [f"{kind}:{name}" for name in names for kind in ("score", "rank")]


@dataclass(frozen=True)
class Side:
    """Item side information for features: release year per item (NaN unknown), genres multi-hot."""

    year: np.ndarray | None  # float per item
    genres: sp.csr_matrix | None  # items x genres, binary


def side_of(dataset) -> Side:
    """The year and genre features of a Dataset's items (None where the contest has no such file)."""
    year = None
    if "years" in dataset.item_features:
        labels = np.array([_as_year(v) for v in dataset.feature_values["years"]], dtype=np.float64)
        matrix = dataset.item_features["years"].tocsr()
        year = np.full(matrix.shape[0], np.nan)
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        year[rows] = labels[matrix.indices]  # an item with several years keeps its last
    genres = dataset.item_features["genres"].tocsr() if "genres" in dataset.item_features else None
    if genres is not None:
        genres = (genres > 0).astype(np.float32).tocsr()
    return Side(year, genres)


def _as_year(value) -> float:
    try:
        return float(str(value)[:4])
    except ValueError:
        return np.nan


class Level:
    """One regime's rows: users x items CSR `rows`, aligned `times` (or None), used by every feature."""

    def __init__(self, rows: sp.csr_matrix, times: sp.csr_matrix | None, side: Side | None = None):
        self.rows = rows.tocsr()
        self.times = None if times is None else times.tocsr()
        self.side = side
        lengths = np.diff(self.rows.indptr)
        self.length = lengths.astype(np.float64)
        self.popularity = np.asarray((self.rows > 0).sum(axis=0)).ravel().astype(np.float64)
        self._mean_length = max(float(lengths[lengths > 0].mean()), 1.0) if (lengths > 0).any() else 1.0
        active = self.popularity[self.popularity > 0]
        self._mean_popularity = max(float(active.mean()), 1.0) if len(active) else 1.0
        self.user_profile = None if side is None or side.genres is None else (self.rows > 0).astype(np.float32) @ side.genres
        if self.times is None:
            self.last = self.first = None
            return
        data, row = self.times.data, np.repeat(np.arange(self.rows.shape[0]), lengths)
        self.last = np.full(self.rows.shape[0], np.nan)
        self.first = np.full(self.rows.shape[0], np.nan)
        np.fmax.at(self.last, row, data)
        np.fmin.at(self.first, row, data)
        self.first_seen = np.full(self.rows.shape[1], np.inf)
        np.minimum.at(self.first_seen, self.times.indices, data)
        self.recent_day = np.bincount(row, weights=data >= self.last[row] - DAY, minlength=len(lengths))
        self.recent_week = np.bincount(row, weights=data >= self.last[row] - 7 * DAY, minlength=len(lengths))
        # (item, time) keys sorted once: an item's interactions in a window are two binary searches.
        self._t0 = float(data.min()) if len(data) else 0.0
        self._span = float(data.max() - self._t0 + 1) if len(data) else 1.0
        self._keys = np.sort(self.times.indices * self._span + (data - self._t0))

    def window_popularity(self, items: np.ndarray, ends: np.ndarray, width: float) -> np.ndarray:
        """Interactions with each item in (end - width, end], per pair (item, end)."""
        base = items * self._span
        upper = base + np.clip(ends - self._t0, -1, self._span - 1)
        lower = base + np.clip(ends - width - self._t0, -1, self._span - 1)
        return (np.searchsorted(self._keys, upper, side="right")
                - np.searchsorted(self._keys, lower, side="right")).astype(np.float64)

    def user_item_features(self, users: np.ndarray, items: np.ndarray,
                           relative: bool = False) -> np.ndarray:
        """pairs x (USER_FEATURES + ITEM_FEATURES), float32, NaN where the level has no such data.

        relative: counts over the level's own scale (a user's length over the mean length, an item's
        interactions over the mean item's, recent items as a share of the user's), so the OOF level
        (holdout inputs, shorter) and the test level (every public row) read alike."""
        out = np.full((len(users), len(USER_FEATURES) + len(ITEM_FEATURES)), np.nan, dtype=np.float32)
        length, per_item = (self._mean_length, self._mean_popularity) if relative else (1.0, 1.0)
        out[:, 0] = self.length[users] / length
        out[:, 4] = np.log1p(self.popularity[items] / per_item)
        if self.times is not None:
            last = self.last[users]
            out[:, 1] = (last - self.first[users]) / DAY
            share = np.maximum(self.length[users], 1) if relative else 1.0
            out[:, 2] = self.recent_day[users] / share
            out[:, 3] = self.recent_week[users] / share
            out[:, 5] = np.log1p(self.window_popularity(items, last, 7 * DAY) / per_item)
            out[:, 6] = np.log1p(self.window_popularity(items, last, 30 * DAY) / per_item)
            out[:, 7] = (last - self.first_seen[items]) / DAY
            if self.side is not None and self.side.year is not None:
                last_year = 1970 + last / (365.2425 * DAY)
                out[:, 8] = last_year - self.side.year[items]
        if self.user_profile is not None:
            genres = self.side.genres
            per_item = np.maximum(np.diff(genres.indptr)[items], 1)
            shared = np.asarray(self.user_profile[users].multiply(genres[items]).sum(axis=1)).ravel()
            out[:, 9] = shared / (np.maximum(self.length[users], 1) * per_item)
        return out


def candidates(blocks: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The union of each member's top-n unseen items per row: (row index, item) pairs, rows ascending."""
    tops = [top_k(block, n) for block in blocks]
    picks = np.concatenate(tops, axis=1)
    finite = np.concatenate([np.isfinite(np.take_along_axis(b, top, axis=1)) for b, top in zip(blocks, tops)], axis=1)
    rows = np.repeat(np.arange(len(picks)), picks.shape[1])
    pairs = np.unique(np.stack([rows, picks.ravel()])[:, finite.ravel()], axis=1)  # sorted by row, then item
    return pairs[0], pairs[1]


def member_features(blocks: list[np.ndarray], rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """pairs x (2 per member): the member's per-user z-scored score and log1p of its rank (0 = its best)."""
    out = np.empty((len(rows), 2 * len(blocks)), dtype=np.float32)
    for m, block in enumerate(blocks):
        normalized = normalize_rows(block, "zscore")
        value = normalized[rows, items]
        out[:, 2 * m] = np.where(np.isfinite(value), value, np.nan)
        order = np.argsort(-block, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(block.shape[1])[None, :].repeat(len(block), 0), axis=1)
        out[:, 2 * m + 1] = np.log1p(rank[rows, items])
    return out
