"""Compute-budget allocation: successive halving on planted learning curves, a tiny study, the CLI.

The algorithm tests check against references computed independently here: the planted best
candidate, rung sizes from the definition (``n // eta``, at least one), the spending recounted
from the calls ``evaluate`` actually received, and the largest affordable rung-0 epochs from the
closed form ``budget // sum_k n_k eta^k``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyculture.errors import ConfigError
from polyculture.select.budget import (
    Outcome,
    check_settings,
    rung_sizes,
    successive_halving,
    uniform_allocation,
    uniform_epochs,
    uniform_epochs_for_seconds,
)
from test_cli import assert_clean_failure, cli


class Curves:
    """Synthetic learning curves ``acc = ceiling * (1 - exp(-epochs / pace))``; records calls.

    Fixed candidates (no epochs) have a constant accuracy. Each call costs ``epochs`` member
    epochs and ``seconds_per_epoch[name] * epochs`` seconds (fixed: ``fixed_seconds``).
    """

    def __init__(
        self,
        ceilings: dict[str, float],
        pace: float | dict[str, float] = 5.0,
        fixed: dict[str, float] | None = None,
        seconds_per_epoch: dict[str, float] | None = None,
        fixed_seconds: float = 2.0,
    ) -> None:
        self.ceilings = ceilings
        self.pace = pace
        self.fixed = fixed or {}
        self.seconds_per_epoch = seconds_per_epoch or {}
        self.fixed_seconds = fixed_seconds
        self.calls: list[tuple[str, int]] = []

    @property
    def names(self) -> list[str]:
        return [*self.ceilings, *self.fixed]

    def accuracy(self, name: str, epochs: int) -> float:
        if name in self.fixed:
            return self.fixed[name]
        pace = self.pace if isinstance(self.pace, float) else self.pace[name]
        return self.ceilings[name] * (1 - math.exp(-epochs / pace))

    def __call__(self, name: str, epochs: int) -> Outcome:
        self.calls.append((name, epochs))
        if name in self.fixed:
            assert epochs == 0
            return Outcome(self.fixed[name], self.fixed[name] - 0.01, 0.0, self.fixed_seconds)
        assert epochs >= 1
        accuracy = self.accuracy(name, epochs)
        seconds = self.seconds_per_epoch.get(name, 0.5) * epochs
        return Outcome(accuracy, accuracy - 0.01, float(epochs), seconds)


def test_rung_sizes_follow_eta() -> None:
    for n in range(1, 30):
        for eta in (2, 3, 4):
            sizes = rung_sizes(n, eta)
            assert sizes[0] == n and sizes[-1] == 1
            for before, after in itertools.pairwise(sizes):
                assert after == max(1, before // eta)
            assert all(size > 1 for size in sizes[:-1])


def test_planted_best_is_found_with_exact_plan() -> None:
    curves = Curves({"a": 0.6, "b": 0.95, "c": 0.8, "d": 0.7})
    result = successive_halving(curves.names, curves, budget=36, eta=2)
    assert result.winner == "b"
    # 4 x 3 + 2 x 6 + 1 x 12 = 36: the closed form budget // (4 + 2*2 + 1*4) = 3.
    assert [(e.rung, e.epochs) for e in result.evaluations] == [
        (0, 3), (0, 3), (0, 3), (0, 3), (1, 6), (1, 6), (2, 12),
    ]  # fmt: skip
    assert result.spent_epochs == 36.0 == sum(r for _, r in curves.calls)
    assert result.spent_seconds == pytest.approx(0.5 * 36)
    kept = {(e.rung, e.candidate) for e in result.evaluations if e.kept}
    assert kept == {(0, "b"), (0, "c"), (1, "b"), (2, "b")}
    assert result.final.epochs == 12 and result.stop_reason == "one candidate left"


@settings(max_examples=60, deadline=None)
@given(
    ceilings=st.lists(st.floats(0.1, 0.99, allow_nan=False), min_size=1, max_size=12, unique=True),
    eta=st.integers(2, 4),
    extra=st.integers(0, 400),
)
def test_halving_spends_within_budget_and_finds_the_best(
    ceilings: list[float], eta: int, extra: int
) -> None:
    # One pace for all: the ranking by accuracy is the same at every length, so the planted
    # best (highest ceiling) must win.
    curves = Curves({f"m{i}": c for i, c in enumerate(ceilings)})
    n = len(ceilings)
    budget = n + extra
    result = successive_halving(curves.names, curves, budget=budget, eta=eta)
    assert result.winner == max(curves.ceilings, key=curves.ceilings.__getitem__)
    # Each (candidate, epochs) pair is trained once and charged once.
    assert len(set(curves.calls)) == len(curves.calls)
    assert result.spent_epochs == sum(r for _, r in curves.calls) <= budget
    # Kept fractions follow eta: rung k holds rung_sizes(n, eta)[k] candidates.
    per_rung = Counter(e.rung for e in result.evaluations)
    sizes = rung_sizes(n, eta)
    assert [per_rung[k] for k in range(result.rungs)] == sizes[: result.rungs]
    # Rung 0 trains for the largest epochs whose whole plan fits (closed form, no cap).
    weight = sum(size * eta**k for k, size in enumerate(sizes))
    if budget // weight >= 1:
        assert result.evaluations[0].epochs == budget // weight
        assert result.rungs == len(sizes)
    epochs = [max(e.epochs for e in result.evaluations if e.rung == k) for k in range(result.rungs)]
    assert all(later > earlier for earlier, later in itertools.pairwise(epochs))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 10),
    n_fixed=st.integers(0, 3),
    eta=st.integers(2, 4),
    cap=st.none() | st.integers(1, 40),
    budget=st.floats(1, 600),
)
def test_budget_is_never_exceeded(
    n: int, n_fixed: int, eta: int, cap: int | None, budget: float
) -> None:
    curves = Curves(
        {f"m{i}": 0.5 + 0.04 * i for i in range(n)},
        pace={f"m{i}": 1.0 + 3 * (i % 3) for i in range(n)},
        fixed={f"f{i}": 0.45 + 0.1 * i for i in range(n_fixed)},
    )
    if n > budget:
        with pytest.raises(ConfigError, match="too small for rung 0"):
            successive_halving(
                curves.names, curves, budget, eta=eta, max_epochs=cap, fixed=curves.fixed
            )
        assert curves.calls == []  # nothing trained
        return
    result = successive_halving(
        curves.names, curves, budget, eta=eta, max_epochs=cap, fixed=curves.fixed
    )
    assert result.spent_epochs <= budget
    assert result.spent_epochs == sum(r for _, r in curves.calls)
    assert len(set(curves.calls)) == len(curves.calls)
    assert all(cap is None or e.epochs <= cap for e in result.evaluations)
    for name in curves.fixed:  # fitted once, in rung 0, as epochs = 0
        assert curves.calls.count((name, 0)) == 1
    assert result.spent_seconds == pytest.approx(
        sum(0.5 * r if r else curves.fixed_seconds for _, r in curves.calls)
    )
    last = max(e.rung for e in result.evaluations)
    best_last = max(
        (e for e in result.evaluations if e.rung == last), key=lambda e: e.outcome.val_accuracy
    )
    assert result.winner == best_last.candidate


def test_fixed_candidates_compete_once_and_cost_no_epochs() -> None:
    # The planted best is a fixed (scikit-learn) candidate: it wins without any epoch spent on it.
    curves = Curves({"cnn": 0.7, "mlp": 0.6}, fixed={"forest": 0.9, "knn": 0.5})
    result = successive_halving(curves.names, curves, budget=40, eta=2, fixed=curves.fixed)
    assert result.winner == "forest"
    assert curves.calls.count(("forest", 0)) == 1
    forest = [e for e in result.evaluations if e.candidate == "forest"]
    assert [e.charged for e in forest] == [True] + [False] * (len(forest) - 1)
    assert all(e.epochs == 0 for e in forest)
    assert result.spent_epochs == sum(r for _, r in curves.calls) <= 40
    # Its seconds are counted once (an epoch budget does not charge them, but reports them).
    charged_fixed = sum(1 for name, r in curves.calls if r == 0)
    torch_seconds = sum(0.5 * r for _, r in curves.calls)
    assert result.spent_seconds == pytest.approx(torch_seconds + 2.0 * charged_fixed)


def test_cap_holds_rungs_and_stops_when_nothing_new_would_train() -> None:
    curves = Curves({f"m{i}": 0.5 + 0.05 * i for i in range(8)})
    # Budget 70, cap 10: rung 0 gets 3 epochs (8 x 3 + 4 x 6 + 2 x 10 = 68 fits, 4 does not);
    # rung 1 can then afford the cap (4 x 10 = 40 of the 46 left), after which every later
    # rung would re-rank the same members: the choice is final.
    result = successive_halving(curves.names, curves, budget=70, eta=2, max_epochs=10)
    assert [(e.rung, e.epochs) for e in result.evaluations] == [(0, 3)] * 8 + [(1, 10)] * 4
    assert result.winner == "m7" and "nothing new" in result.stop_reason
    assert result.spent_epochs == 64 == sum(r for _, r in curves.calls)
    # With room for every candidate at the cap, rung 0 trains at the cap and decides alone.
    capped = successive_halving(curves.names, Curves(curves.ceilings), 1000, max_epochs=10)
    assert capped.rungs == 1 and capped.spent_epochs == 80 and capped.winner == "m7"


def test_truncated_plan_stops_when_the_budget_is_spent() -> None:
    curves = Curves({f"m{i}": 0.5 + 0.05 * i for i in range(8)})
    # Rung 0 (8 x 1) fits; the whole plan (8 + 8 + 8 + 8 at 1 epoch to start) does not.
    result = successive_halving(curves.names, curves, budget=14, eta=2)
    assert result.spent_epochs <= 14
    assert result.stop_reason.startswith("budget spent")
    assert result.winner == "m7"


def test_failed_candidates_rank_last() -> None:
    def evaluate(name: str, epochs: int) -> Outcome:
        val = math.nan if name == "broken" else {"a": 0.3, "b": 0.4}[name]
        return Outcome(val, val, float(epochs), 0.0)

    result = successive_halving(["broken", "a", "b"], evaluate, budget=20, eta=2)
    assert result.winner == "b"
    assert not any(e.kept for e in result.evaluations if e.candidate == "broken")


def test_seconds_budget_plans_from_measured_speed() -> None:
    speeds = {"slow": 2.0, "fast": 0.25, "mid": 1.0}
    curves = Curves({"slow": 0.9, "fast": 0.7, "mid": 0.8}, seconds_per_epoch=speeds)
    result = successive_halving(curves.names, curves, 60, unit="seconds", eta=2, min_epochs=2)
    assert all(e.epochs == 2 for e in result.evaluations if e.rung == 0)
    # Costs are exactly linear in epochs here, so the prediction is exact and the plan fits.
    assert result.spent_seconds <= 60
    assert result.spent_seconds == pytest.approx(sum(speeds[c] * r for c, r in curves.calls))
    assert result.winner == "slow" and result.final.epochs > 2


def test_halving_beats_uniform_at_the_same_budget() -> None:
    # Slow learners: long training matters, so spending it on the best candidate pays off.
    ceilings = {f"m{i}": 0.5 + 0.05 * i for i in range(8)}
    budget = 160
    halving_curves = Curves(ceilings, pace=30.0)
    halving = successive_halving(list(ceilings), halving_curves, budget, eta=2)
    uniform_curves = Curves(ceilings, pace=30.0)
    each = uniform_epochs(budget, list(ceilings))
    uniform = uniform_allocation(list(ceilings), uniform_curves, each, budget=budget)
    assert each == 20 and uniform.spent_epochs == 160 and uniform.winner == "m7"
    assert halving.winner == "m7" and halving.spent_epochs <= budget
    assert halving.final.epochs > each
    assert halving.final.outcome.test_accuracy > uniform.final.outcome.test_accuracy
    reference = ceilings["m7"] * (1 - math.exp(-halving.final.epochs / 30.0)) - 0.01
    assert halving.final.outcome.test_accuracy == pytest.approx(reference)


def test_uniform_helpers() -> None:
    assert uniform_epochs(10, ["a", "b", "rf"], fixed=["rf"]) == 5
    with pytest.raises(ConfigError, match="under one epoch"):
        uniform_epochs(1, ["a", "b"])
    assert uniform_epochs_for_seconds(30, {"a": 1.0, "b": 3.0}, fixed_seconds=10) == {
        "a": 10,
        "b": 3,
    }
    # b has the higher ceiling but only 2 epochs: 0.6 (1 - e^-0.4) < 0.5 (1 - e^-0.8).
    curves = Curves({"a": 0.5, "b": 0.6}, fixed={"rf": 0.1})
    result = uniform_allocation(curves.names, curves, {"a": 4, "b": 2}, fixed=["rf"])
    assert sorted(curves.calls) == [("a", 4), ("b", 2), ("rf", 0)]
    assert result.winner == "a" and result.spent_epochs == 6


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"budget": 0}, "not a positive number"),
        ({"budget": math.inf}, "not a positive number"),
        ({"eta": 1}, "eta 1"),
        ({"min_epochs": 0}, "min_epochs 0"),
        ({"max_epochs": 1, "min_epochs": 2}, "max_epochs 1"),
        ({"unit": "hours"}, "unknown budget unit"),
        ({"budget": 5, "trained": 3, "min_epochs": 2}, "rung 0, which trains 3 candidate(s)"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], needle: str) -> None:
    arguments: dict[str, object] = {"budget": 100, "unit": "epochs", "eta": 2, "min_epochs": 1}
    arguments |= kwargs
    with pytest.raises(ConfigError) as info:
        check_settings(**arguments)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_bad_candidates() -> None:
    curves = Curves({"a": 0.5})
    with pytest.raises(ConfigError, match="listed twice"):
        successive_halving(["a", "a"], curves, 10)
    with pytest.raises(ConfigError, match="not among the candidates"):
        successive_halving(["a"], curves, 10, fixed=["rf"])
    with pytest.raises(ConfigError, match="6 epochs"):  # rung 0 needs 3 x 2
        successive_halving(["a", "b", "c"], curves, 5, min_epochs=2)
    assert curves.calls == []


def tiny_budget_study() -> dict[str, object]:
    return {
        "name": "tinyb",
        "seeds": [0],
        "data": {"name": "digits"},
        "train": {"epochs": 4, "batch_size": 64, "lr": 0.01},
        "zoo": [
            {"family": "linear"},
            {"family": "mlp", "params": {"width": 16, "depth": 1}},
            # A deliberately weak forest, so that a torch candidate survives rung 0.
            {"family": "random_forest", "params": {"n_estimators": 3, "max_depth": 3}},
        ],
        "evaluate": {"probe_size": 50},
        "execution": {"workers": 1},
    }


def test_run_budget_end_to_end_on_digits(tmp_path: Path) -> None:
    from polyculture.run.budget import BUDGET_COLUMNS, run_budget

    rungs: list[list[tuple[str, int]]] = []
    result = run_budget(tiny_budget_study(), 8, tmp_path, eta=2, on_rung=rungs.append)
    root = tmp_path / "tinyb-budget"
    assert result.root == root
    # 3 candidates, 2 trained by epochs: rung 0 gets 2 epochs (2 x 2 + 1 x 4 = 8), rung 1 keeps
    # one and trains it for 4; uniform gives each torch candidate 8 / 2 = 4 epochs.
    halving = [(e.rung, e.epochs) for e in result.halving.evaluations]
    assert halving == [(0, 2), (0, 2), (0, 0), (1, 4)]
    assert result.halving.spent_epochs == 8 and result.uniform.spent_epochs == 8
    table = pd.read_parquet(root / "tables" / "budget.parquet")
    assert list(table.columns) == BUDGET_COLUMNS
    for allocation, spent in (
        ("successive_halving", result.halving),
        ("uniform", result.uniform),
    ):
        rows = table[table["allocation"] == allocation]
        assert rows["cost_epochs"].sum() == spent.spent_epochs
        assert rows["cost_seconds"].sum() == pytest.approx(spent.spent_seconds)
        assert rows["winner"].sum() == 1
    uniform_rows = table[(table["allocation"] == "uniform") & (table["kind"] == "torch")]
    assert set(uniform_rows["epochs"]) == {4}
    forest = table[table["candidate"].str.startswith("random_forest")]
    assert set(forest["epochs"]) == {0} and set(forest["kind"]) == {"scikit-learn"}
    # Every row's accuracy is its members' mean accuracy in the run's members table, and the
    # member trained by both allocations (rung 1 = uniform's 4 epochs) is one member.
    members = pd.read_parquet(root / "tables" / "members.parquet").set_index("member_id")
    assert len(members) == len(set(zip(table["candidate"], table["epochs"], strict=True)))
    for row in table.itertuples():
        ids = row.member_ids.split(",")
        assert len(ids) == row.members == 1
        assert row.val_accuracy == pytest.approx(members.loc[ids, "val_accuracy"].mean())
        assert row.test_accuracy == pytest.approx(members.loc[ids, "test_accuracy"].mean())
        assert members.loc[ids[0], "name"] == row.model
    best_rung0 = table[(table["allocation"] == "successive_halving") & (table["rung"] == 0)]
    assert best_rung0.loc[best_rung0["val_accuracy"].idxmax(), "kept"]
    summary = json.loads((root / "tables" / "budget.json").read_text())
    assert summary["successive_halving"]["winner"] == result.halving.winner
    assert summary["settings"]["uniform_epochs"] == {"linear": 4, "mlp(depth=1,width=16)": 4}
    report = (root / "report.html").read_text()
    assert 'id="budget"' in report and "member-epochs spent" in report
    # Uniform's member shared with rung 1 and the forest are not trained again.
    assert [len(pairs) for pairs in rungs] == [3, 1, 1]
    # A rerun trains nothing: every member folder is reused as it is.
    done = {p: p.stat().st_mtime_ns for p in (root / "members").glob("*/DONE")}
    again = run_budget(tiny_budget_study(), 8, tmp_path, eta=2)
    assert {p: p.stat().st_mtime_ns for p in (root / "members").glob("*/DONE")} == done
    assert again.table.equals(result.table)


def test_candidates_are_the_studys_members_at_other_epochs() -> None:
    from polyculture.run.budget import budget_candidates
    from polyculture.run.study import Study, expand

    study = Study.model_validate(
        tiny_budget_study()
        | {
            "zoo": [
                {
                    "family": "mlp",
                    "params": {"depth": 1},
                    "train": {"augment": {"noise": 0.1}},
                    "grid": {"width": [8, 16], "train.lr": [0.01, 0.1], "data_fraction": [0.5]},
                },
                {"family": "logreg", "params": {"max_iter": 100}},
            ]
        }
    )
    candidates = budget_candidates(study)
    original = expand(study)
    assert [c.label for c in candidates] == list(dict.fromkeys(p.label for p in original))
    assert [c.fixed for c in candidates] == [False] * 4 + [True]
    assert {c.epochs for c in candidates} == {4, 0}
    # Trained for the study's own epochs, a candidate is exactly the study's member (same id).
    for candidate in candidates:
        train = dict(candidate.entry.train) | ({} if candidate.fixed else {"epochs": 4})
        entry = candidate.entry.model_copy(update={"name": "x", "train": train})
        [plan] = expand(study.model_copy(update={"zoo": [entry]}))
        [same] = [p for p in original if p.label == candidate.label]
        assert plan.member_id == same.member_id


def test_run_budget_rejects_epoch_sweeps(tmp_path: Path) -> None:
    from polyculture.run.budget import run_budget

    study = tiny_budget_study()
    study["zoo"] = [{"family": "linear", "grid": {"train.epochs": [1, 2]}}]
    with pytest.raises(ConfigError, match=r"sweeps train\.epochs"):
        run_budget(study, 10, tmp_path)
    assert not (tmp_path / "tinyb-budget").exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--budget", "0"], ["budget 0"]),
        (["--budget", "10", "--eta", "1"], ["eta 1"]),
        # mnist1d has 5 torch candidates: rung 0 needs 5 x 1 epochs.
        (["--budget", "3"], ["too small for rung 0", "= 5 epochs"]),
        (["nosuch", "--budget", "10"], ["'nosuch'"]),
        (["--budget", "10", "--unit", "hours"], ["--unit 'hours'"]),
        ([], ["no budget given", "--budget"]),
    ],
)
def test_cli_bad_input(args: list[str], needles: list[str]) -> None:
    assert_clean_failure(cli("budget", *args), *needles)
