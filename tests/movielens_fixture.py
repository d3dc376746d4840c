"""A small generated data set in the MovieLens 100K layout, with planted taste structure.

Each user prefers two of the 19 genres. Items carry one to three genres and a title made of words
that go with their first genre, so an item's text says what it is. A user rates items mostly
from their genres (with a popularity bias, so the popularity baseline is a real competitor) and
rates those 4-5, others 1-3. Two special users: ``cold`` rates only with 1-2 (no liked history),
``few`` likes only two items (excluded from evaluation for too few interactions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polyculture.data.interactions import MOVIELENS_GENRES

WORDS = {
    genre: [f"{genre.lower().replace(chr(39), '').replace('-', '')}{i}" for i in range(6)]
    for genre in MOVIELENS_GENRES
}
"""Title words that go with each genre (e.g. ``action0``..``action5``)."""

COLD_USER = "9001"
FEW_USER = "9002"


def write_movielens(
    folder: Path,
    n_users: int = 80,
    n_items: int = 150,
    ratings_per_user: tuple[int, int] = (15, 30),
    seed: int = 0,
) -> Path:
    """Write ``u.data``, ``u.item`` and ``u.genre`` into ``folder``; returns ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    genres = len(MOVIELENS_GENRES)
    first = rng.integers(1, genres, size=n_items)  # genre 0 ("unknown") stays rare
    flags = np.zeros((n_items, genres), dtype=int)
    flags[np.arange(n_items), first] = 1
    extra = rng.integers(1, genres, size=(n_items, 2))
    flags[np.arange(n_items), extra[:, 0]] |= rng.random(n_items) < 0.3
    lines = []
    for item in range(n_items):
        words = rng.choice(WORDS[MOVIELENS_GENRES[first[item]]], size=2, replace=False)
        title = f"{words[0].title()} {words[1]} ({1950 + item % 50})"
        if item == 0:
            title = "Café Society (1995)"  # latin-1 must survive
        row = [str(item + 1), title, "01-Jan-1995", "", "http://example.org/x"]
        lines.append("|".join(row + [str(f) for f in flags[item]]))
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (folder / "u.genre").write_text(
        "".join(f"{name}|{i}\n" for i, name in enumerate(MOVIELENS_GENRES)) + "\n"
    )
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.6
    popularity = popularity[rng.permutation(n_items)]
    rows = []
    for user in range(1, n_users + 1):
        liked_genres = rng.choice(np.arange(1, genres), size=2, replace=False)
        matches = flags[:, liked_genres].any(axis=1)
        weights = popularity * np.where(matches, 6.0, 1.0)
        count = int(rng.integers(*ratings_per_user))
        items = rng.choice(n_items, size=count, replace=False, p=weights / weights.sum())
        times = np.sort(rng.integers(874_724_710, 893_286_638, size=count))
        for item, time in zip(items, times, strict=True):
            rating = rng.integers(4, 6) if matches[item] else rng.integers(1, 4)
            rows.append((str(user), item + 1, int(rating), int(time)))
    for item in range(1, 6):
        rows.append((COLD_USER, item, 2, 880_000_000 + item))
    for item in range(1, 4):
        rows.append((FEW_USER, item, 5 if item < 3 else 1, 880_000_000 + item))
    order = rng.permutation(len(rows))  # the file is not in time order
    text = "".join("\t".join(map(str, rows[i])) + "\n" for i in order)
    (folder / "u.data").write_text(text)
    return folder
