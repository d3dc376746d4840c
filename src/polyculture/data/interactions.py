"""User-item interactions and item texts for content-based recommendation.

Two layouts are read:

* **MovieLens 100K**: ``u.data`` (tab-separated ``user item rating timestamp``) and ``u.item``
  (pipe-separated, latin-1: ``id|title|release date|video release date|IMDb URL|19 genre
  flags``), with the genre names from ``u.genre`` when present;
* **a generic pair of CSV files**: ``interactions.csv`` (``user,item,rating,timestamp``; the
  rating column may hold clicks, 1/0) and ``items.csv`` (``item,title`` and optional
  ``genres``, ``description``).

Then :func:`implicit_feedback` keeps the liked interactions (``rating >= min_rating``) and
:func:`temporal_split` holds out, per user, the last liked interaction for testing and the one
before for validation (ties in time broken by item id); users with too few liked interactions are
counted and excluded, never silently.

Examples
--------
>>> frame = pd.DataFrame({"user": ["a"] * 4, "item": ["x", "y", "z", "w"],
...                       "rating": [5.0, 4.0, 5.0, 4.0], "timestamp": [3, 1, 2, 4]})
>>> split = temporal_split(frame, min_interactions=3)
>>> split.test["item"].tolist(), split.validation["item"].tolist(), split.train["item"].tolist()
(['w'], ['x'], ['y', 'z'])
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyculture.errors import DataError

MOVIELENS_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""The 19 genre flags of ``u.item``, in column order (``u.genre`` overrides them when present)."""

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp")


@dataclass
class InteractionData:
    """Interactions and items of one data set, with what cleaning removed.

    Attributes
    ----------
    interactions
        One row per (user, item): ``user`` and ``item`` (str), ``rating`` (float), ``timestamp``
        (int64).
    items
        One row per item: ``item`` (str), ``title``, ``genres`` (space-separated names),
        ``description`` and ``text`` (what the encoders read).
    cleaning
        ``{"step": ..., "removed": n}`` per cleaning step that removed rows.
    source
        Where the data came from (layout and folder name).
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    cleaning: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""

    def fingerprint(self) -> str:
        """12 hex characters identifying the interactions and item texts (for member ids)."""
        digest = hashlib.sha256()
        columns = list(INTERACTION_COLUMNS)
        digest.update(pd.util.hash_pandas_object(self.interactions[columns], index=False).values)
        digest.update(pd.util.hash_pandas_object(self.items[["item", "text"]], index=False).values)
        return digest.hexdigest()[:12]


def item_text(title: str, genres: str, description: str = "") -> str:
    """The text an encoder reads for one item: title, genres, then the description.

    Examples
    --------
    >>> item_text("Toy Story (1995)", "Animation Children's Comedy")
    "Toy Story (1995). Animation Children's Comedy"
    """
    parts = [part.strip() for part in (title, genres, description) if part and part.strip()]
    return ". ".join(parts)


def _numeric(values: pd.Series, what: str, path: Path, dtype: str) -> pd.Series:
    """``values`` as numbers, or a DataError naming the first bad row (1-based)."""
    converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna() | ~np.isfinite(converted.astype(float))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path.name} row {row + 1}: {what} '{values.iloc[row]}' is not a finite number",
            hint=f"fix or remove that row; every {what} must be numeric",
        )
    return converted.astype(dtype)


def _clean_interactions(
    frame: pd.DataFrame, items: pd.DataFrame, path: Path, cleaning: list[dict[str, Any]]
) -> pd.DataFrame:
    """Validate numbers, drop interactions with unknown items and repeated (user, item) pairs."""
    frame = frame.assign(
        user=frame["user"].astype(str).str.strip(),
        item=frame["item"].astype(str).str.strip(),
        rating=_numeric(frame["rating"], "rating", path, "float64"),
        timestamp=_numeric(frame["timestamp"], "timestamp", path, "int64"),
    )
    known = frame["item"].isin(set(items["item"]))
    if not known.all():
        cleaning.append(
            {"step": "interactions with an item id missing from the items file",
             "removed": int((~known).sum())}
        )  # fmt: skip
        frame = frame[known]
    # A repeated (user, item) keeps its latest interaction: the user's final opinion.
    order = frame.sort_values(["user", "item", "timestamp"], kind="stable")
    latest = order.drop_duplicates(["user", "item"], keep="last")
    if len(latest) < len(frame):
        cleaning.append(
            {"step": "repeated (user, item) interactions (latest kept)",
             "removed": len(frame) - len(latest)}
        )  # fmt: skip
    frame = frame.loc[sorted(latest.index)]
    if frame.empty:
        raise DataError(
            f"{path.name} has no interaction with a known item",
            hint="check that the item ids match those of the items file",
        )
    return frame.reset_index(drop=True)[list(INTERACTION_COLUMNS)]


def _finish_items(items: pd.DataFrame, path: Path) -> pd.DataFrame:
    items = items.assign(item=items["item"].astype(str).str.strip())
    duplicated = items["item"].duplicated()
    if duplicated.any():
        raise DataError(
            f"{path.name}: item id '{items['item'][duplicated].iloc[0]}' appears twice",
            hint="give every item one row",
        )
    for column in ("title", "genres", "description"):
        items[column] = items[column].fillna("").astype(str) if column in items else ""
    texts = [
        item_text(title, genres, description)
        for title, genres, description in items[["title", "genres", "description"]].itertuples(
            index=False
        )
    ]
    items["text"] = texts
    return items[["item", "title", "genres", "description", "text"]].reset_index(drop=True)


def _read_table(
    path: Path, sep: str, encoding: str, columns: int | None, what: str
) -> list[list[str]]:
    """Rows of a delimited file without quoting; a row with the wrong column count is an error."""
    if not path.is_file():
        raise DataError(f"{what} file '{path}' not found", hint="check --data-dir")
    text = path.read_bytes().decode(encoding, errors="replace")
    rows = [line.split(sep) for line in text.splitlines() if line.strip()]
    if columns is not None:
        for number, row in enumerate(rows, start=1):
            if len(row) != columns:
                raise DataError(
                    f"{path.name} line {number} has {len(row)} fields, expected {columns}",
                    hint=f"{what} rows need {columns} fields separated by {sep!r}",
                )
    return rows


def load_movielens(folder: str | Path) -> InteractionData:
    """Read the MovieLens 100K layout (``u.data``, ``u.item``, optional ``u.genre``).

    Raises
    ------
    DataError
        Missing files, a row with the wrong number of fields, a non-numeric rating or timestamp.

    Examples
    --------
    >>> load_movielens("/nonexistent")
    Traceback (most recent call last):
    ...
    polyculture.errors.DataError: data file '/nonexistent/u.data' not found; ...
    """
    folder = Path(folder)
    data_path, item_path = folder / "u.data", folder / "u.item"
    for path in (data_path, item_path):
        if not path.is_file():
            raise DataError(
                f"data file '{path}' not found",
                hint="pass the folder of MovieLens 100K (ml-100k with u.data and u.item)",
            )
    genres = list(MOVIELENS_GENRES)
    genre_path = folder / "u.genre"
    if genre_path.is_file():
        listed = _read_table(genre_path, "|", "latin-1", 2, "u.genre")
        named = {int(index): name for name, index in listed if index.strip().isdigit()}
        if sorted(named) == list(range(len(named))) and named:
            genres = [named[i] for i in range(len(named))]
    item_rows = _read_table(item_path, "|", "latin-1", 5 + len(genres), "u.item")
    flags = np.array([[flag.strip() == "1" for flag in row[5:]] for row in item_rows], dtype=bool)
    items = pd.DataFrame(
        {
            "item": [row[0] for row in item_rows],
            "title": [row[1] for row in item_rows],
            "genres": [" ".join(g for g, on in zip(genres, r, strict=True) if on) for r in flags],
        }
    )
    items = _finish_items(items, item_path)
    data_rows = _read_table(data_path, "\t", "latin-1", 4, "u.data")
    frame = pd.DataFrame(data_rows, columns=list(INTERACTION_COLUMNS))
    cleaning: list[dict[str, Any]] = []
    interactions = _clean_interactions(frame, items, data_path, cleaning)
    return InteractionData(interactions, items, cleaning, f"movielens:{folder.name}")


def load_csv_pair(interactions_path: str | Path, items_path: str | Path) -> InteractionData:
    """Read ``interactions.csv`` (user, item, rating, timestamp) and ``items.csv``.

    ``items.csv`` needs ``item`` and ``title``; ``genres`` and ``description`` are optional.

    Raises
    ------
    DataError
        Missing files or columns, a non-numeric rating or timestamp.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "items.csv").write_text("item,title,genres\\na,Alpha,Drama\\nb,Beta,\\n")
    >>> _ = (folder / "clicks.csv").write_text("user,item,rating,timestamp\\nu,a,1,5\\nu,c,1,6\\n")
    >>> data = load_csv_pair(folder / "clicks.csv", folder / "items.csv")
    >>> data.items["text"].tolist(), data.cleaning[0]["removed"]
    (['Alpha. Drama', 'Beta'], 1)
    """
    interactions_path, items_path = Path(interactions_path), Path(items_path)
    frames = {}
    for path, required in (
        (items_path, ("item", "title")),
        (interactions_path, INTERACTION_COLUMNS),
    ):
        if not path.is_file():
            raise DataError(f"data file '{path}' not found", hint="check --data-dir")
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(
                f"{path.name} is not a readable CSV ({reason})", hint="fix the file"
            ) from None
        frame.columns = [str(c).strip() for c in frame.columns]
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise DataError(
                f"{path.name} lacks column(s) {', '.join(missing)}",
                hint=f"its header must include {', '.join(required)}",
            )
        frames[path] = frame
    items = _finish_items(frames[items_path], items_path)
    cleaning: list[dict[str, Any]] = []
    frame = frames[interactions_path][list(INTERACTION_COLUMNS)]
    interactions = _clean_interactions(frame, items, interactions_path, cleaning)
    return InteractionData(interactions, items, cleaning, f"csv:{interactions_path.parent.name}")


def load_interactions(path: str | Path, layout: str = "auto") -> InteractionData:
    """Read a data folder in the ``movielens`` or ``csv`` layout (``auto`` detects which).

    Raises
    ------
    DataError
        When the folder holds neither layout.

    Examples
    --------
    >>> load_interactions("/nonexistent")
    Traceback (most recent call last):
    ...
    polyculture.errors.DataError: '/nonexistent' holds neither u.data + u.item nor ...
    """
    folder = Path(path)
    movielens = (folder / "u.data").is_file()
    csv = (folder / "interactions.csv").is_file()
    if layout == "movielens" or (layout == "auto" and movielens):
        return load_movielens(folder)
    if layout == "csv" or (layout == "auto" and csv):
        return load_csv_pair(folder / "interactions.csv", folder / "items.csv")
    if layout not in ("auto", "movielens", "csv"):
        raise DataError(f"unknown data layout '{layout}'", hint="use auto, movielens or csv")
    raise DataError(
        f"'{folder}' holds neither u.data + u.item nor interactions.csv + items.csv",
        hint="pass the MovieLens 100K folder (ml-100k) or a folder with the two CSV files",
    )


def implicit_feedback(interactions: pd.DataFrame, min_rating: float = 4.0) -> pd.DataFrame:
    """The liked interactions: ``rating >= min_rating`` (clicks: ``min_rating = 1``).

    Examples
    --------
    >>> frame = pd.DataFrame({"user": ["a", "a"], "item": ["x", "y"], "rating": [5.0, 2.0],
    ...                       "timestamp": [1, 2]})
    >>> implicit_feedback(frame)["item"].tolist()
    ['x']
    """
    return interactions[interactions["rating"] >= min_rating].reset_index(drop=True)


@dataclass
class TemporalSplit:
    """Per-user leave-last-out split of the liked interactions.

    Attributes
    ----------
    train, validation, test
        Interactions (``user``, ``item``, ``rating``, ``timestamp``); validation and test hold one
        row per evaluated user: the second-to-last and the last liked interaction.
    users
        The evaluated users, sorted.
    excluded
        Users with fewer than ``min_interactions`` liked interactions (left out of every split).
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    users: list[str]
    excluded: list[str]


def temporal_split(liked: pd.DataFrame, min_interactions: int = 3) -> TemporalSplit:
    """Leave-last-out per user: last liked interaction = test, the one before = validation.

    Interactions are ordered by timestamp, ties broken by item id, so that the split is the same
    whatever the row order of the file. Every training interaction of a user precedes (or ties
    with, and sorts before) their validation interaction, which precedes their test one.

    Raises
    ------
    DataError
        ``min_interactions < 3`` (one training interaction, validation and test are needed).

    Examples
    --------
    >>> frame = pd.DataFrame({"user": ["a", "a", "a", "b"], "item": ["y", "x", "z", "x"],
    ...                       "rating": 5.0, "timestamp": [1, 1, 2, 1]})
    >>> split = temporal_split(frame)  # ties at time 1: x before y
    >>> split.train["item"].tolist(), split.validation["item"].tolist(), split.excluded
    (['x'], ['y'], ['b'])
    """
    if min_interactions < 3:
        raise DataError(
            f"min_interactions={min_interactions} is below 3",
            hint="each evaluated user needs a training, a validation and a test interaction",
        )
    ordered = liked.sort_values(["user", "timestamp", "item"], kind="stable")
    counts = ordered.groupby("user", sort=True)["item"].transform("size")
    kept = ordered[counts >= min_interactions]
    excluded = sorted(set(ordered["user"]) - set(kept["user"]))
    # Position from the end within each user: 0 = last (test), 1 = second to last (validation).
    from_end = kept.groupby("user", sort=False).cumcount(ascending=False)
    return TemporalSplit(
        train=kept[from_end >= 2].reset_index(drop=True),
        validation=kept[from_end == 1].reset_index(drop=True),
        test=kept[from_end == 0].reset_index(drop=True),
        users=sorted(set(kept["user"])),
        excluded=excluded,
    )
