"""Scaling sweeps: grid keys beyond knobs, nested data fractions, answer metrics, the emergence
tables of a run, the ``emergence`` command and suites."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_study
from polyculture.data.builders import nested_fraction, problem_split
from polyculture.errors import ConfigError
from polyculture.measure.performance import answer_metrics
from polyculture.run import run_study
from polyculture.run.emergence import (
    Sweep,
    analyze_sweep,
    check_sweep_metrics,
    metric_names,
    sweep_points,
    training_crossings,
)
from polyculture.run.study import SweepSpec, expand, load_study, load_suite
from test_cli import assert_clean_failure, cli, study_file

# ---------------------------------------------------------------------------------------------
# Study files: grid keys and sweeps


def test_grid_over_training_settings_and_data_fraction() -> None:
    study = load_study(
        tiny_study(
            zoo=[
                {
                    "name": "m",
                    "family": "mlp",
                    "grid": {"train.epochs": [1, 2], "data_fraction": [0.5, 1.0]},
                }
            ],
            seeds=[0],
        )
    )
    plans = expand(study)
    assert sorted(p.label for p in plans) == [
        "m(data_fraction=0.5,train.epochs=1)",
        "m(data_fraction=0.5,train.epochs=2)",
        "m(data_fraction=1.0,train.epochs=1)",
        "m(data_fraction=1.0,train.epochs=2)",
    ]
    assert {p.train.epochs for p in plans} == {1, 2}
    assert {p.data_fraction for p in plans} == {0.5, 1.0}
    assert len({p.member_id for p in plans}) == 4
    assert {p.entry for p in plans} == {"m"}


def test_full_data_fraction_keeps_member_ids() -> None:
    plain = expand(load_study(tiny_study(zoo=[{"family": "mlp"}], seeds=[0])))
    spelled = expand(
        load_study(tiny_study(zoo=[{"family": "mlp", "data_fraction": 1.0}], seeds=[0]))
    )
    half = expand(load_study(tiny_study(zoo=[{"family": "mlp", "data_fraction": 0.5}], seeds=[0])))
    assert plain[0].member_id == spelled[0].member_id != half[0].member_id


@pytest.mark.parametrize(
    ("zoo", "sweeps", "message"),
    [
        (
            [{"family": "mlp", "grid": {"train.epoch": [1, 2]}}],
            [],
            "[train] has no setting 'epoch'; did you mean 'epochs'",
        ),
        (
            [{"family": "logreg", "grid": {"train.epochs": [1, 2]}}],
            [],
            "scikit-learn family and ignores training settings",
        ),
        (
            [{"family": "mlp", "grid": {"data_fraction": [0.5, 1.5]}}],
            [],
            "data_fraction 1.5 is outside (0, 1]",
        ),
        (
            [{"family": "mlp", "grid": {"width": [8, 16, 32]}}],
            [{"name": "s", "zoo": "mlp"}],
            "has 3 grid point(s); a sweep needs at least 4",
        ),
        (
            [{"family": "mlp", "grid": {"width": [8, 16, 32, 64]}}],
            [{"name": "s", "zoo": "mpl"}],
            "names zoo entry 'mpl', which the study lacks",
        ),
        (
            [{"family": "mlp", "grid": {"width": [8, 16, 32, 64]}}],
            [{"name": "s", "zoo": "mlp", "axis": "width"}],
            "axis",
        ),
        (
            [{"family": "mlp", "grid": {"width": [8, 16, 32, 64]}}],
            [{"name": "s", "zoo": "mlp", "swap": ["accuracy", "accuracy"]}],
            "two different metrics",
        ),
    ],
)
def test_bad_sweeps_are_config_errors(
    zoo: list[dict[str, Any]], sweeps: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_study(tiny_study(zoo=zoo, sweeps=sweeps))
    assert message in str(err.value) + (err.value.hint or "")


def test_sweep_metrics_are_checked_against_the_task() -> None:
    sweeps = [SweepSpec(name="s", zoo="mlp", metrics=["accuracy"], swap=("exact_match", "nll"))]
    with pytest.raises(ConfigError, match="exact_match.*do not have") as err:
        check_sweep_metrics(sweeps, ["accuracy", "nll"])
    assert "addition" in (err.value.hint or "")
    check_sweep_metrics(sweeps, ["accuracy", "nll", "exact_match"])


# ---------------------------------------------------------------------------------------------
# Data subsets


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=4, max_size=80),
    small=st.floats(0.05, 0.5),
    extra=st.floats(0.0, 0.5),
    seed=st.integers(0, 10),
)
def test_nested_fraction_is_nested_sized_and_stratified(
    labels: list[int], small: float, extra: float, seed: int
) -> None:
    y = np.array(labels)
    a = nested_fraction(y, small, seed)
    b = nested_fraction(y, small + extra, seed)
    assert np.isin(a, b).all()  # nested
    assert len(a) == max(1, int(np.ceil(small * len(y))))
    assert len(np.unique(a)) == len(a) and (np.diff(a) > 0).all()
    # Stratified: each class's share of the subset is within one row of its share of the whole.
    for label in np.unique(y):
        expected = (y == label).mean() * len(b)
        assert abs((y[b] == label).sum() - expected) <= 1.0 + 1e-9


def test_nested_fraction_keeps_whole_problems() -> None:
    problems = np.repeat(np.arange(10), 3)
    rows = nested_fraction(np.zeros(30, dtype=int), 0.3, problems=problems)
    kept = problems[rows]
    assert len(np.unique(kept)) == 3 and len(rows) == 9
    assert all((kept == p).sum() == 3 for p in np.unique(kept))


def test_problem_split_holds_out_whole_problems() -> None:
    index = np.arange(40)  # 10 problems of 4 rows
    kept, held = problem_split(index, 4, 0.2, seed=3)
    assert len(held) == 8 and len(kept) == 32
    assert not set(index[kept] // 4) & set(index[held] // 4)


# ---------------------------------------------------------------------------------------------
# Answer metrics against an independent computation


def _reference_answers(
    y: np.ndarray, proba: np.ndarray, instance: np.ndarray, length: int
) -> dict[str, float]:
    answers: dict[int, dict[int, tuple[int, int, float]]] = {}
    for row, ident in enumerate(instance.tolist()):
        problem, position = divmod(ident, length)
        answers.setdefault(problem, {})[position] = (
            int(y[row]),
            int(np.argmax(proba[row])),
            float(np.log(max(proba[row, y[row]], 1e-12))),
        )
    exact, loglik, edits = [], [], []
    for positions in answers.values():
        truth = "".join(str(positions[p][0]) for p in sorted(positions))
        guess = "".join(str(positions[p][1]) for p in sorted(positions))
        exact.append(truth == guess)
        loglik.append(sum(positions[p][2] for p in positions))
        # Textbook dynamic programme over the two strings.
        table = [
            [i + j if i * j == 0 else 0 for j in range(len(guess) + 1)]
            for i in range(len(truth) + 1)
        ]
        for i in range(1, len(truth) + 1):
            for j in range(1, len(guess) + 1):
                table[i][j] = min(
                    table[i - 1][j] + 1,
                    table[i][j - 1] + 1,
                    table[i - 1][j - 1] + (truth[i - 1] != guess[j - 1]),
                )
        edits.append(table[-1][-1])
    return {
        "exact_match": float(np.mean(exact)),
        "answer_log_likelihood": float(np.mean(loglik)),
        "edit_distance": float(np.mean(edits)),
    }


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), length=st.integers(1, 5), problems=st.integers(1, 12))
def test_answer_metrics_match_a_reference(seed: int, length: int, problems: int) -> None:
    rng = np.random.default_rng(seed)
    n = length * problems
    y = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4)) + 2.5 * np.eye(4)[y] * rng.integers(0, 2, (n, 1))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    instance = rng.permutation(n)  # rows in any order
    out = answer_metrics(y, proba, instance, length, with_ci=False)
    expected = _reference_answers(y, proba, instance, length)
    for name, value in expected.items():
        assert out[name] == pytest.approx(value, abs=1e-9)
    if length == 1:
        assert out["exact_match"] == pytest.approx((proba.argmax(1) == y).mean())


def test_answer_metrics_reject_mismatched_ids() -> None:
    with pytest.raises(ValueError, match="one instance id per row"):
        answer_metrics(np.array([0, 1]), np.eye(2), np.array([0]), 2)


# ---------------------------------------------------------------------------------------------
# Sweep analysis on a members table with planted curves


def _members(values: dict[str, list[float]], scales: list[float], seeds: int = 2) -> pd.DataFrame:
    rows = []
    for i, scale in enumerate(scales):
        for seed in range(seeds):
            row = {
                "member_id": f"m{i}s{seed}",
                "name": f"mlp(width={i})",
                "entry": "mlp",
                "seed": seed,
                "status": "ok",
                "n_parameters": scale,
                "train_rows": 100,
                "steps": 10 * (i + 1),
                "train_flops": np.nan,
            }
            for metric, curve in values.items():
                row[f"test_{metric}"] = curve[i] + 0.002 * (seed - 0.5)
            rows.append(row)
    return pd.DataFrame(rows)


def test_a_planted_metric_artifact_is_found() -> None:
    # Schaeffer et al.'s construction: per-token accuracy smooth in log scale, exact match over
    # 30 tokens = its 30th power.
    scales = np.geomspace(1e7, 1e11, 12)
    per_token = np.exp(-((scales / 3.6e6) ** -1.0))
    members = _members(
        {"exact_match": list(per_token**30), "accuracy": list(per_token)}, list(scales)
    )
    sweep = Sweep(
        "s", "mlp", "params", ("exact_match", "accuracy"), ("exact_match", "accuracy"), 50
    )
    tables = analyze_sweep(members, sweep)
    curves = tables["curves"].set_index("metric")
    assert curves.loc["exact_match", "shape"] == "jump"
    assert curves.loc["accuracy", "shape"] == "smooth"
    assert tables["verdicts"].iloc[0]["verdict"] == "artifact"
    assert "likely a metric artifact" in tables["verdicts"].iloc[0]["text"]
    assert set(tables["fits"]["curve"]) == {"power_law", "sigmoid", "broken_power_law"}
    assert len(tables["points"]) == 2 * len(members)


def test_sweep_points_errors_name_the_problem() -> None:
    members = _members({"accuracy": [0.1, 0.2, 0.3, 0.4]}, [10.0, 20.0, 40.0, 80.0])
    with pytest.raises(ConfigError, match="metric 'exact_match' does not exist") as err:
        sweep_points(members, "mlp", "params", ["exact_match"])
    assert "accuracy" in (err.value.hint or "")
    with pytest.raises(ConfigError, match="no trained members of zoo entry 'cnn'"):
        sweep_points(members, "cnn", "params", ["accuracy"])
    with pytest.raises(ConfigError, match="unknown scale axis"):
        sweep_points(members, "mlp", "width", ["accuracy"])
    with pytest.raises(ConfigError, match="no positive training FLOPs"):
        sweep_points(members, "mlp", "flops", ["accuracy"])
    few = members[members["n_parameters"] < 80]
    with pytest.raises(ConfigError, match="3 distinct trainable parameters value"):
        sweep_points(few, "mlp", "params", ["accuracy"])
    broken = members.copy()
    broken.loc[0, "test_accuracy"] = np.inf
    with pytest.raises(ConfigError, match="NaN or infinite for 1 member"):
        sweep_points(broken, "mlp", "params", ["accuracy"])


def test_metric_names_skip_shifted_splits() -> None:
    columns = ["test_accuracy", "test_nll", "test_noise_accuracy", "test_noise_nll", "val_nll"]
    assert metric_names(pd.DataFrame(columns=columns)) == ["accuracy", "nll"]


def test_training_crossings_find_the_delay() -> None:
    members = pd.DataFrame(
        {"member_id": ["a"], "name": ["mlp"], "entry": ["mlp"], "seed": [0], "status": ["ok"]}
    )
    steps = np.arange(0, 1000, 50)
    history = pd.DataFrame(
        {
            "member_id": "a",
            "step": steps,
            "train_accuracy": np.minimum(1.0, steps / 200),
            "val_accuracy": np.where(steps >= 700, 0.95, 0.05),
        }
    )
    crossings = training_crossings(history, members).set_index("threshold")
    assert crossings.loc[0.9, "train_step"] == 200
    assert crossings.loc[0.9, "heldout_step"] == 700
    assert crossings.loc[0.9, "delay"] == 500
    assert crossings.loc[0.5, "delay"] == 600


# ---------------------------------------------------------------------------------------------
# End to end: a small data sweep, the emergence tables, the report and the CLI


def _sweep_study(name: str = "sweep") -> dict[str, Any]:
    return tiny_study(
        name,
        seeds=[0],
        zoo=[
            {
                "name": "mlp",
                "family": "mlp",
                "params": {"width": 16, "depth": 1},
                "grid": {"data_fraction": [0.1, 0.2, 0.4, 0.7, 1.0]},
            },
            {
                "name": "logreg",
                "family": "logreg",
                "grid": {"data_fraction": [0.1, 0.25, 0.5, 1.0]},
            },
        ],
        sweeps=[
            {"name": "mlp-data", "zoo": "mlp", "axis": "data", "metrics": ["accuracy", "nll"]},
            {"name": "mlp-flops", "zoo": "mlp", "axis": "flops", "swap": ["accuracy", "brier"]},
        ],
        evaluate={"probe_size": 50, "robust_epsilon": 0.0},
    )


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    return run_study(_sweep_study(), folder, workers=1).root


def test_a_run_with_sweeps_writes_emergence_tables(sweep_run: Path) -> None:
    tables = sweep_run / "tables"
    members = pd.read_parquet(tables / "members.parquet")
    mlp = members[members["entry"] == "mlp"].sort_values("data_fraction")
    rows = mlp["train_rows"].to_numpy()
    assert (np.diff(rows) > 0).all() and mlp["data_fraction"].max() == 1.0
    assert (mlp["train_flops"] > 0).all() and (mlp["flops_per_example"] > 0).all()
    # Training FLOPs = 3 x forward FLOPs per example x examples seen.
    expected = 3 * mlp["flops_per_example"] * mlp["steps"] * np.minimum(64, mlp["train_rows"])
    np.testing.assert_allclose(mlp["train_flops"], expected)
    curves = pd.read_parquet(tables / "emergence_curves.parquet")
    assert set(zip(curves["sweep"], curves["metric"], strict=True)) == {
        ("mlp-data", "accuracy"),
        ("mlp-data", "nll"),
        ("mlp-flops", "accuracy"),
        ("mlp-flops", "brier"),
    }
    verdicts = pd.read_parquet(tables / "emergence_verdicts.parquet")
    assert verdicts["sweep"].tolist() == ["mlp-flops"]
    crossings = pd.read_parquet(tables / "emergence_crossings.parquet")
    assert set(crossings["threshold"]) == {0.5, 0.9}
    history = pd.read_parquet(tables / "history.parquet")
    assert history["train_accuracy"].between(0, 1).all()
    report = (sweep_run / "report.html").read_text()
    assert 'id="emergence"' in report and "Sweep mlp-data" in report


def test_emergence_command(sweep_run: Path) -> None:
    result = cli("emergence", str(sweep_run), "--bootstrap", "0")
    assert result.returncode == 0, result.stderr
    assert "sweep 'mlp-data'" in result.stdout and "metric swap:" in result.stdout
    result = cli(
        "emergence", str(sweep_run), "--model", "logreg", "--axis", "data", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload[0]["zoo"] == "logreg" and payload[0]["curves"][0]["metric"] == "accuracy"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--metric", "exact_match"), ("metric 'exact_match' does not exist", "accuracy")),
        (("--model", "cnn"), ("no trained members of zoo entry 'cnn'", "mlp")),
        (("--axis", "width"), ("unknown scale axis 'width'",)),
        (("--swap", "accuracy"), ("is not two different metrics",)),
        (("--model", "logreg", "--axis", "steps"), ("no positive optimizer steps",)),
    ],
)
def test_emergence_command_bad_input(
    sweep_run: Path, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    assert_clean_failure(cli("emergence", str(sweep_run), *args), *needles)


def test_emergence_command_without_sweeps(tmp_path: Path) -> None:
    run = run_study(tiny_study("plain", seeds=[0]), tmp_path, workers=1).root
    assert_clean_failure(cli("emergence", str(run)), "declares no [[sweeps]]", "--model")


# ---------------------------------------------------------------------------------------------
# Suites


def test_builtin_emergence_suite_lists_its_studies() -> None:
    loaded = load_suite("emergence")
    assert loaded is not None
    suite, parts = loaded
    assert suite.name == "emergence" and len(parts) >= 3
    studies = {load_study(part).name: load_study(part) for part in parts}
    for name in ("emergence-addition", "emergence-parity", "emergence-mnist1d"):
        assert studies[name].sweeps, f"{name} declares no sweep"
    addition = studies["emergence-addition"].sweeps[0]
    assert addition.swap == ("exact_match", "accuracy")


def test_a_suite_runs_its_studies_into_one_folder(tmp_path: Path) -> None:
    first = study_file(tmp_path, _sweep_study("first"))
    second = study_file(tmp_path, tiny_study("second", seeds=[0], zoo=[{"family": "linear"}]))
    suite = tmp_path / "pair.toml"
    suite.write_text(f'name = "pair"\nstudies = ["{first.name}", "{second.name}"]\n')
    result = cli("run", str(suite), "--out", str(tmp_path / "runs"), "--set", "train.epochs=2")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "runs" / "pair"
    assert (folder / "first" / "report.html").is_file()
    assert (folder / "second" / "report.html").is_file()
    report = (folder / "report.html").read_text()
    assert "first: emergence against scale" in report and "second/report.html" in report
    assert "metric swap:" in result.stdout
    # A suite is not a study; a study in it must exist.
    assert_clean_failure(cli("emergence", str(folder)), "is a suite folder")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nstudies = ["nothere.toml"]\n')
    assert_clean_failure(cli("run", str(bad)), "lists study 'nothere.toml'")
