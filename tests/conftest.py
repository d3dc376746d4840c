"""Shared fixtures: paths to the real data sets (skipped when absent) and small studies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# Tests must not depend on the machine's core count for their numbers.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """``../shared/data/<name>``, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set '{name}' not found at {path}")
    return path


def tiny_study(name: str = "tiny", **changes: Any) -> dict[str, Any]:
    """A study on sklearn's digits that trains in seconds: a few small members, 2 seeds."""
    study: dict[str, Any] = {
        "name": name,
        "seeds": [0, 1],
        "data": {"name": "digits"},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.01},
        "zoo": [
            {"family": "linear"},
            {"family": "mlp", "params": {"width": 32, "depth": 1}},
            {"family": "logreg", "params": {"max_iter": 200}},
        ],
        "evaluate": {"probe_size": 100},
        "execution": {"workers": 1},
    }
    study.update(changes)
    return study
