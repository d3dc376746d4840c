"""Selection: Pareto fronts, scenarios, ensembles, incumbents, a real run end to end, the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyculture.errors import ConfigError, MeasureInputError
from polyculture.measure.paired import mcnemar
from polyculture.select.ensemble import compare_to_single, greedy_ensemble, soft_vote
from polyculture.select.incumbents import choose_against_incumbents
from polyculture.select.pareto import pareto_front
from polyculture.select.scenario import (
    NothingFeasibleError,
    Scenario,
    fairness_gap,
    feasible,
    load_scenario,
    recommend,
    systemic_contribution,
)

# ---------------------------------------------------------------------------------------------
# Pareto front


def brute_force_front(values: np.ndarray, directions: list[str]) -> list[bool]:
    """O(n^2) reference: a row is on the front unless another row dominates it."""
    signs = np.array([1 if d == "max" else -1 for d in directions])
    rows = values * signs
    front = []
    for i, a in enumerate(rows):
        if np.isnan(a).any():
            front.append(False)
            continue
        dominated = False
        for j, b in enumerate(rows):
            if i == j or np.isnan(b).any():
                continue
            if all(b[k] >= a[k] for k in range(len(a))) and any(b[k] > a[k] for k in range(len(a))):
                dominated = True
                break
        front.append(not dominated)
    return front


def test_pareto_front_hand_made_points() -> None:
    points = pd.DataFrame(
        {
            "accuracy": [0.90, 0.90, 0.80, 0.70, 0.95, 0.85, np.nan],
            "latency": [2.0, 2.0, 1.0, 1.5, 5.0, 2.0, 0.1],
        },
        index=list("abcdefg"),
    )
    front = pareto_front(points, {"accuracy": "max", "latency": "min"})
    # a and b: an exact tie, both kept; c: fastest; e: most accurate; d is dominated by c,
    # f by a (same latency, less accurate); g has no accuracy and cannot be compared.
    assert front.to_dict() == {
        "a": True,
        "b": True,
        "c": True,
        "d": False,
        "e": True,
        "f": False,
        "g": False,
    }
    flipped = pareto_front(points, {"accuracy": "min", "latency": "max"})
    assert flipped.to_dict()["d"] and not flipped.to_dict()["c"]


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda k: st.tuples(
            st.lists(st.lists(st.integers(0, 4), min_size=k, max_size=k), min_size=1, max_size=25),
            st.lists(st.sampled_from(["max", "min"]), min_size=k, max_size=k),
        )
    )
)
def test_pareto_front_matches_brute_force(case: tuple[list[list[int]], list[str]]) -> None:
    rows, directions = case
    values = np.array(rows, dtype=float)  # few distinct values: many ties and dominations
    frame = pd.DataFrame(values, columns=[f"o{i}" for i in range(values.shape[1])])
    objectives = dict(zip(frame.columns, directions, strict=True))
    assert pareto_front(frame, objectives).tolist() == brute_force_front(values, directions)  # type: ignore[arg-type]


def test_pareto_front_bad_objectives() -> None:
    frame = pd.DataFrame({"a": [1.0]})
    with pytest.raises(MeasureInputError, match="not in the table"):
        pareto_front(frame, {"b": "max"})
    with pytest.raises(MeasureInputError, match="direction"):
        pareto_front(frame, {"a": "up"})  # type: ignore[dict-item]
    with pytest.raises(MeasureInputError, match="at least one objective"):
        pareto_front(frame, {})


# ---------------------------------------------------------------------------------------------
# Derived quantities


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5))
def test_systemic_contribution_matches_a_loop(seed: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    correct = rng.random((30, m)) < rng.uniform(0.2, 0.9, m)
    reference = rng.random((30, 2)) < 0.5
    got = systemic_contribution(correct)
    with_reference = systemic_contribution(correct, reference)
    for j in range(m):
        errors = np.flatnonzero(~correct[:, j])
        others = [k for k in range(m) if k != j]
        if m == 1:
            assert np.isnan(got[j])
        elif len(errors) == 0:
            assert got[j] == 0.0
        else:
            shared = [u for u in errors if all(not correct[u, k] for k in others)]
            assert got[j] == pytest.approx(len(shared) / len(errors))
        shared_ref = [u for u in errors if not reference[u].any()]
        expected = len(shared_ref) / len(errors) if len(errors) else 0.0
        assert with_reference[j] == pytest.approx(expected)


def test_fairness_gap_against_pandas() -> None:
    rng = np.random.default_rng(1)
    correct = rng.random(200) < 0.7
    groups = rng.choice(["a", "b", "c"], 200)
    per_group = pd.Series(correct).groupby(groups).mean()
    assert fairness_gap(correct, groups) == pytest.approx(per_group.max() - per_group.min())
    assert fairness_gap(correct, np.zeros(200)) == 0.0
    with pytest.raises(MeasureInputError):
        fairness_gap(correct, groups[:10])


# ---------------------------------------------------------------------------------------------
# Scenarios


def candidates() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "member_id": ["m1", "m2", "m3", "m4"],
            "name": ["cnn", "mlp", "gru", "forest"],
            "accuracy": [0.94, 0.70, 0.90, 0.80],
            "latency_p50_ms": [3.0, 0.1, 1.0, np.nan],
            "n_parameters": [8000, 80000, 5000, 160000],
            "systemic_contribution": [0.2, 0.05, 0.1, 0.1],
        }
    )


def test_unknown_key_names_it_with_a_close_match(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text("max_latncy_ms = 2\n")
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert "unknown key 'max_latncy_ms'" in str(err.value)
    assert "did you mean 'max_latency_ms'" in str(err.value) and "edge.toml" in str(err.value)
    with pytest.raises(ConfigError, match="unknown key 'ensemble.budjet'.*'budget'"):
        load_scenario({"ensemble": {"budjet": 3}})
    path.write_text("max_latency_ms = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(path)
    with pytest.raises(ConfigError, match="no scenario file"):
        load_scenario(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"min_accuracy": 1.5}, "min_accuracy = 1.5 is above 1"),
        ({"max_latency_ms": -1}, "max_latency_ms = -1 is negative"),
        ({"max_fairness_gap": 5}, "max_fairness_gap = 5 is above 1"),
        ({"ensemble": {"min_members": 3, "max_members": 2}}, "min_members = 3 is above"),
        ({"ensemble": {"budget": 0}}, "leaves no room"),
        ({"weights": {"accuracy": 0}}, "every weight is 0"),
        ({"weights": {"latency": -1}}, "weights.latency"),
        ({"incumbent_slack": 2}, "incumbent_slack"),
    ],
)
def test_contradictory_constraints_are_clear_errors(raw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_scenario(raw)


def test_overrides_add_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "edge"\nmin_accuracy = 0.5\nincumbents = ["a"]\n[ensemble]\ncost = "parameters"\n'
    )
    scenario = load_scenario(
        path, min_accuracy=0.8, incumbents=["b"], ensemble_budget=9.0, max_latency_ms=None
    )
    assert scenario.min_accuracy == 0.8 and scenario.incumbents == ["a", "b"]
    assert scenario.ensemble.budget == 9.0 and scenario.ensemble.cost == "parameters"
    assert scenario.max_latency_ms is None and scenario.name == "edge"


def test_feasible_set_and_reasons() -> None:
    out = feasible(candidates(), Scenario(max_latency_ms=2, max_parameters=100000))
    assert out.mask.tolist() == [False, True, True, False]
    assert out.reasons[0] == "latency 3 ms > max_latency_ms 2 ms"
    assert out.reasons[3] == "latency unknown; parameters 160,000 > max_parameters 100,000"
    assert out.ruled_out == {"max_latency_ms": 2, "max_parameters": 1}


def test_constraint_without_any_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="max_fairness_gap is set but no member has"):
        feasible(candidates(), Scenario(max_fairness_gap=0.1))


def test_nothing_feasible_names_the_constraint_that_rules_out_most() -> None:
    with pytest.raises(NothingFeasibleError) as err:
        recommend(candidates(), Scenario(max_latency_ms=0.5, min_accuracy=0.95))
    message = str(err.value)
    assert message.startswith("no member satisfies the scenario: min_accuracy (95.0%) rules out 4")
    assert "also max_latency_ms (0.5 ms) rules out 3" in message
    assert "relax min_accuracy: the highest accuracy of any member is 94.0%" in message
    with pytest.raises(NothingFeasibleError, match="max_latency_ms \\(0.01 ms\\) rules out 4"):
        recommend(candidates(), Scenario(max_latency_ms=0.01))


def test_recommendation_reasons_and_front() -> None:
    choice = recommend(candidates(), Scenario(max_latency_ms=2))
    assert choice.label == "gru" and choice.member_id == "m3"
    assert choice.table["recommended"].tolist() == [False, False, True, False]
    # forest has no latency, so it cannot be compared: off the front
    assert choice.front["name"].tolist() == ["cnn", "mlp", "gru"]
    text = " ".join(choice.reasons)
    assert "latency 1 ms ≤ 2 ms" in text and "2 of 4 members do" in text
    assert "cnn is more accurate (94.0%, +4.0 points) but is ruled out: latency 3 ms" in text
    assert "For lower latency, mlp takes 0.1 ms" in text


def test_weights_trade_accuracy_for_latency() -> None:
    fast = recommend(candidates(), Scenario(weights={"accuracy": 1, "latency": 3}))
    assert fast.label == "mlp"  # rescaled: mlp 0 + 3*1 = 3 beats cnn 1 + 0, gru 0.83 + 3*0.69
    accurate = recommend(candidates(), Scenario())
    assert accurate.label == "cnn"
    forced = recommend(candidates(), Scenario(), choice="m4", choice_reason="Because.")
    assert forced.label == "forest" and "Because." in forced.reasons
    with pytest.raises(ConfigError, match="not a feasible candidate"):
        recommend(candidates(), Scenario(max_latency_ms=2), choice="m4")


def test_ties_prefer_lower_latency() -> None:
    frame = candidates().assign(accuracy=0.9)
    assert recommend(frame, Scenario()).label == "mlp"


# ---------------------------------------------------------------------------------------------
# Ensembles


def planted_members(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (4, n, 3): 'copy' errs like 'best'; 'b' and 'c' err on their own thirds."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    third = rng.integers(0, 3, n)  # which of best/b/c is wrong on each instance
    wrong = rng.random(n) < 0.45  # most instances: every member right
    proba = np.zeros((4, n, 3))
    for member, group in (("best", 0), ("copy", 0), ("b", 1), ("c", 2)):
        j = ["best", "copy", "b", "c"].index(member)
        errs = wrong & (third == group)
        if member == "copy":  # the same errors, plus a few more: slightly less accurate
            errs = errs | (rng.random(n) < 0.02)
        if member == "best":
            errs = errs & (rng.random(n) < 0.9)  # a few fixed: the most accurate
        predicted = np.where(errs, (labels + 1) % 3, labels)
        confidence = np.where(errs, 0.5, 0.8)
        proba[j, np.arange(n), predicted] = confidence
        rest = (1 - confidence) / 2
        for k in range(3):
            proba[j, :, k] += np.where(np.arange(3)[k] == predicted, 0, rest)
    return proba, labels


def test_greedy_ensemble_prefers_diverse_members_and_beats_the_best_single() -> None:
    val, val_labels = planted_members(0)
    test, test_labels = planted_members(1)
    chosen = greedy_ensemble(val, val_labels, diversity=0.02)
    single = [(soft_vote(val, [j]) == val_labels).mean() for j in range(4)]
    assert chosen.members[0] == int(np.argmax(single)) == 0  # the best single member first
    assert 1 not in chosen.members and {2, 3} <= set(chosen.members)  # the copy adds nothing
    # the steps' objective is accuracy + 0.02 x mean pairwise disagreement, recomputed here
    for row, size in zip(chosen.steps.itertuples(), range(1, 5), strict=False):
        members = chosen.members[:size]
        accuracy = (val[members].mean(axis=0).argmax(axis=1) == val_labels).mean()
        predicted = val.argmax(axis=2)
        pairs = [(predicted[a] != predicted[b]).mean() for a, b in combinations(members, 2)]
        assert row.accuracy == pytest.approx(accuracy)
        assert row.objective == pytest.approx(accuracy + 0.02 * (np.mean(pairs) if pairs else 0))
    ensemble_correct = soft_vote(test, chosen.members) == test_labels
    single_correct = soft_vote(test, [0]) == test_labels
    comparison = compare_to_single(ensemble_correct, single_correct, n_resamples=500)
    assert comparison.difference > 0.05 and comparison.ci_low > 0
    assert comparison.mcnemar_p == mcnemar(ensemble_correct, single_correct).p_value < 0.01


def test_greedy_ensemble_respects_the_budget() -> None:
    val, labels = planted_members(0)
    costs = np.array([1.0, 1.0, 5.0, 1.0])
    chosen = greedy_ensemble(val, labels, costs, budget=3.0)
    assert 2 not in chosen.members and chosen.cost <= 3.0
    assert chosen.steps["total_cost"].iloc[-1] == pytest.approx(costs[chosen.members].sum())
    with pytest.raises(MeasureInputError, match="no member fits the ensemble budget"):
        greedy_ensemble(val, labels, costs, budget=0.5)
    forced = greedy_ensemble(val, labels, min_members=4)
    assert sorted(forced.members) == [0, 1, 2, 3]
    capped = greedy_ensemble(val, labels, max_members=1)
    assert capped.members == [0] and capped.stopped == "max_members"


# ---------------------------------------------------------------------------------------------
# Incumbents


def test_incumbents_prefer_a_less_correlated_candidate_over_an_accurate_copy() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    incumbent = rng.random(n) < 0.80
    copy = incumbent | (rng.random(n) < 0.05)  # the incumbent's errors, a few fixed: ~81%
    diverse = rng.random(n) < 0.79  # independent of the incumbent: slightly less accurate
    candidates_correct = np.c_[copy, diverse]
    assert copy.mean() > diverse.mean()
    out = choose_against_incumbents(incumbent[:, None], candidates_correct, 0.75)
    assert (out.by_accuracy, out.chosen) == (0, 1)
    both_fail_copy = (~incumbent & ~copy).mean()
    both_fail_diverse = (~incumbent & ~diverse).mean()
    assert out.systemic.tolist() == pytest.approx([both_fail_copy, both_fail_diverse])
    assert out.avoided == pytest.approx(both_fail_copy - both_fail_diverse) and out.avoided > 0.1
    assert out.mcnemar_p < 1e-6 and out.incumbents_systemic == pytest.approx(1 - incumbent.mean())
    table = out.table(["copy", "diverse"])
    assert table["chosen"].tolist() == [False, True] and table["by_accuracy"].tolist() == [
        True,
        False,
    ]
    # above the diverse candidate's accuracy only the copy is eligible
    assert choose_against_incumbents(incumbent[:, None], candidates_correct, 0.8).chosen == 0
    allowed = choose_against_incumbents(
        incumbent[:, None], candidates_correct, 0.5, allowed=np.array([True, False])
    )
    assert allowed.chosen == allowed.by_accuracy == 0
    with pytest.raises(MeasureInputError, match="required accuracy 95.0%"):
        choose_against_incumbents(incumbent[:, None], candidates_correct, 0.95)


# ---------------------------------------------------------------------------------------------
# A real run, end to end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from polyculture.run import run_study

    run = run_study(
        "mnist1d",
        tmp_path_factory.mktemp("select"),
        [
            "zoo=[{family='logreg'},{family='linear'},{family='mlp'}]",
            "seeds=[0,1]",
            "train.epochs=2",
            "evaluate.robust_epsilon=0",
        ],
        workers=1,
    )
    return run.root


def test_select_run_writes_tables_that_match_the_run(tiny_run: Path) -> None:
    from polyculture.run import load_run
    from polyculture.run.select import read_selection, select_run

    results = load_run(tiny_run)
    result = select_run(results, Scenario(), n_resamples=200)
    members = results.members.set_index("member_id")
    best = members["test_accuracy"].max()
    assert members.loc[result.recommendation.member_id, "test_accuracy"] == best
    tables = tiny_run / "tables"
    selection = pd.read_parquet(tables / "selection.parquet")
    assert len(selection) == 6 and selection["feasible"].all()
    assert np.allclose(
        selection.set_index("member_id")["accuracy"],
        members.loc[selection["member_id"], "test_accuracy"],
    )
    pareto = pd.read_parquet(tables / "pareto.parquet")
    assert set(pareto["member_id"]) == set(selection.loc[selection["pareto"], "member_id"])
    summary = read_selection(tiny_run)
    assert summary is not None and summary["recommended"] == result.recommendation.member_id
    # the ensemble's test accuracy, recomputed from the stored probabilities
    ensemble = result.ensemble
    assert ensemble is not None and (tables / "ensemble.parquet").is_file()
    test_labels = results.predictions().query("split == 'test'")
    labels = test_labels[test_labels["member_id"] == ensemble.member_ids[0]]["label"].to_numpy()
    votes = np.mean([results.probabilities(i)["test"] for i in ensemble.member_ids], axis=0)
    assert ensemble.comparison.ensemble_accuracy == pytest.approx(
        (votes.argmax(1) == labels).mean()
    )
    single = results.probabilities(ensemble.single_id)["test"].argmax(1) == labels
    assert ensemble.comparison.single_accuracy == pytest.approx(single.mean())
    assert not (tables / "incumbents.parquet").exists()


def test_select_run_constraints_and_incumbents(tiny_run: Path) -> None:
    from polyculture.run import load_run
    from polyculture.run.select import select_run

    results = load_run(tiny_run)
    small = select_run(results, Scenario(max_parameters=1000), n_resamples=100)
    table = small.table.set_index("label")
    assert (
        not table.loc["mlp s0", "feasible"] and "max_parameters" in table.loc["mlp s0", "reasons"]
    )
    assert table.loc["linear s0", "feasible"]
    with pytest.raises(NothingFeasibleError, match="max_parameters \\(1\\) rules out 6 of 6"):
        select_run(results, Scenario(max_parameters=1))
    members = results.members
    if "latency_p50_ms" in members and members["latency_p50_ms"].notna().any():
        fastest = float(members["latency_p50_ms"].min())
        quick = select_run(results, Scenario(max_latency_ms=fastest * 1.0001), n_resamples=100)
        assert quick.table["feasible"].sum() >= 1
    else:  # a run without cost profiles cannot answer a latency constraint
        with pytest.raises(ConfigError, match="max_latency_ms is set but no member has a latency"):
            select_run(results, Scenario(max_latency_ms=1))

    against = select_run(results, Scenario(incumbents=["linear@0"], min_accuracy=0.2))
    assert against.incumbents is not None
    chosen = against.incumbents.summary()
    predictions = results.predictions().query("split == 'test'")
    wide = predictions.pivot(index="instance", columns="member_id", values="correct")
    incumbent_id = members.set_index("name").loc["linear"].query("seed == 0")["member_id"].iloc[0]
    rates = {
        member_id: float((~wide[incumbent_id] & ~wide[member_id]).mean())
        for member_id in wide.columns
        if member_id != incumbent_id
    }
    eligible = [m for m in rates if wide[m].mean() >= 0.2]
    assert chosen["chosen_systemic"] == pytest.approx(min(rates[m] for m in eligible))
    assert against.recommendation.member_id == chosen["chosen"]
    assert incumbent_id not in set(against.table["member_id"])
    assert (tiny_run / "tables" / "incumbents.parquet").is_file()
    with pytest.raises(ConfigError, match="unknown member 'resnet'"):
        select_run(results, Scenario(incumbents=["resnet"]))


def test_audit_run_as_incumbents_matches_in_run_incumbents(tiny_run: Path, tmp_path: Path) -> None:
    from polyculture.run import load_run
    from polyculture.run.audit import run_audit
    from polyculture.run.select import select_run

    results = load_run(tiny_run)
    classes = results.task["classes"]
    members = results.members
    incumbent_id = members[(members["name"] == "linear") & (members["seed"] == 0)][
        "member_id"
    ].iloc[0]
    predictions = results.predictions()
    rows = predictions[
        (predictions["split"] == "test") & (predictions["member_id"] == incumbent_id)
    ]
    csv = tmp_path / "deployed.csv"
    pd.DataFrame(
        {
            "instance": rows["instance"],
            "label": [classes[i] for i in rows["label"]],
            "deployed": [classes[i] for i in rows["prediction"]],
        }
    ).to_csv(csv, index=False)
    audit = run_audit(csv, tmp_path / "runs")
    external = select_run(results, Scenario(incumbents=[str(audit.root)]), write=False)
    internal = select_run(results, Scenario(incumbents=["linear@0"]), write=False)
    assert external.incumbents is not None and internal.incumbents is not None
    outside = external.incumbents.table.set_index("member_id")["systemic_with_incumbents"]
    inside = internal.incumbents.table.set_index("member_id")["systemic_with_incumbents"]
    assert np.allclose(outside.loc[inside.index], inside)
    assert external.incumbents.source == audit.root.name


def test_report_sections_escape_user_text(tiny_run: Path) -> None:
    from polyculture.report.html import _Csv, render
    from polyculture.report.selection import selection_sections
    from polyculture.run import load_run
    from polyculture.run.select import select_run

    results = load_run(tiny_run)
    select_run(results, Scenario(name="<script>x</script>", max_parameters=1000), n_resamples=100)
    sections = selection_sections(results, _Csv(tiny_run))
    ids = [section.id for section in sections]
    assert "selection" in ids
    assert ("cost" in ids) == ("latency_p50_ms" in results.members)
    page = render(sections, "t", "s")
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page
    assert "is recommended" in page and "Greedy ensemble steps" in page


# ---------------------------------------------------------------------------------------------
# Command line

REGISTER = (
    "import sys\n"
    "from polyculture.cli.main import app, main\n"
    "from polyculture.cli.select_command import EPILOG, select\n"
    "names = [getattr(c.callback, '__name__', '') for c in app.registered_commands]\n"
    "if 'select' not in names:\n"
    "    app.command(epilog=EPILOG)(select)\n"
    "sys.argv[0] = 'polyculture'\n"
    "main()\n"
)


def select_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``polyculture select ...`` (registering the command if cli/main.py does not yet)."""
    from test_cli import ENV

    return subprocess.run(
        [sys.executable, "-c", REGISTER, "select", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def test_cli_select_table_and_json(tiny_run: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text('name = "small"\nmax_parameters = 1000\n')
    shown = select_cli(str(tiny_run), "--scenario", str(scenario), "--no-report")
    assert shown.returncode == 0, shown.stderr
    assert "recommended" in shown.stdout and "max_parameters 1000" in shown.stdout
    assert "ensemble of" in shown.stdout or "ensemble" in shown.stdout
    data = json.loads(
        select_cli(str(tiny_run), "--min-accuracy", "0.2", "--format", "json", "--no-report").stdout
    )
    assert data["scenario"]["min_accuracy"] == 0.2 and len(data["table"]) == 6
    assert data["recommended"] in {row["member_id"] for row in data["table"]}


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--scenario", "BAD"], ["unknown key 'min_acuracy'", "did you mean 'min_accuracy'"]),
        (["--min-accuracy", "1.4"], ["min_accuracy = 1.4 is above 1"]),
        (["--max-parameters", "5"], ["rules out 6 of 6", "relax max_parameters"]),
        (["--incumbent", "resnet@0"], ["unknown member 'resnet@0'"]),
        (["--format", "yaml"], ["unknown --format 'yaml'"]),
    ],
    ids=["unknown-key", "contradictory", "nothing-feasible", "unknown-member", "format"],
)
def test_cli_select_bad_input_is_one_line(
    tiny_run: Path, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    from test_cli import assert_clean_failure

    bad = tmp_path / "bad.toml"
    bad.write_text("min_acuracy = 0.9\n")
    args = [str(bad) if arg == "BAD" else arg for arg in args]
    assert_clean_failure(select_cli(str(tiny_run), *args, "--no-report"), *needles)


def test_cli_select_not_a_run_directory(tmp_path: Path) -> None:
    from test_cli import assert_clean_failure

    assert_clean_failure(select_cli(str(tmp_path)), "not a run directory")


@pytest.mark.slow  # trains a small zoo in a fresh interpreter
def test_selection_page_examples_run(tmp_path: Path) -> None:
    """Every ```python block of docs/selection.md, in order, in a fresh interpreter."""
    page = Path(__file__).resolve().parents[1] / "docs" / "selection.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL)
    assert len(blocks) >= 2
    (tmp_path / "example.py").write_text("\n".join(blocks))
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is recommended" in result.stdout and "ms at batch 1" in result.stdout
