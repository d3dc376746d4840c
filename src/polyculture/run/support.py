"""The customer-service assistant of a run: intent member, calibrated routes, retrieval index.

:func:`build_support` turns a run directory into an assistant that answers a customer's message
by one of three routes:

1. **template**: the intent member (chosen with :func:`polyculture.run.select.select_run`, or
   named) predicts the intent; when the intent has an answer template and the member's
   confidence (its top class probability) is at least the *template threshold*, the template is
   the answer;
2. **retrieval**: otherwise the message is compared with the questions of the knowledge base
   (cosine similarity of MiniLM sentence embeddings when ``polyculture[text]`` is installed, else
   of TF-IDF vectors); when the nearest question's similarity is at least the *retrieval
   threshold*, its answer is returned with its source;
3. **human**: otherwise the message goes to a person (:data:`HUMAN_ANSWER`).

Thresholds are chosen on the validation split (never on test) as the lowest threshold whose
precision reaches the target (:func:`calibrate_threshold`):

* template precision: the share of template answers whose predicted intent is right, over the
  validation messages whose predicted intent has a template;
* retrieval precision (needs the knowledge base's ``intent`` column): the share of retrieval
  answers whose entry's intent is the message's true intent, over the validation messages the
  template route leaves (all validation messages when fewer than
  :data:`MIN_RETRIEVAL_CALIBRATION` are left). Without the column the retrieval threshold is a
  fixed rule (:data:`DEFAULT_RETRIEVAL_THRESHOLD`, or ``retrieval_threshold``) and the report
  says it is uncalibrated.

The routes are then measured on the test split with 95% bootstrap CIs. Everything is written to
``RUN_DIR/support/`` atomically, ``support.json`` last (its presence means "built"): the answers
and the knowledge base as Parquet, the retrieval index as ``index.npy`` (and the TF-IDF terms and
weights as Parquet; nothing is pickled), and the evaluation tables ``members.parquet``,
``routing.parquet`` and ``calibration.parquet``. :class:`SupportAssistant` loads it back for
serving (:mod:`polyculture.run.serve`).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from polyculture.data.support import (
    KnowledgeBase,
    check_answer_intents,
    load_answers,
    load_knowledge_base,
)
from polyculture.errors import ConfigError, MeasureInputError, RunStoreError
from polyculture.measure.statistics import bootstrap_mean_ci
from polyculture.run.members import find_member
from polyculture.run.results import RunResults, load_run
from polyculture.run.store import atomic_path, write_table, write_text
from polyculture.select.scenario import Scenario

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_RETRIEVAL_THRESHOLD",
    "HUMAN_ANSWER",
    "ROUTES",
    "SUPPORT_DIR",
    "Retriever",
    "SupportAnswer",
    "SupportAssistant",
    "SupportResult",
    "Threshold",
    "build_support",
    "calibrate_threshold",
    "choose_routes",
    "load_support_config",
]

SUPPORT_DIR = "support"
"""Folder of the assistant inside a run directory."""
CONFIG_NAME = "support.json"
"""The assistant's configuration in :data:`SUPPORT_DIR`, written last."""
ROUTES = ("template", "retrieval", "human")
"""How a message is answered."""
HUMAN_ANSWER = (
    "Thank you for your message. I am passing it to a member of our support team, who will "
    "reply as soon as possible."
)
"""The answer of the human route (a hand-over, not an answer to the question)."""
DEFAULT_RETRIEVAL_THRESHOLD = {"minilm": 0.6, "tfidf": 0.4}
"""Retrieval threshold per encoder when the knowledge base has no ``intent`` column to
calibrate on (cosine similarity of the message and the nearest question)."""
MIN_RETRIEVAL_CALIBRATION = 30
"""Fewest validation messages left by the template route to calibrate retrieval on them."""

Encoder = Literal["minilm", "tfidf"]


# ---------------------------------------------------------------------------------------------
# Thresholds


@dataclass(frozen=True)
class Threshold:
    """A score threshold and what it reaches on its calibration rows.

    Attributes
    ----------
    value
        Answer when the score is at least ``value`` (``inf``: never).
    target_precision
        The precision it had to reach.
    precision, coverage
        Precision of the rows at or above ``value``, and their share of all calibration rows
        (NaN and 0 when nothing reaches the target).
    rows
        Calibration rows.
    met
        Whether some threshold reached the target.
    rule
        How it was chosen: ``calibrated``, ``given`` (by hand) or ``default`` (uncalibrated).
    """

    value: float
    target_precision: float
    precision: float
    coverage: float
    rows: int
    met: bool
    rule: str = "calibrated"

    def summary(self) -> dict[str, Any]:
        """JSON-ready fields (``inf`` and NaN become ``None``)."""
        return {
            "value": _finite_or_none(self.value),
            "target_precision": self.target_precision,
            "precision": _finite_or_none(self.precision),
            "coverage": _finite_or_none(self.coverage),
            "rows": self.rows,
            "met": self.met,
            "rule": self.rule,
        }


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _check_target(target_precision: float) -> None:
    if not (math.isfinite(target_precision) and 0 < target_precision <= 1):
        raise ConfigError(
            f"target precision {target_precision} is not a fraction in (0, 1]",
            hint="give e.g. 0.9 for 90% of answers right",
        )


def calibrate_threshold(
    scores: np.ndarray, correct: np.ndarray, target_precision: float
) -> Threshold:
    """The lowest threshold whose precision reaches ``target_precision``.

    A row is answered when its score is at least the threshold; precision is the share of
    answered rows that are correct. Candidates are the observed scores (ties go together); the
    smallest candidate whose precision is at least the target wins (precision need not rise
    with the threshold, so every candidate is checked).

    Parameters
    ----------
    scores
        ``(n,)`` confidence or similarity per calibration row.
    correct
        ``(n,)`` bool, whether answering that row would be right.
    target_precision
        A fraction in ``(0, 1]``.

    Raises
    ------
    MeasureInputError
        Shapes differ or a score is NaN.
    ConfigError
        The target is not in ``(0, 1]``.

    Examples
    --------
    >>> scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6])
    >>> t = calibrate_threshold(scores, np.array([1, 1, 1, 0, 1], bool), 0.8)
    >>> t.value, t.precision, t.coverage
    (0.6, 0.8, 1.0)
    >>> calibrate_threshold(scores, np.zeros(5, bool), 0.8).value
    inf
    """
    _check_target(target_precision)
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if scores.ndim != 1 or scores.shape != correct.shape:
        raise MeasureInputError(
            f"scores {scores.shape} and correct {correct.shape} must be equal 1-D shapes",
            hint="pass one score and one outcome per calibration row",
        )
    if np.isnan(scores).any():
        raise MeasureInputError("a score is NaN", hint="check the model's probabilities")
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]  # (n,) descending
    hits = np.cumsum(correct[order])  # (n,) correct rows among the top i + 1
    # The last row of each group of tied scores: answering at that score answers the whole group.
    ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True]) if n else np.array([], int)
    precision = hits[ends] / (ends + 1)
    # A float tolerance: 4 of 5 correct must count as 0.8.
    reaching = ends[precision >= target_precision - 1e-12]
    if len(reaching) == 0:
        return Threshold(math.inf, target_precision, math.nan, 0.0, n, met=False)
    end = int(reaching[-1])  # the lowest threshold reaching the target
    return Threshold(
        value=float(ranked[end]),
        target_precision=target_precision,
        precision=float(hits[end] / (end + 1)),
        coverage=float((end + 1) / n),
        rows=n,
        met=True,
    )


def precision_curve(scores: np.ndarray, correct: np.ndarray) -> pd.DataFrame:
    """Precision and coverage at every observed threshold (for the report's figure).

    Examples
    --------
    >>> precision_curve(np.array([0.9, 0.5]), np.array([True, False]))["precision"].tolist()
    [1.0, 0.5]
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    hits = np.cumsum(correct[order])
    ends = (
        np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True]) if len(ranked) else np.zeros(0, int)
    )
    return pd.DataFrame(
        {
            "threshold": ranked[ends],
            "precision": hits[ends] / (ends + 1),
            "coverage": (ends + 1) / max(len(ranked), 1),
        }
    )


def choose_routes(
    confidence: np.ndarray,
    has_template: np.ndarray,
    similarity: np.ndarray,
    template_threshold: float,
    retrieval_threshold: float,
) -> np.ndarray:
    """The route of each message: ``template``, ``retrieval`` or ``human``.

    Examples
    --------
    >>> choose_routes(np.array([0.9, 0.9, 0.3, 0.3]), np.array([True, False, True, True]),
    ...               np.array([0.1, 0.8, 0.8, 0.1]), 0.5, 0.6).tolist()
    ['template', 'retrieval', 'retrieval', 'human']
    """
    template = np.asarray(has_template, bool) & (np.asarray(confidence) >= template_threshold)
    retrieval = ~template & (np.asarray(similarity) >= retrieval_threshold)
    return np.where(template, "template", np.where(retrieval, "retrieval", "human"))


# ---------------------------------------------------------------------------------------------
# Retrieval


@dataclass
class Retriever:
    """Nearest knowledge-base question by cosine similarity.

    Attributes
    ----------
    encoder
        ``minilm`` (normalized all-MiniLM-L6-v2 sentence embeddings, needs ``polyculture[text]``)
        or ``tfidf`` (sublinear TF-IDF of word unigrams and bigrams, L2-normalized).
    vectors
        ``(k, d)`` float32 unit rows, one per knowledge-base question (all-zero for a TF-IDF
        question with no known term).
    terms, idf
        The TF-IDF vocabulary and inverse document frequencies (``tfidf`` only).
    """

    encoder: Encoder
    vectors: np.ndarray
    terms: tuple[str, ...] = ()
    idf: np.ndarray | None = None
    _vectorizer: Any = field(default=None, repr=False)

    @classmethod
    def fit(
        cls, questions: Sequence[str], encoder: Encoder, corpus: Sequence[str] = ()
    ) -> Retriever:
        """Index ``questions``; TF-IDF learns its vocabulary from them and ``corpus``.

        Examples
        --------
        >>> index = Retriever.fit(["How do I reset my PIN?", "Where is my card?"], "tfidf")
        >>> best, similarity = index.search(["my card has not arrived, where is it"])
        >>> best.tolist(), bool(similarity[0] > 0)
        ([1], True)
        """
        if encoder == "tfidf":
            from sklearn.feature_extraction.text import TfidfVectorizer

            vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
            vectorizer.fit([*questions, *corpus])
            index = cls(
                "tfidf",
                np.zeros((0, 0), np.float32),
                tuple(str(t) for t in vectorizer.get_feature_names_out()),
                vectorizer.idf_.astype(np.float64),
                vectorizer,
            )
        else:
            index = cls("minilm", np.zeros((0, 0), np.float32))
        index.vectors = index.embed(questions)
        return index

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, d)`` float32 unit (or zero) rows of ``texts``."""
        if self.encoder == "minilm":
            from polyculture.zoo.pretrained import sentence_embeddings

            return sentence_embeddings(list(texts))
        vectorizer = self._tfidf()
        return np.asarray(vectorizer.transform(list(texts)).toarray(), dtype=np.float32)

    def _tfidf(self) -> Any:
        if self._vectorizer is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vectorizer = TfidfVectorizer(
                sublinear_tf=True, ngram_range=(1, 2), vocabulary=list(self.terms)
            )
            vectorizer.idf_ = self.idf
            self._vectorizer = vectorizer
        return self._vectorizer

    def search(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The nearest question of each text ``(n,)`` and its cosine similarity ``(n,)``."""
        queries = self.embed(texts)  # (n, d)
        similarity = queries @ self.vectors.T  # (n, k)
        best = similarity.argmax(axis=1)  # (n,)
        return best, similarity[np.arange(len(best)), best].astype(np.float64)

    def save(self, folder: Path) -> None:
        """Write ``index.npy`` (and ``tfidf_terms.parquet``) into ``folder`` atomically."""
        with atomic_path(folder / "index.npy") as tmp, tmp.open("wb") as handle:
            np.save(handle, self.vectors, allow_pickle=False)
        if self.encoder == "tfidf":
            terms = pd.DataFrame({"term": list(self.terms), "idf": self.idf})
            write_table(terms, folder / "tfidf_terms.parquet")

    @classmethod
    def load(cls, folder: Path, encoder: Encoder) -> Retriever:
        """Read what :meth:`save` wrote."""
        vectors = np.load(folder / "index.npy", allow_pickle=False)
        if encoder == "tfidf":
            terms = pd.read_parquet(folder / "tfidf_terms.parquet")
            return cls(
                "tfidf",
                vectors,
                tuple(terms["term"].astype(str)),
                terms["idf"].to_numpy(np.float64),
            )
        return cls("minilm", vectors)


def _resolve_encoder(encoder: str) -> Encoder:
    """``auto``: MiniLM when the text extra loads, else TF-IDF."""
    if encoder not in ("auto", "minilm", "tfidf"):
        raise ConfigError(f"unknown encoder '{encoder}'", hint="use auto, minilm or tfidf")
    if encoder == "tfidf":
        return "tfidf"
    from polyculture.zoo.pretrained import load_encoder

    try:
        load_encoder()
    except ConfigError:
        if encoder == "minilm":
            raise
        return "tfidf"
    return "minilm"


# ---------------------------------------------------------------------------------------------
# Building the assistant


@dataclass
class SupportResult:
    """What :func:`build_support` chose and measured (and wrote).

    Attributes
    ----------
    root
        The run directory.
    config
        The content of ``support/support.json``.
    members
        Intent accuracy and macro-F1 per member on the test split, with 95% CIs.
    routing
        Per split (``val``, ``test``) and route: messages, share, precision, with CIs.
    """

    root: Path
    config: dict[str, Any]
    members: pd.DataFrame
    routing: pd.DataFrame

    @property
    def folder(self) -> Path:
        """``RUN_DIR/support``."""
        return self.root / SUPPORT_DIR


def _choose_member(
    results: RunResults, member: str | None, scenario: Scenario | None
) -> tuple[str, str, list[str]]:
    """Member id, label and the reasons it was chosen."""
    ok = results.members[results.members["status"] == "ok"]
    if member is not None:
        row = find_member(results.members, member)
        label = f"{row['name']} s{int(row['seed'])}"
        if row["status"] != "ok":
            raise ConfigError(
                f"member {label} failed, so it cannot classify intents",
                hint="name a member that trained (polyculture show RUN_DIR --members)",
            )
        return str(row["member_id"]), label, [f"{label} was named as the intent member."]
    if ok.empty:
        raise ConfigError(
            f"no member of '{results.root}' trained", hint="train the study again and fix failures"
        )
    from polyculture.run.select import select_run

    chosen = select_run(results, scenario or Scenario(split="val"), write=False, n_resamples=200)
    recommendation = chosen.recommendation
    return recommendation.member_id, recommendation.label, list(recommendation.reasons)


def _split_outputs(
    results: RunResults, member_id: str, split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances ``(n,)``, labels ``(n,)`` and probabilities ``(n, classes)`` of a member."""
    stored = results.probabilities(member_id)
    if split not in stored:
        raise RunStoreError(
            f"member {member_id} has no stored '{split}' probabilities",
            hint="rerun the study (a validation split is needed to calibrate the thresholds)",
        )
    predictions = results.predictions()
    rows = predictions[(predictions["member_id"] == member_id) & (predictions["split"] == split)]
    proba = np.asarray(stored[split], dtype=np.float64)  # (n, classes)
    if len(rows) != len(proba):
        raise RunStoreError(
            f"member {member_id}: {len(rows)} '{split}' predictions but {len(proba)} probability "
            "rows",
            hint="rerun the study",
        )
    return rows["instance"].to_numpy(), rows["label"].to_numpy(np.int64), proba


def _split_texts(results: RunResults, instances: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """The raw messages of each split, in the order of ``instances``."""
    from polyculture.data.builders import DataSpec, build_task

    task = build_task(DataSpec.model_validate(results.study["data"]))
    if task.modality != "text":
        raise ConfigError(
            f"the run's task '{task.name}' is {task.modality} data, not text",
            hint="build the assistant from a run of a text study (e.g. banking77)",
        )
    out = {}
    for split, ids in instances.items():
        source = getattr(task, split)
        texts = dict(zip(source.instance_ids().tolist(), source.texts or (), strict=True))
        missing = [i for i in ids.tolist() if i not in texts]
        if missing:
            raise RunStoreError(
                f"instance {missing[0]} of the '{split}' predictions is not in the data",
                hint="the data changed since the run: rerun the study",
            )
        out[split] = [texts[i] for i in ids.tolist()]
    return out


def _rate(values: np.ndarray, seed: int, n_resamples: int) -> tuple[float, float, float]:
    """Mean of 0/1 ``values`` with its 95% bootstrap CI (NaNs when empty)."""
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    low, high = bootstrap_mean_ci(values.astype(float), n_resamples=n_resamples, seed=seed)
    return float(values.mean()), low, high


def _routing_table(
    split: str,
    routes: np.ndarray,
    intent_right: np.ndarray,
    entry_right: np.ndarray | None,
    seed: int,
    n_resamples: int,
) -> pd.DataFrame:
    """One row per route (and ``answered``): count, share and precision with CIs."""
    rows = []
    answered_right = np.where(
        routes == "template",
        intent_right,
        (routes == "retrieval") & (entry_right if entry_right is not None else False),
    )
    for route in (*ROUTES, "answered"):
        taken = routes != "human" if route == "answered" else routes == route
        share, share_low, share_high = _rate(taken, seed, n_resamples)
        if route == "template":
            right: np.ndarray | None = intent_right[taken]
        elif route == "retrieval":
            right = None if entry_right is None else entry_right[taken]
        elif route == "answered":
            judged = entry_right is not None or not (routes == "retrieval").any()
            # Without entry intents, retrieval answers (and so all answers) cannot be judged.
            right = answered_right[taken] if judged else None
        else:
            right = None
        precision, low, high = (math.nan,) * 3 if right is None else _rate(right, seed, n_resamples)
        rows.append(
            {
                "split": split,
                "route": route,
                "messages": int(taken.sum()),
                "share": share,
                "share_ci_low": share_low,
                "share_ci_high": share_high,
                "precision": precision,
                "precision_ci_low": low,
                "precision_ci_high": high,
            }
        )
    return pd.DataFrame(rows)


def _members_table(results: RunResults, chosen: str) -> pd.DataFrame:
    """Intent accuracy and macro-F1 of every trained member on test (val accuracy too)."""
    members = results.members[results.members["status"] == "ok"]
    columns = {
        "test_accuracy": "accuracy",
        "test_accuracy_ci_low": "accuracy_ci_low",
        "test_accuracy_ci_high": "accuracy_ci_high",
        "test_macro_f1": "macro_f1",
        "test_macro_f1_ci_low": "macro_f1_ci_low",
        "test_macro_f1_ci_high": "macro_f1_ci_high",
        "val_accuracy": "val_accuracy",
        "latency_p50_ms": "latency_p50_ms",
    }
    frame = pd.DataFrame(
        {
            "member_id": members["member_id"].astype(str),
            "name": members["name"].astype(str),
            "family": members["family"].astype(str),
            "seed": members["seed"].astype(int),
        }
    )
    for source, target in columns.items():
        frame[target] = pd.to_numeric(members.get(source, np.nan), errors="coerce")
    frame["chosen"] = frame["member_id"] == chosen
    return frame.reset_index(drop=True)


def build_support(
    run_dir: str | Path | RunResults,
    answers: str | Path,
    knowledge_base: str | Path,
    *,
    member: str | None = None,
    scenario: Scenario | None = None,
    target_precision: float = 0.9,
    retrieval_precision: float | None = None,
    retrieval_threshold: float | None = None,
    encoder: str = "auto",
    human_answer: str = HUMAN_ANSWER,
    seed: int = 0,
    n_resamples: int = 2000,
) -> SupportResult:
    """Build the assistant of a run and write ``RUN_DIR/support/`` (see the module docstring).

    Parameters
    ----------
    run_dir
        A run directory of a text study (or its loaded results).
    answers, knowledge_base
        The answers file and the knowledge base (:mod:`polyculture.data.support`).
    member
        The intent member (id, id prefix or ``name[@seed]``); default: the recommendation of
        ``scenario`` (default: the most accurate member on the validation split).
    scenario
        Constraints for the choice, e.g. ``Scenario(split="val", max_latency_ms=1)``.
    target_precision
        Precision the template route must reach on validation.
    retrieval_precision
        Precision the retrieval route must reach (default: ``target_precision``).
    retrieval_threshold
        A fixed retrieval threshold (cosine similarity) instead of calibrating one.
    encoder
        ``auto`` (MiniLM when the text extra is installed, else TF-IDF), ``minilm`` or ``tfidf``.
    human_answer
        What the human route says.
    seed, n_resamples
        Of the bootstrap CIs.

    Raises
    ------
    ConfigError
        Bad target or threshold, unknown member or encoder, an answers intent the member does not
        know, a run that is not a text task, no feasible member.
    DataError
        Malformed answers or knowledge-base file.

    Examples
    --------
    With a run of a text study (``tests/test_support.py`` builds one in seconds)::

        scenario = Scenario(split="val", max_latency_ms=1)
        built = build_support("runs/banking77", "answers.csv", "kb.csv", scenario=scenario)
        built.config["thresholds"]["template"]["value"]

    >>> build_support("/nonexistent", "answers.csv", "kb.csv", target_precision=0.9)
    Traceback (most recent call last):
    ...
    polyculture.errors.RunStoreError: '/nonexistent' is not a run directory (no study.toml); ...
    """
    _check_target(target_precision)
    retrieval_precision = target_precision if retrieval_precision is None else retrieval_precision
    _check_target(retrieval_precision)
    if retrieval_threshold is not None and not (
        math.isfinite(retrieval_threshold) and -1 <= retrieval_threshold <= 1
    ):
        raise ConfigError(
            f"retrieval threshold {retrieval_threshold} is not a cosine similarity in [-1, 1]",
            hint="give e.g. 0.6, or leave it out to calibrate it",
        )
    if not human_answer.strip():
        raise ConfigError("the human hand-over answer is empty", hint="give a sentence")
    results = run_dir if isinstance(run_dir, RunResults) else load_run(run_dir)
    templates = load_answers(answers)
    kb = load_knowledge_base(knowledge_base)
    class_names = [str(c) for c in results.task.get("classes", [])]
    if not class_names:
        raise RunStoreError(f"'{results.root}' lists no classes in task.json", hint="rerun it")
    without_template = check_answer_intents(templates, class_names)
    member_id, label, reasons = _choose_member(results, member, scenario)
    resolved = _resolve_encoder(encoder)

    outputs = {split: _split_outputs(results, member_id, split) for split in ("val", "test")}
    texts = _split_texts(results, {split: out[0] for split, out in outputs.items()})
    corpus = [*kb.questions, *kb.answers]
    retriever = Retriever.fit(kb.questions, resolved, corpus=corpus)
    has_template = np.array([name in templates for name in class_names])  # (classes,)

    scored: dict[str, dict[str, np.ndarray]] = {}
    for split, (_, labels, proba) in outputs.items():
        predicted = proba.argmax(axis=1)  # (n,)
        best, similarity = retriever.search(texts[split])
        entry_right = None
        if kb.intents is not None:
            entry_intents = np.array(kb.intents, dtype=object)[best]
            entry_right = entry_intents == np.array(class_names, dtype=object)[labels]
        scored[split] = {
            "labels": labels,
            "predicted": predicted,
            "confidence": proba.max(axis=1),
            "templated": has_template[predicted],
            "intent_right": predicted == labels,
            "similarity": similarity,
            "entry_right": entry_right,  # type: ignore[dict-item]
        }

    val = scored["val"]
    eligible = val["templated"]
    template = calibrate_threshold(
        val["confidence"][eligible], val["intent_right"][eligible], target_precision
    )
    curve = precision_curve(val["confidence"][eligible], val["intent_right"][eligible])
    notes: list[str] = []
    if not template.met:
        notes.append(
            f"no template threshold reaches precision {target_precision:g} on validation: the "
            "template route is off"
        )
    if without_template:
        notes.append(
            f"{len(without_template)} of {len(class_names)} intents have no template; their "
            "messages go to retrieval"
        )
    retrieval = _retrieval_threshold(
        val, template.value, kb, resolved, retrieval_precision, retrieval_threshold, notes
    )
    tables = []
    for split, values in scored.items():
        routes = choose_routes(
            values["confidence"],
            values["templated"],
            values["similarity"],
            template.value,
            retrieval.value,
        )
        tables.append(
            _routing_table(
                split, routes, values["intent_right"], values["entry_right"], seed, n_resamples
            )
        )
    routing = pd.concat(tables, ignore_index=True)
    members = _members_table(results, member_id)
    chosen = members[members["chosen"]].iloc[0]
    config = {
        "member_id": member_id,
        "member": label,
        "family": str(chosen["family"]),
        "reasons": reasons,
        "class_names": class_names,
        "encoder": resolved,
        "thresholds": {"template": template.summary(), "retrieval": retrieval.summary()},
        "test_accuracy": _finite_or_none(float(chosen["accuracy"])),
        "test_accuracy_ci": [
            _finite_or_none(float(chosen["accuracy_ci_low"])),
            _finite_or_none(float(chosen["accuracy_ci_high"])),
        ],
        "test_macro_f1": _finite_or_none(float(chosen["macro_f1"])),
        "intents_without_template": without_template,
        "answers_file": str(answers),
        "knowledge_base_file": str(knowledge_base),
        "knowledge_base_entries": len(kb),
        "knowledge_base_has_intents": kb.intents is not None,
        "human_answer": human_answer,
        "validation_messages": len(val["labels"]),
        "test_messages": len(scored["test"]["labels"]),
        "notes": notes,
    }
    folder = results.root / SUPPORT_DIR
    (folder / CONFIG_NAME).unlink(missing_ok=True)  # a half-rebuilt folder must not look built
    answers_frame = pd.DataFrame({"intent": list(templates), "answer": list(templates.values())})
    write_table(answers_frame, folder / "answers.parquet")
    write_table(
        pd.DataFrame(
            {
                "question": list(kb.questions),
                "answer": list(kb.answers),
                "source": list(kb.sources),
                "intent": list(kb.intents) if kb.intents is not None else [""] * len(kb),
            }
        ),
        folder / "knowledge_base.parquet",
    )
    retriever.save(folder)
    write_table(members, folder / "members.parquet")
    write_table(routing, folder / "routing.parquet", csv=True)
    write_table(curve, folder / "calibration.parquet")
    write_text(folder / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return SupportResult(results.root, config, members, routing)


def _retrieval_threshold(
    val: dict[str, np.ndarray],
    template_value: float,
    kb: KnowledgeBase,
    encoder: Encoder,
    target: float,
    given: float | None,
    notes: list[str],
) -> Threshold:
    """The retrieval threshold: given, calibrated on validation, or the encoder's default."""
    if given is not None:
        return Threshold(given, target, math.nan, math.nan, 0, met=True, rule="given")
    entry_right = val["entry_right"]
    if kb.intents is None or entry_right is None:
        value = DEFAULT_RETRIEVAL_THRESHOLD[encoder]
        notes.append(
            f"the knowledge base has no intent column, so the retrieval threshold is the "
            f"{encoder} default {value:g}, not calibrated"
        )
        return Threshold(value, target, math.nan, math.nan, 0, met=True, rule="default")
    left = ~(val["templated"] & (val["confidence"] >= template_value))
    if left.sum() < MIN_RETRIEVAL_CALIBRATION:
        notes.append(
            f"only {int(left.sum())} validation messages reach retrieval: its threshold is "
            "calibrated on all validation messages"
        )
        left = np.ones_like(left)
    threshold = calibrate_threshold(val["similarity"][left], entry_right[left], target)
    if not threshold.met:
        notes.append(
            f"no retrieval threshold reaches precision {target:g} on validation: messages the "
            "template route leaves go to a human"
        )
    return threshold


def load_support_config(run_dir: str | Path) -> dict[str, Any]:
    """``RUN_DIR/support/support.json``.

    Raises
    ------
    RunStoreError
        The assistant was not built (or the file is corrupt).

    Examples
    --------
    >>> load_support_config("/nonexistent")
    Traceback (most recent call last):
    ...
    polyculture.errors.RunStoreError: '/nonexistent' has no support assistant ...
    """
    path = Path(run_dir) / SUPPORT_DIR / CONFIG_NAME
    if not path.is_file():
        raise RunStoreError(
            f"'{run_dir}' has no support assistant ({path} is missing)",
            hint="build it first: polyculture support RUN_DIR --answers FILE --kb FILE",
        )
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except ValueError as err:
        raise RunStoreError(f"'{path}' is not valid JSON ({err})", hint="build it again") from None
    return config


# ---------------------------------------------------------------------------------------------
# Answering


class IntentClassifier(Protocol):
    """What the assistant needs of a classifier: a :class:`polyculture.run.predictor.Predictor`."""

    @property
    def class_names(self) -> tuple[str, ...]: ...

    def predict_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class SupportAnswer:
    """The assistant's reply to one message.

    Attributes
    ----------
    intent, confidence
        The predicted intent and its probability (always given, whatever the route).
    answer
        The reply.
    route
        ``template``, ``retrieval`` or ``human``.
    source
        Where the answer comes from: ``template:<intent>``, the knowledge-base entry's source, or
        ``None`` (human).
    similarity
        Cosine similarity of the nearest knowledge-base question (``None`` on the template route,
        where the knowledge base is not searched).
    """

    intent: str
    confidence: float
    answer: str
    route: str
    source: str | None
    similarity: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "intent": self.intent,
            "confidence": _finite_or_none(self.confidence),
            "answer": self.answer,
            "route": self.route,
            "source": self.source,
            "similarity": None if self.similarity is None else _finite_or_none(self.similarity),
        }


class SupportAssistant:
    """The built assistant, loaded once: classifier, templates, knowledge base and index.

    Calls are serialized by a lock: the models need not be thread-safe, and on a few cores
    running them one at a time costs little throughput.
    """

    def __init__(
        self,
        config: dict[str, Any],
        classifier: IntentClassifier,
        retriever: Retriever,
        templates: dict[str, str],
        knowledge_base: pd.DataFrame,
    ) -> None:
        self.config = config
        self.classifier = classifier
        self.retriever = retriever
        self.templates = templates
        self.knowledge_base = knowledge_base
        self.class_names = [str(c) for c in classifier.class_names]
        if self.class_names != [str(c) for c in config["class_names"]]:
            raise ConfigError(
                "the classifier's intents differ from those the assistant was built with",
                hint="rebuild the assistant: polyculture support RUN_DIR ...",
            )
        thresholds = config["thresholds"]
        self.template_threshold = _threshold_value(thresholds["template"])
        self.retrieval_threshold = _threshold_value(thresholds["retrieval"])
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, run_dir: str | Path, classifier: IntentClassifier | None = None
    ) -> SupportAssistant:
        """Load ``RUN_DIR/support/`` and the intent member (:func:`load_predictor`).

        Raises
        ------
        RunStoreError
            The assistant was not built, or its files are incomplete.
        ConfigError
            The index needs MiniLM and the text extra is missing.
        """
        results = load_run(run_dir)
        config = load_support_config(results.root)
        folder = results.root / SUPPORT_DIR
        try:
            answers = pd.read_parquet(folder / "answers.parquet")
            knowledge_base = pd.read_parquet(folder / "knowledge_base.parquet")
            retriever = Retriever.load(folder, config["encoder"])
        except (OSError, ValueError, KeyError) as err:
            raise RunStoreError(
                f"'{folder}' is incomplete ({err})", hint="build it again with polyculture support"
            ) from None
        if retriever.encoder == "minilm":
            _resolve_encoder("minilm")  # a clear error without the text extra
        if classifier is None:
            from polyculture.run.predictor import load_predictor

            classifier = load_predictor(results, str(config["member_id"]))
        templates = dict(
            zip(answers["intent"].astype(str), answers["answer"].astype(str), strict=True)
        )
        return cls(config, classifier, retriever, templates, knowledge_base)

    def answer(self, text: str) -> SupportAnswer:
        """Answer one message.

        Examples
        --------
        >>> class Fixed:
        ...     class_names = ("card", "other")
        ...     def predict_texts(self, texts):
        ...         return np.array([[0.9, 0.1]] * len(texts))
        >>> config = {"class_names": ["card", "other"], "human_answer": "A person will help.",
        ...           "thresholds": {"template": {"value": 0.8}, "retrieval": {"value": 0.5}}}
        >>> kb = pd.DataFrame({"question": ["Fees?"], "answer": ["None."], "source": ["help"]})
        >>> assistant = SupportAssistant(config, Fixed(), Retriever.fit(["Fees?"], "tfidf"),
        ...                              {"card": "Freeze it in the app."}, kb)
        >>> assistant.answer("I lost my card").route
        'template'
        """
        return self.answer_many([text])[0]

    def answer_many(self, texts: Sequence[str]) -> list[SupportAnswer]:
        """Answer several messages (one batch through each model)."""
        with self._lock:
            proba = np.asarray(self.classifier.predict_texts(list(texts)), dtype=np.float64)
            predicted = proba.argmax(axis=1)  # (n,)
            confidence = proba.max(axis=1)  # (n,)
            intents = [self.class_names[int(i)] for i in predicted]
            templated = np.array([intent in self.templates for intent in intents])
            search = ~(templated & (confidence >= self.template_threshold))
            best = np.zeros(len(texts), dtype=np.int64)
            similarity = np.full(len(texts), -np.inf)
            if search.any():
                rows = np.flatnonzero(search)
                found, scores = self.retriever.search([texts[int(i)] for i in rows])
                best[rows], similarity[rows] = found, scores
        routes = choose_routes(
            confidence, templated, similarity, self.template_threshold, self.retrieval_threshold
        )
        out = []
        for i, route in enumerate(routes.tolist()):
            intent = intents[i]
            if route == "template":
                answer, source = self.templates[intent], f"template:{intent}"
            elif route == "retrieval":
                entry = self.knowledge_base.iloc[int(best[i])]
                answer, source = str(entry["answer"]), str(entry["source"])
            else:
                answer, source = str(self.config["human_answer"]), None
            out.append(
                SupportAnswer(
                    intent=intent,
                    confidence=float(confidence[i]),
                    answer=answer,
                    route=route,
                    source=source,
                    similarity=float(similarity[i]) if search[i] else None,
                )
            )
        return out


def _threshold_value(summary: dict[str, Any]) -> float:
    value = summary.get("value")
    return math.inf if value is None else float(value)
