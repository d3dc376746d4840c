"""Pareto fronts: the rows of a table that no other row beats on every objective at once.

Row ``a`` *dominates* row ``b`` when ``a`` is at least as good as ``b`` on every objective and
strictly better on at least one. The Pareto front is the set of rows no row dominates. Two rows
with exactly the same values do not dominate each other, so exact ties are both kept. A row with
a missing (NaN) objective cannot be compared: it is never on the front and dominates nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

from polyculture.errors import MeasureInputError

__all__ = ["Direction", "dominates", "pareto_front"]

Direction = Literal["max", "min"]

# Rows compared at once against every row (bounds the (block, n, objectives) scratch array).
_BLOCK_ELEMENTS = 1 << 22


def _oriented(frame: pd.DataFrame, objectives: Mapping[str, Direction]) -> np.ndarray:
    """The objectives as a float matrix ``(n, k)`` in which larger is always better."""
    if not objectives:
        raise MeasureInputError(
            "pareto_front needs at least one objective",
            hint="pass e.g. {'accuracy': 'max', 'latency_p50_ms': 'min'}",
        )
    missing = [column for column in objectives if column not in frame.columns]
    if missing:
        raise MeasureInputError(
            f"objective column(s) {', '.join(map(repr, missing))} not in the table",
            hint=f"columns are: {', '.join(map(str, frame.columns))}",
        )
    columns = []
    for column, direction in objectives.items():
        if direction not in ("max", "min"):
            raise MeasureInputError(
                f"objective '{column}' has direction {direction!r}", hint="use 'max' or 'min'"
            )
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
        columns.append(values if direction == "max" else -values)
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether objective vector ``a`` dominates ``b`` (larger is better in every entry).

    Examples
    --------
    >>> dominates(np.array([1, 2]), np.array([1, 1])), dominates(np.array([1, 1]), np.array([1, 1]))
    (True, False)
    """
    return bool(np.all(a >= b) and np.any(a > b))


def pareto_front(frame: pd.DataFrame, objectives: Mapping[str, Direction]) -> pd.Series:
    """Which rows of ``frame`` are on the Pareto front of ``objectives``.

    Parameters
    ----------
    frame
        One row per candidate.
    objectives
        Column name -> ``"max"`` (larger is better) or ``"min"`` (smaller is better).

    Returns
    -------
    pandas.Series
        Boolean, indexed like ``frame``: True for rows no other row dominates. Rows with a NaN
        objective are False.

    Raises
    ------
    MeasureInputError
        No objectives, an objective that is not a column, or a direction other than max/min.

    Examples
    --------
    >>> points = pd.DataFrame({"accuracy": [0.9, 0.8, 0.9, 0.7], "latency": [2.0, 1.0, 2.0, 3.0]})
    >>> pareto_front(points, {"accuracy": "max", "latency": "min"}).tolist()
    [True, True, True, False]
    """
    values = _oriented(frame, objectives)  # (n, k), larger is better
    n = len(values)
    usable = ~np.isnan(values).any(axis=1)  # (n,)
    candidates = values[usable]  # (u, k)
    on_front = np.zeros(len(candidates), dtype=bool)
    block = max(1, _BLOCK_ELEMENTS // max(1, len(candidates) * values.shape[1]))
    for start in range(0, len(candidates), block):
        rows = candidates[start : start + block]  # (b, k)
        # no_worse[i, j]: candidate j is at least as good as row i on every objective.
        no_worse = (candidates[None, :, :] >= rows[:, None, :]).all(axis=2)  # (b, u)
        better = (candidates[None, :, :] > rows[:, None, :]).any(axis=2)  # (b, u)
        on_front[start : start + block] = ~(no_worse & better).any(axis=1)
    mask = np.zeros(n, dtype=bool)
    mask[np.flatnonzero(usable)] = on_front
    return pd.Series(mask, index=frame.index, name="pareto")
