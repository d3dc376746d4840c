"""Fairness audit: group metrics vs pandas, CI coverage, small groups, run tables, Adult."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import shared_data
from polyculture.errors import DataError, MeasureInputError
from polyculture.measure.fairness import group_metrics, group_systemic_failure
from polyculture.run import load_run, run_study
from polyculture.run.fairness import ALL, audit_fairness

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def write_synthetic_csv(
    path: Path,
    n: int,
    seed: int,
    *,
    scale: float = 1.0,
    header: bool = True,
    columns: list[str] | None = None,
) -> Path:
    """A tabular task: y = 1[x1 + 0.5 x2 + noise > 0]; groups sex and race; race 'c' is rare.

    ``scale`` < 1 squeezes x1 and x2 towards the decision boundary: a covariate shift that
    costs accuracy while P(y | x) stays the same.
    """
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0, scale, n)
    x2 = rng.normal(0, scale, n)
    x3 = rng.normal(0, 1, n)
    sex = rng.choice(["f", "m"], n)
    race = rng.choice(["a", "b", "c"], n, p=[0.6, 0.37, 0.03])
    # Group 'm' is noisier: its accuracy is lower.
    noise = rng.normal(0, np.where(sex == "m", 0.8, 0.3))
    y = np.where(x1 + 0.5 * x2 + noise > 0, "yes", "no")
    frame = pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "sex": sex, "race": race, "y": y})
    if columns is not None:
        frame = frame[columns]
    frame.to_csv(path, index=False, header=header)
    return path


def synthetic_study(folder: Path, name: str = "fair", **options: Any) -> dict[str, Any]:
    """A two-member study (logreg, hist_gbm) on the synthetic CSV, with sex and race groups."""
    train = write_synthetic_csv(folder / "train.csv", 1500, seed=0)
    test = write_synthetic_csv(folder / "test.csv", 800, seed=1)
    return {
        "name": name,
        "seeds": [0],
        "data": {
            "name": "csv",
            "path": str(train),
            "options": {
                "label": "y",
                "test_path": str(test),
                "groups": ["sex", "race"],
                "min_group_size": 40,
                **options,
            },
            "shifts": {},
        },
        "zoo": [
            {"family": "logreg"},
            {"family": "hist_gbm", "params": {"max_iter": 30}},
        ],
        "evaluate": {"probe_size": 100},
        "execution": {"workers": 1},
    }


@pytest.fixture(scope="module")
def fair_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fairness")
    results = run_study(synthetic_study(folder), folder / "runs", report=True)
    return results.root


def _pandas_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """Reference per-group metrics by a direct pandas computation (positive class 1)."""
    rows = {}
    for group, part in frame.groupby("group"):
        positives = part[part["y"] == 1]
        negatives = part[part["y"] == 0]
        rows[group] = {
            "n": len(part),
            "accuracy": (part["y"] == part["pred"]).mean(),
            "selection_rate": (part["pred"] == 1).mean(),
            "tpr": (positives["pred"] == 1).mean() if len(positives) else np.nan,
            "fpr": (negatives["pred"] == 1).mean() if len(negatives) else np.nan,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def test_group_metrics_equal_a_direct_pandas_computation() -> None:
    rng = np.random.default_rng(3)
    n = 900
    frame = pd.DataFrame(
        {
            "y": rng.integers(0, 2, n),
            "group": rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )
    flip = rng.random(n) < np.where(frame["group"] == "d", 0.4, 0.15)
    frame["pred"] = np.where(flip, 1 - frame["y"], frame["y"])
    out = group_metrics(frame["y"], frame["pred"], frame["group"], n_resamples=200)
    expected = _pandas_rates(frame)
    got = out.by_group.set_index("group")
    for column in ("n", "accuracy", "selection_rate", "tpr", "fpr"):
        np.testing.assert_allclose(got[column].astype(float), expected[column], err_msg=column)
    # Differences over the groups (none is small here), as fairlearn defines them.
    disparities = out.disparities.set_index("measure")["value"]
    selection = expected["selection_rate"]
    assert disparities["demographic_parity_difference"] == pytest.approx(
        selection.max() - selection.min()
    )
    assert disparities["demographic_parity_ratio"] == pytest.approx(
        selection.min() / selection.max()
    )
    eo = max(
        expected["tpr"].max() - expected["tpr"].min(), expected["fpr"].max() - expected["fpr"].min()
    )
    assert disparities["equalized_odds_difference"] == pytest.approx(eo)
    import fairlearn.metrics as fm

    for measure in (
        "demographic_parity_difference",
        "demographic_parity_ratio",
        "equalized_odds_difference",
        "equalized_odds_ratio",
    ):
        reference = getattr(fm, measure)(
            frame["y"], frame["pred"], sensitive_features=frame["group"]
        )
        assert disparities[measure] == pytest.approx(reference), measure
    assert out.worst_group == expected["accuracy"].idxmin() == "d"
    assert out.overall["accuracy"] == pytest.approx((frame["y"] == frame["pred"]).mean())
    for row in out.by_group.to_dict("records"):  # every CI brackets its estimate here
        for key in ("accuracy", "selection_rate", "tpr", "fpr"):
            assert row[f"{key}_ci_low"] <= row[key] <= row[f"{key}_ci_high"], (row["group"], key)


def test_ci_covers_the_true_value_at_about_the_stated_rate() -> None:
    """200 simulated test sets with known per-group accuracy and selection rate."""
    truth = {"a": (0.85, 0.30), "b": (0.70, 0.50)}  # accuracy, selection rate
    simulations, covered_accuracy, covered_selection = 200, 0, 0
    for seed in range(simulations):
        rng = np.random.default_rng(1000 + seed)
        n = 400
        group = rng.choice(["a", "b"], n, p=[0.5, 0.5])
        accuracy = np.where(group == "a", truth["a"][0], truth["b"][0])
        selection = np.where(group == "a", truth["a"][1], truth["b"][1])
        pred = (rng.random(n) < selection).astype(int)
        correct = rng.random(n) < accuracy
        y = np.where(correct, pred, 1 - pred)
        out = group_metrics(y, pred, group, n_resamples=400, seed=seed).by_group
        row = out.set_index("group").loc["b"]
        covered_accuracy += row["accuracy_ci_low"] <= truth["b"][0] <= row["accuracy_ci_high"]
        covered_selection += (
            row["selection_rate_ci_low"] <= truth["b"][1] <= row["selection_rate_ci_high"]
        )
    # Binomial tolerance: 95% of 200 has sd 1.5 points; allow 3 sd on either side.
    for covered in (covered_accuracy, covered_selection):
        assert 0.905 <= covered / simulations <= 0.995, covered


def test_small_groups_are_reported_not_compared() -> None:
    rng = np.random.default_rng(0)
    group = np.array(["big"] * 300 + ["other"] * 300 + ["tiny"] * 8)
    y = rng.integers(0, 2, len(group))
    pred = np.where(group == "tiny", 1 - y, y)  # tiny is always wrong
    out = group_metrics(y, pred, group, min_group_size=30, n_resamples=100)
    table = out.by_group.set_index("group")
    assert bool(table.loc["tiny", "small"]) and table.loc["tiny", "n"] == 8
    assert table.loc["tiny", "accuracy"] == 0.0  # shown, not dropped
    assert out.worst_group != "tiny"
    gap = out.disparities.set_index("measure").loc["accuracy_difference", "value"]
    assert gap == pytest.approx(0.0)  # only big and other (both perfect) are compared
    assert "tiny (n=8)" in out.note


def test_group_systemic_failure_equals_pandas() -> None:
    rng = np.random.default_rng(1)
    correct = rng.random((500, 3)) < 0.7
    group = rng.choice(["a", "b"], 500)
    table, h = group_systemic_failure(correct, group, n_resamples=100, min_group_size=1)
    all_fail = pd.Series((~correct).all(axis=1)).groupby(group).mean()
    np.testing.assert_allclose(table.set_index("group")["observed_systemic"], all_fail)
    rows = table.set_index("group")
    assert (rows["observed_systemic_ci_low"] <= rows["observed_systemic"]).all()
    assert h.h_worst >= h.h_unif


def test_one_group_or_bad_labels_are_clear_errors() -> None:
    with pytest.raises(MeasureInputError, match="at least two groups"):
        group_metrics(np.array([0, 1]), np.array([0, 1]), np.array(["a", "a"]))
    with pytest.raises(MeasureInputError, match="one label per instance"):
        group_metrics(np.array([0, 1]), np.array([0, 1]), np.array(["a"]))


def test_run_writes_fairness_tables_that_match_the_predictions(fair_run: Path) -> None:
    results = load_run(fair_run)
    groups_table = pd.read_parquet(fair_run / "tables" / "fairness_groups.parquet")
    assert set(groups_table["attribute"]) == {ALL, "sex", "race", "sex x race"}
    predictions = results.predictions()
    test = predictions[predictions["split"] == "test"]
    groups = pd.read_parquet(fair_run / "tables" / "groups.parquet")
    groups = groups[groups["split"] == "test"].drop(columns="split").set_index("instance")
    for member_id, part in test.groupby("member_id"):
        joined = part.set_index("instance").join(groups)
        expected = joined.groupby("sex").apply(lambda g: (g["label"] == g["prediction"]).mean())
        got = groups_table[
            (groups_table["member_id"] == member_id) & (groups_table["attribute"] == "sex")
        ].set_index("group")["accuracy"]
        np.testing.assert_allclose(got.loc[expected.index], expected)
    race = groups_table[groups_table["attribute"] == "race"].set_index("group")
    assert bool(race.loc["c", "small"].all())  # about 24 of 800 rows, below 40
    systemic = pd.read_parquet(fair_run / "tables" / "fairness_systemic.parquet")
    assert {"sex", "race", "sex x race"} == set(systemic["attribute"])
    h = pd.read_parquet(fair_run / "tables" / "fairness_homogenization.parquet")
    assert np.isfinite(h["h_avg"]).all()
    page = (fair_run / "report.html").read_text()
    section = page[page.index('id="fairness"') :]
    assert section.index("Worst group: m") < section.index("Unitary: sex")
    assert "sex x race" in section and "(small)" in section


def test_audit_fairness_of_a_run_without_groups_is_empty(tmp_path: Path) -> None:
    from conftest import tiny_study

    results = run_study(tiny_study(seeds=[0], zoo=[{"family": "logreg"}]), tmp_path, report=False)
    assert audit_fairness(results) == {}
    assert not (results.root / "tables" / "fairness.json").exists()
    assert not (results.root / "cards").exists()


def test_hist_gbm_is_seeded_and_deterministic() -> None:
    from polyculture.zoo import ClassicalModel, ModelSpec, create_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
    probabilities = []
    for _ in range(2):
        model = create_model(
            ModelSpec(family="hist_gbm", params={"max_iter": 20}), (4,), 2, "tabular"
        )
        assert isinstance(model, ClassicalModel)
        probabilities.append(model.fit(x, y, seed=1).predict_proba(x))
    np.testing.assert_array_equal(probabilities[0], probabilities[1])
    assert (probabilities[0].argmax(1) == y).mean() > 0.9


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyculture", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_group_input_is_a_one_line_error(tmp_path: Path) -> None:
    import tomli_w

    # A group column with a single value.
    train = write_synthetic_csv(tmp_path / "train.csv", 200, seed=0)
    frame = pd.read_csv(train).assign(sex="f")
    frame.to_csv(tmp_path / "one.csv", index=False)
    study = synthetic_study(tmp_path)
    study["data"]["path"] = str(tmp_path / "one.csv")
    (tmp_path / "one.toml").write_text(tomli_w.dumps(study))
    _one_line_error(
        _cli("run", str(tmp_path / "one.toml"), "--out", str(tmp_path / "runs")),
        "group column 'sex' has a single value ('f')",
    )
    # A group smaller than the minimum, with small_groups = "error".
    study = synthetic_study(tmp_path, name="small", small_groups="error")
    (tmp_path / "small.toml").write_text(tomli_w.dumps(study))
    _one_line_error(
        _cli("run", str(tmp_path / "small.toml"), "--out", str(tmp_path / "runs")),
        "fewer than 40 test rows",
        "'c'",
    )


def test_group_errors_in_the_library() -> None:
    from polyculture.data.tabular import CsvOptions, check_groups

    groups = pd.DataFrame({"sex": ["f", "m"] * 30, "race": ["a"] * 59 + ["b"]})
    options = CsvOptions(label="y", groups=["sex", "race"], small_groups="error")
    with pytest.raises(DataError, match=r"race with fewer than 30 test rows: 'b' \(1 rows\)"):
        check_groups(groups, groups, options)
    check_groups(groups, groups, CsvOptions(label="y", groups=["sex", "race"]))  # reported


def test_adult_dataset_reads_the_uci_files() -> None:
    from polyculture.data.builders import DataSpec, build_task

    folder = shared_data("adult")
    task = build_task(DataSpec(name="adult", path=str(folder), nonfinite="drop"))
    assert task.class_names == ("<=50K", ">50K")
    assert list(task.test.groups.columns) == ["sex", "race"]  # type: ignore[union-attr]
    races = task.test.groups["race"].value_counts()  # type: ignore[index]
    assert {"White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"} == set(
        races.index
    )
    assert len(task.test) > 14000 and "sex=Male" in task.feature_names
    assert "fnlwgt" not in task.feature_names


@pytest.mark.slow
def test_adult_study_fairness_section(tmp_path: Path) -> None:
    """The built-in study, shrunk to two fast members: sex, race and their intersection."""
    folder = shared_data("adult")
    results = run_study(
        "adult",
        tmp_path,
        [
            f"data.path={str(folder)!r}",
            "zoo=[{family='logreg'},{family='hist_gbm',params={max_iter=50}}]",
        ],
        workers=1,
    )
    table = pd.read_parquet(results.root / "tables" / "fairness_groups.parquet")
    assert {"sex", "race", "sex x race"} <= set(table["attribute"])
    assert table["accuracy_ci_low"].notna().all()
    small = table[table["small"]]
    assert "Female x Other" in set(small["group"])  # 39 test rows, below the study's 100
    page = (results.root / "report.html").read_text()
    assert "Fairness by group" in page and "Intersectional: sex x race" in page
    assert len(list((results.root / "cards").glob("*.md"))) == 2
