"""Synthetic implicit-feedback data in the contest layout.

`make_synthetic` writes `train_ratings.csv` (user,item,time) plus the side files
`genres.tsv`, `titles.tsv`, `years.tsv`, `directors.tsv` and `writers.tsv`.

The data has structure a recommender can learn, and nothing else:

* 18 genres with embeddings in a K-dimensional taste space; each item's factor
  vector is the mean of its genres' embeddings plus item-specific noise.
* Zipf (long-tail) base item popularity; each user has its own sensitivity to it.
* Lognormal user activity, at least 15 and at most items/2 interactions per user,
  rescaled so that the total is exactly `interactions`.
* Taste drift: every user has an early and a late taste vector (the late one
  partly pulls towards one or two new genres). The user's timeline is cut into
  phases; phase p samples, without replacement, from the taste interpolated
  p/(P-1) of the way from early to late. The last items are therefore
  predictable from the recent ones and differ from the early ones.
* Popularity drift: ~15% of items are released during the timeline, cannot be
  consumed before release, and get a popularity boost that decays after release.
* Side files carry signal: genres, title words tied to genre and latent taste,
  release years, and directors/writers chosen by latent similarity and genre.

Everything is vectorised numpy seeded from `seed` only: the same arguments give
byte-identical files. Sampling without replacement is Gumbel-top-k over
log-probabilities, done in user chunks of at most ~2M cells.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys_kit import files

from recsys_kit.errors import DataError
from recsys_kit.files import check_output_dir

GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
    "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# Rough MovieLens genre frequencies (share of movies carrying the genre).
GENRE_PREVALENCE = np.array([
    0.14, 0.09, 0.04, 0.04, 0.30, 0.11, 0.08, 0.45, 0.06, 0.01,
    0.10, 0.035, 0.06, 0.15, 0.07, 0.17, 0.04, 0.02,
])
FILES = ("train_ratings.csv", "genres.tsv", "titles.tsv", "years.tsv", "directors.tsv", "writers.tsv")

T_START = 946_684_800          # 2000-01-01 00:00:00 UTC
T_END = 1_427_760_000          # 2015-03-31 00:00:00 UTC
DAY = 86_400
MIN_PER_USER = 15              # every user has at least this many interactions
N_FACTORS = 24                 # latent taste dimensions
N_PHASES = 5                   # taste-drift phases per user timeline
TASTE_SCALE = 12.0             # logit weight of taste . item factors
ZIPF_ALPHA = 1.5               # base popularity exponent
NEW_ITEM_SHARE = 0.15          # items released during the timeline
NEW_ITEM_BOOST = 2.0           # logit boost right after release ...
NEW_ITEM_TAU = 180 * DAY       # ... decaying with this time constant
ITEM_GENRE_WEIGHT = 1.0        # item factors = this * genre direction ...
ITEM_OWN_WEIGHT = 1.0          # ... + this * item-specific direction
DRIFT_BETA = (3.0, 3.0)        # Beta law of how far the late taste moves to a new one
POP_WEIGHT = (0.7, 1.3)           # range of per-user sensitivity to popularity
CHUNK_CELLS = 1 << 21          # users x items cells per sampling chunk


def make_synthetic(out_dir: Path, users: int = 3000, items: int = 1200,
                   interactions: int = 150_000, seed: int = 0) -> dict:
    """Write a contest-layout synthetic data set into the new directory `out_dir`.

    Raises DataError for impossible sizes or when `out_dir` exists and is not empty.
    Returns {"users", "items", "interactions", "path", "catalog_items", "files"}:
    users/items/interactions count what train_ratings.csv holds, catalog_items the
    items in the side files.
    """
    out_dir = Path(out_dir)
    _check_sizes(users, items, interactions, seed)
    _check_out_dir(out_dir)

    item_rng, user_rng, sample_rng, side_rng = np.random.default_rng(seed).spawn(4)
    cat = _make_items(item_rng, items)
    n_per_user = _activity(user_rng, users, items, interactions)
    usr = _make_users(user_rng, users, n_per_user, cat["embed"])
    u, i, t = _sample(sample_rng, cat, usr, n_per_user)

    ratings = pd.DataFrame({"user": usr["ids"][u], "item": cat["ids"][i], "time": t})
    from recsys_kit.data.synth_side import side_tables  # it draws on this module's helpers

    side = side_tables(side_rng, cat)

    _check_out_dir(out_dir)  # again: it may have been filled while we generated
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(ratings, out_dir / "train_ratings.csv", ",")
    for name, frame in side.items():
        _write(frame, out_dir / name, "\t")
    return {
        "users": int(np.unique(u).size),
        "items": int(np.unique(i).size),
        "interactions": int(len(ratings)),
        "path": str(out_dir),
        "catalog_items": int(items),
        "files": list(FILES),
    }


# ----------------------------------------------------------------------------- checks

def _check_sizes(users, items, interactions, seed) -> None:
    for name, value in (("users", users), ("items", items),
                        ("interactions", interactions), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DataError(f"{name}={value!r} is not an integer; pass a whole number")
    if seed < 0:
        raise DataError(f"seed={seed} is negative; pass a seed >= 0")
    if users < 1:
        raise DataError(f"users={users} must be at least 1")
    if items < 2 * MIN_PER_USER:
        raise DataError(f"items={items} is too small: every user needs {MIN_PER_USER} distinct "
                        f"items and at most half the catalogue; pass items >= {2 * MIN_PER_USER}")
    lo, hi = users * MIN_PER_USER, users * (items // 2)
    if not lo <= interactions <= hi:
        raise DataError(f"interactions={interactions} is impossible for users={users}, items={items}: "
                        f"each user has {MIN_PER_USER}..{items // 2} (items/2) interactions, so pass "
                        f"interactions between {lo} and {hi}")


def _check_out_dir(out_dir: Path) -> None:
    check_output_dir(out_dir, "OUT_DIR")  # a file on its path, or no permission
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir}: directory exists and is not empty; pick a new or empty "
                        f"directory (synthetic data never overwrites files)")


# ----------------------------------------------------------------------------- helpers

def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _gumbel(rng: np.random.Generator, shape) -> np.ndarray:
    """Standard Gumbel noise in float32 (a zero uniform gives -inf: never chosen)."""
    g = rng.random(shape, dtype=np.float32)
    with np.errstate(divide="ignore"):
        np.log(g, out=g)
        np.negative(g, out=g)
        np.log(g, out=g)
    np.negative(g, out=g)
    return g


def _top_sets(keys: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k largest keys, largest first."""
    part = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _pick_genres(rng, n: int, probs, weight_power: float):
    """1..3 distinct genres per row, sampled by prevalence; returns (n x 3 order, counts)."""
    counts = rng.choice(np.arange(1, 4), size=n, p=probs)
    keys = weight_power * np.log(GENRE_PREVALENCE)[None, :] + rng.gumbel(size=(n, len(GENRES)))
    return _top_sets(keys, 3), counts


# ----------------------------------------------------------------------------- catalogue

def _make_items(rng: np.random.Generator, n_items: int) -> dict:
    n_genres = len(GENRES)
    order, n_gen = _pick_genres(rng, n_items, [0.45, 0.35, 0.20], 1.0)
    keep = np.arange(3)[None, :] < n_gen[:, None]
    pair_item = np.repeat(np.arange(n_items), n_gen)       # row-major mask order
    pair_genre = order[keep]
    member = np.zeros((n_items, n_genres))
    member[pair_item, pair_genre] = 1.0

    embed = _unit(rng.standard_normal((n_genres, N_FACTORS)))
    genre_part = _unit(member @ embed)
    own_part = rng.standard_normal((n_items, N_FACTORS)) / np.sqrt(N_FACTORS)
    factors = ITEM_GENRE_WEIGHT * genre_part + ITEM_OWN_WEIGHT * own_part

    rank = rng.permutation(n_items) + 1
    logpop = -ZIPF_ALPHA * np.log(rank)

    n_new = int(round(NEW_ITEM_SHARE * n_items))
    new = np.zeros(n_items, bool)
    new[rng.permutation(n_items)[:n_new]] = True
    release = np.full(n_items, T_START - 365 * DAY, dtype=np.int64)
    release[new] = rng.integers(T_START, T_END - 30 * DAY, size=n_new)

    year = np.clip(1999 - np.floor(rng.exponential(12.0, n_items)), 1915, 1999).astype(np.int64)
    rel_year = release.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
    year = np.where(new, rel_year - (rng.random(n_items) < 0.25), year)

    # MovieLens-like ids: old catalogue nearly contiguous, later additions sparse.
    add_order = np.lexsort((rng.random(n_items), release))
    gaps = np.where(new[add_order], rng.geometric(1 / 12, n_items),
                    1 + (rng.random(n_items) < 0.15) * rng.geometric(0.3, n_items))
    ids = np.empty(n_items, np.int64)
    ids[add_order] = np.cumsum(gaps)

    return {
        "n": n_items, "ids": ids, "factors": factors.astype(np.float32), "embed": embed,
        "member": member.astype(bool), "pair_item": pair_item, "pair_genre": pair_genre,
        "genre_order": order, "n_genres": n_gen,
        "logpop": logpop.astype(np.float32), "release": release, "new": np.flatnonzero(new),
        "year": year,
    }


# ----------------------------------------------------------------------------- users

def _activity(rng: np.random.Generator, n_users: int, n_items: int, total: int) -> np.ndarray:
    """Lognormal interactions per user, clipped to [15, items/2], summing to `total` exactly."""
    lo, hi = MIN_PER_USER, n_items // 2
    raw = rng.lognormal(0.0, 1.1, n_users)

    def counts(log_c: float) -> np.ndarray:
        return np.clip(np.rint(np.exp(log_c) * raw), lo, hi).astype(np.int64)

    a, b = np.log(lo / raw.max()) - 1.0, np.log(hi / raw.min()) + 1.0
    for _ in range(100):
        mid = 0.5 * (a + b)
        if counts(mid).sum() < total:
            a = mid
        else:
            b = mid
    n = counts(b)
    diff = total - int(n.sum())
    while diff:
        step = 1 if diff > 0 else -1
        room = np.flatnonzero(n < hi) if step > 0 else np.flatnonzero(n > lo)
        pick = rng.choice(room, size=min(abs(diff), room.size), replace=False)
        n[pick] += step
        diff -= step * pick.size
    return n


def _make_users(rng: np.random.Generator, n_users: int, n_per_user: np.ndarray,
                embed: np.ndarray) -> dict:
    def taste(n_fav_probs):
        order, cnt = _pick_genres(rng, n_users, n_fav_probs, 0.7)
        weights = (np.arange(3)[None, :] < cnt[:, None]) / cnt[:, None]
        genre_mean = np.einsum("uj,ujk->uk", weights, embed[order])
        noise = rng.standard_normal((n_users, N_FACTORS)) / np.sqrt(N_FACTORS)
        return _unit(0.85 * _unit(genre_mean) + 0.5 * noise)

    early = taste([0.4, 0.4, 0.2])
    drift_to = taste([0.6, 0.4, 0.0])
    lam = rng.beta(*DRIFT_BETA, n_users)[:, None]
    late = _unit((1 - lam) * early + lam * drift_to)
    pop_weight = rng.uniform(*POP_WEIGHT, n_users)

    span = T_END - T_START
    dur = np.exp(rng.normal(np.log(30 * DAY), 2.0, n_users))
    dur *= (n_per_user / np.median(n_per_user)) ** 0.3
    dur = np.clip(dur, 600.0, span)
    start = T_START + rng.random(n_users) * (span - dur)

    ids = np.sort(rng.choice(np.arange(1, int(4.4 * n_users) + 2), size=n_users, replace=False))
    return {"ids": ids.astype(np.int64), "early": early, "late": late,
            "pop_weight": pop_weight, "start": start, "dur": dur}


# ----------------------------------------------------------------------------- sampling

def _sample(rng: np.random.Generator, cat: dict, usr: dict, n_per_user: np.ndarray):
    """(user index, item index, unix time) per interaction, sorted by user then time."""
    n_users, n_items = n_per_user.size, cat["n"]
    bounds = (n_per_user[:, None] * np.arange(N_PHASES + 1)[None, :]) // N_PHASES
    per_phase = np.diff(bounds, axis=1)                               # users x phases
    factors_t = np.ascontiguousarray(cat["factors"].T)
    logpop = cat["logpop"]
    new_cols = cat["new"]
    new_release = cat["release"][new_cols].astype(np.float64)
    release = cat["release"].astype(np.float64)
    rows_per_chunk = max(1, CHUNK_CELLS // n_items)

    out_u, out_i, out_t, out_p = [], [], [], []
    for lo in range(0, n_users, rows_per_chunk):
        hi = min(n_users, lo + rows_per_chunk)
        n_rows = hi - lo
        chosen = np.zeros((n_rows, n_items), bool)
        start, dur = usr["start"][lo:hi], usr["dur"][lo:hi]
        for p in range(N_PHASES):
            k = per_phase[lo:hi, p]
            k_max = int(k.max())
            if k_max == 0:
                continue
            w = p / (N_PHASES - 1)
            taste = _unit((1 - w) * usr["early"][lo:hi] + w * usr["late"][lo:hi])
            t_a = start + dur * p / N_PHASES
            t_b = start + dur * (p + 1) / N_PHASES
            t_mid = 0.5 * (t_a + t_b)

            keys = (TASTE_SCALE * taste).astype(np.float32) @ factors_t
            keys += usr["pop_weight"][lo:hi, None].astype(np.float32) * logpop[None, :]
            if new_cols.size:
                age = t_mid[:, None] - new_release[None, :]
                boost = np.where(age >= 0, NEW_ITEM_BOOST * np.exp(-np.maximum(age, 0) / NEW_ITEM_TAU), 0.0)
                sub = keys[:, new_cols] + boost.astype(np.float32)
                sub[new_release[None, :] > t_b[:, None]] = -np.inf    # not released yet
                keys[:, new_cols] = sub
            keys[chosen] = -np.inf
            keys += _gumbel(rng, keys.shape)

            top = _top_sets(keys, k_max)
            take = np.arange(k_max)[None, :] < k[:, None]
            rows = np.broadcast_to(np.arange(n_rows)[:, None], take.shape)[take]
            cols = top[take]
            if not np.isfinite(keys[rows, cols]).all():   # cannot happen with items/2 cap
                raise RuntimeError("synthetic sampler ran out of available items")
            chosen[rows, cols] = True

            t_lo = np.maximum(t_a[rows], release[cols])
            times = t_lo + rng.random(rows.size) * (t_b[rows] - t_lo)
            out_u.append((rows + lo).astype(np.int32))
            out_i.append(cols.astype(np.int32))
            out_t.append(np.floor(times).astype(np.int64))
            out_p.append(np.full(rows.size, p, np.int8))

    u, i = np.concatenate(out_u), np.concatenate(out_i)
    t, p = np.concatenate(out_t), np.concatenate(out_p)
    order = np.lexsort((i, p, t, u))
    return u[order], i[order], t[order]


# ----------------------------------------------------------------------------- output

def _write(frame: pd.DataFrame, path: Path, sep: str) -> None:
    """Write to a temporary name in the same directory, then rename into place."""
    files.write_frame(path, frame, sep=sep, index=False, lineterminator="\n")
