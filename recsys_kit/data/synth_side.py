"""The synthetic contest's side files: genres, titles, years, directors and writers of its items.

Titles are made of words of each item's genres and of a theme that follows its latent factors, and
the people who direct or write an item fit its taste and genres, so side information carries real
signal (recsys_kit.data.synth makes the items and the log).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from recsys_kit.data.synth import CHUNK_CELLS, GENRE_PREVALENCE, GENRES, N_FACTORS, _gumbel, _top_sets, _unit

GENRE_WORDS = (
    ("Fist", "Fury", "Strike", "Bullet", "Mission", "Vengeance"),           # Action
    ("Quest", "Treasure", "Journey", "Island", "Expedition", "Voyage"),     # Adventure
    ("Toon", "Sketch", "Pixel", "Doodle", "Puppet", "Cartoon"),             # Animation
    ("Puppy", "Kids", "Little", "Buddies", "Playground", "Pony"),           # Children
    ("Crazy", "Wedding", "Roommates", "Party", "Vacation", "Goofballs"),    # Comedy
    ("Heist", "Mob", "Gangster", "Alibi", "Getaway", "Racket"),             # Crime
    ("Inside", "Story", "Truth", "Chronicle", "Portrait", "Report"),        # Documentary
    ("Silence", "Family", "Letters", "Winter", "Heart", "Promise"),         # Drama
    ("Dragon", "Wizard", "Kingdom", "Sword", "Spell", "Realm"),             # Fantasy
    ("Shadow", "Dame", "Smoke", "Double", "Rain", "Detour"),                # Film-Noir
    ("Blood", "Haunting", "Scream", "Curse", "Zombie", "Nightmare"),        # Horror
    ("Song", "Dance", "Melody", "Rhythm", "Broadway", "Tune"),              # Musical
    ("Secret", "Clue", "Riddle", "Vanishing", "Enigma", "Puzzle"),          # Mystery
    ("Love", "Kiss", "Summer", "Moonlight", "Valentine", "Darling"),        # Romance
    ("Galaxy", "Robot", "Planet", "Android", "Star", "Quantum"),            # Sci-Fi
    ("Pursuit", "Trap", "Edge", "Witness", "Panic", "Countdown"),           # Thriller
    ("Battle", "Soldier", "Front", "Platoon", "Siege", "Glory"),            # War
    ("Outlaw", "Frontier", "Sheriff", "Canyon", "Rider", "Saloon"),         # Western
)
# Title words tied to directions in the latent taste space (not to genres).
THEME_WORDS = (
    "Red", "Blue", "Golden", "Silver", "Dark", "Bright", "Last", "First",
    "Lost", "Hidden", "Wild", "Broken", "Iron", "Crimson", "Eternal", "Midnight",
    "Northern", "Southern", "Silent", "Burning", "Frozen", "Electric", "Savage", "Sweet",
    "Bitter", "Velvet", "Hollow", "Distant", "Endless", "Final", "Lonely", "Scarlet",
)
SEQUELS = ("II", "III", "2", "Returns")


def _people(rng: np.random.Generator, cat: dict, n_people: int, n_pick: int) -> np.ndarray:
    """Each item's n_pick preferred people (indices), by latent fit, genre and prolificness."""
    n_genres = len(GENRES)
    home = rng.choice(n_genres, size=n_people, p=GENRE_PREVALENCE / GENRE_PREVALENCE.sum())
    vec = _unit(cat["embed"][home] + 0.7 * rng.standard_normal((n_people, N_FACTORS)) / np.sqrt(N_FACTORS))
    vec = (3.0 * vec).astype(np.float32).T
    prolific = (-0.8 * np.log(rng.permutation(n_people) + 1)).astype(np.float32)
    out = np.empty((cat["n"], n_pick), np.int64)
    step = max(1, CHUNK_CELLS // n_people)
    for lo in range(0, cat["n"], step):
        hi = min(cat["n"], lo + step)
        keys = cat["factors"][lo:hi] @ vec
        keys += 2.5 * cat["member"][lo:hi][:, home] + prolific[None, :]
        keys += _gumbel(rng, keys.shape)
        out[lo:hi] = _top_sets(keys, n_pick)
    return out


def side_tables(rng: np.random.Generator, cat: dict) -> dict[str, pd.DataFrame]:
    """The five side files of the items in `cat`: genres, titles (words of their genres and themes),
    years, directors and writers (people who fit the items' latent taste and genres)."""
    n, ids = cat["n"], cat["ids"]

    genres = pd.DataFrame({"item": ids[cat["pair_item"]],
                           "genre": np.asarray(GENRES, dtype=object)[cat["pair_genre"]]})

    words = np.asarray(GENRE_WORDS, dtype=object)                 # genres x 6
    order, n_gen = cat["genre_order"], cat["n_genres"]
    main = words[order[:, 0], rng.integers(0, words.shape[1], n)]
    second_genre = np.where(n_gen >= 2, order[:, 1], order[:, 0])
    second = words[second_genre, rng.integers(0, words.shape[1], n)]
    theme_dirs = _unit(rng.standard_normal((len(THEME_WORDS), N_FACTORS))).astype(np.float32)
    theme_keys = 4.0 * _unit(cat["factors"]) @ theme_dirs.T + rng.gumbel(size=(n, len(THEME_WORDS)))
    theme = np.asarray(THEME_WORDS, dtype=object)[np.argmax(theme_keys, axis=1)]
    sequel = np.asarray(SEQUELS, dtype=object)[rng.integers(0, len(SEQUELS), n)]
    pattern = rng.choice(4, size=n, p=[0.4, 0.25, 0.25, 0.1])
    second = np.where(second == main, theme, second)
    year = cat["year"]
    titles = [
        (f"{th} {m}", f"The {th} {m}", f"{m} and {s}", f"{th} {m} {sq}")[pt] + f" ({y})"
        for th, m, s, sq, pt, y in zip(theme, main, second, sequel, pattern, year)
    ]

    n_dir, n_wri = max(2, n // 3), max(3, int(n / 2.5))
    person_ids = rng.choice(np.arange(1, 10_000_000), size=n_dir + n_wri, replace=False)
    person_ids = np.array([f"nm{x:07d}" for x in person_ids], dtype=object)

    dir_top = _people(rng, cat, n_dir, 2)
    n_dirs = rng.choice(3, size=n, p=[0.08, 0.88, 0.04])
    wri_top = _people(rng, cat, n_wri, 3) + n_dir
    n_wris = rng.choice(4, size=n, p=[0.10, 0.55, 0.25, 0.10])
    writer_directs = (n_dirs >= 1) & (n_wris >= 1) & (rng.random(n) < 0.25)
    wri_top[writer_directs, 0] = dir_top[writer_directs, 0]

    def pairs(top, counts, column):
        keep = np.arange(top.shape[1])[None, :] < counts[:, None]
        frame = pd.DataFrame({"item": np.repeat(ids, counts), column: person_ids[top[keep]]})
        return frame.drop_duplicates(ignore_index=True)

    def by_item(frame):
        return frame.sort_values("item", kind="stable", ignore_index=True)

    return {
        "genres.tsv": by_item(genres),
        "titles.tsv": by_item(pd.DataFrame({"item": ids, "title": np.asarray(titles, dtype=object)})),
        "years.tsv": by_item(pd.DataFrame({"item": ids, "year": year})),
        "directors.tsv": by_item(pairs(dir_top, n_dirs, "director")),
        "writers.tsv": by_item(pairs(wri_top, n_wris, "writer")),
    }
