"""Bring-your-own predictions: loading long and wide files, checks, and the audit run directory."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyculture import load_run
from polyculture.errors import DataError
from polyculture.run.audit import load_predictions, write_audit_run


def five_models(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Long-format predictions of five models that share part of their failures."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    hard = rng.random(n) < 0.15  # instances every model tends to get wrong
    rows = []
    for j in range(5):
        wrong = hard | (rng.random(n) < 0.1)
        predictions = np.where(wrong, (labels + 1 + rng.integers(0, 2, n)) % 3, labels)
        for i in range(n):
            rows.append({
                "instance": f"u{i}", "model": f"vendor{j}",
                "prediction": ["no", "maybe", "yes"][predictions[i]],
                "label": ["no", "maybe", "yes"][labels[i]],
                "probability": round(float(rng.uniform(0.4, 1.0)), 3),
                "group": "ab"[i % 2],
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_long_and_wide_layouts_agree(tmp_path: Path) -> None:
    long = five_models()
    long.to_csv(tmp_path / "long.csv", index=False)
    wide = long.pivot(index=["instance", "label", "group"], columns="model", values="prediction")
    wide.reset_index().to_csv(tmp_path / "wide.csv", index=False)
    a = load_predictions(tmp_path / "long.csv", group_cols=["group"])
    b = load_predictions(tmp_path / "wide.csv", group_cols=["group"])
    assert a.models == b.models == [f"vendor{j}" for j in range(5)]
    assert a.classes == ["maybe", "no", "yes"]
    np.testing.assert_array_equal(a.predictions, b.predictions)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.confidence is not None and b.confidence is None
    assert a.groups is not None and set(a.groups["group"]) == {"a", "b"}


def test_parquet_input(tmp_path: Path) -> None:
    five_models(50).to_parquet(tmp_path / "p.parquet")
    data = load_predictions(tmp_path / "p.parquet")
    assert data.predictions.shape == (50, 5)


def test_audit_run_directory(tmp_path: Path) -> None:
    five_models().to_csv(tmp_path / "p.csv", index=False)
    data = load_predictions(tmp_path / "p.csv", group_cols=["group"])
    write_audit_run(data, tmp_path / "runs" / "vendors")
    results = load_run(tmp_path / "runs" / "vendors")
    assert results.members["name"].tolist() == [f"vendor{j}" for j in range(5)]
    predictions = results.predictions()
    assert len(predictions) == 5 * 300
    measured = predictions.groupby("member_id")["correct"].mean()
    expected = results.members.set_index("member_id")["test_accuracy"]
    np.testing.assert_allclose(measured.sort_index(), expected.sort_index())
    summary = results.summary()
    assert len(summary) == 5 and summary["accuracy_mean"].between(0.5, 1).all()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("instance,model,prediction,label\n", "no rows"),
        ("instance,model,prediction\n1,a,x\n", "lacks column(s) label"),
        ("id,label,a\n1,x,x\n", "lacks column(s) instance"),
        ("instance,label\n1,x\n", "no model columns"),
        ("instance,model,prediction,label\n1,a,x,x\n1,b,x,y\n", "different labels"),
        ("instance,model,prediction,label\n1,a,x,x\n1,a,y,x\n", "duplicate (instance, model)"),
        ("instance,model,prediction,label,probability\n1,a,x,x,high\n", "not numbers in [0, 1]"),
        ("instance,model,prediction,label,probability\n1,a,x,x,1.5\n", "not numbers in [0, 1]"),
        ("instance,model,prediction,label\n1,a,,x\n", "empty instance, model, prediction"),
        ("instance,model,prediction,label\n1,a,x,x\n2,a,x,x\n1,b,x,x\n", "different instance sets"),
        ("instance,model,prediction,label,group\n1,a,x,x,f\n1,b,x,x,m\n", "group column 'group'"),
    ],
)
def test_bad_predictions_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        load_predictions(write(tmp_path, text), group_cols=["group"] if ",group" in text else [])


def test_intersect_keeps_common_instances(tmp_path: Path) -> None:
    path = write(tmp_path, "instance,model,prediction,label\n1,a,x,x\n2,a,x,x\n1,b,y,x\n")
    data = load_predictions(path, intersect=True)
    assert data.instances.tolist() == ["1"] and data.dropped == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_predictions(tmp_path / "none.csv")
