"""Recommendation studies: train content-based recommenders and baselines, measure, report.

A recommend study (``kind = "recommend"``; the built-in one is ``recommend``) reads interactions
and item texts (:mod:`polyculture.data.interactions`), keeps the liked ones (``rating >=
min_rating``), splits them per user in time (last liked = test, the one before = validation),
trains every ``[[members]]`` entry for every seed (:mod:`polyculture.train.recommender`) and
ranks, for each evaluated user, **all catalogue items the user has not liked before** (no sampled
negatives). It writes a run directory that ``polyculture report`` and ``polyculture show`` read:

::

    study.toml, task.json, timing.json       as every run (task.json: sizes, k, cleaning log)
    members/<id>/                            member.json, weights.safetensors (content members),
                                             representations.safetensors (``items``: final item
                                             embeddings, ``users``: learned user embeddings),
                                             history.parquet; DONE written last
    tables/members.parquet|.csv              one row per member: status, cost, test metrics + CIs
    tables/history.parquet                   one row per (member, epoch)
    tables/recommend_metrics.parquet         one row per (member, metric): value, ci_low, ci_high
    tables/recommend_overlap.parquet         one row per pair of members: mean Jaccard of top-k,
                                             linear CKA of item embeddings (trained members)
    tables/recommend_lists.parquet           each member's test top-k list per user, with scores
    tables/recommend_items.parquet           items: text fields, likes (all liked interactions)
    tables/recommend_liked.parquet           liked interactions with their split
    tables/recommend_users.parquet           users: ratings, likes, evaluated or why excluded,
                                             index (row of a learned user embedding, or -1)

A member id hashes the member's spec, the data fingerprint, the split settings and the seed, so a
killed run reuses its finished members; a member whose loss diverges is recorded as failed and the
study goes on. :func:`recommend_for_user` answers ``polyculture recommend``.
"""

from __future__ import annotations

import json
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import tomli_w
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from polyculture.data.interactions import (
    InteractionData,
    TemporalSplit,
    implicit_feedback,
    load_interactions,
    temporal_split,
)
from polyculture.errors import ConfigError, DataError, RunStoreError
from polyculture.measure import ranking
from polyculture.measure.statistics import bootstrap_mean_ci
from polyculture.run.results import RunResults, load_run
from polyculture.run.store import RunStore, package_versions, write_table, write_text
from polyculture.run.study import apply_override
from polyculture.train.loop import DivergenceError
from polyculture.train.recommender import (
    ItemFeatures,
    RecommendationData,
    RecommenderSpec,
    check_spec,
    item_features,
    popularity_scores,
    random_scores,
    train_recommender,
)
from polyculture.validation import as_config_error
from polyculture.zoo.base import stable_hash

BUILTIN_NAME = "recommend"
STUDY_KIND = "recommend"
METRICS = ("hit_rate", "ndcg", "mrr", "coverage", "gini", "novelty", "user_overlap")
"""Test metrics of every member (``test_<metric>`` columns with ``_ci_low``/``_ci_high``)."""
TEST_STAGE, VALIDATION_STAGE, SERVE_STAGE = 2, 1, 3
"""Random-baseline streams: one per stage, so the test lists are not the validation lists."""


class RecommendDataSpec(BaseModel):
    """``[data]`` of a recommend study."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str | None = None
    layout: Literal["auto", "movielens", "csv"] = "auto"
    min_rating: float = 4.0
    min_interactions: int = Field(5, ge=3)


class RecommendEvaluateSpec(BaseModel):
    """``[evaluate]``: the list length and bootstrap replicates (CIs over users)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int = Field(10, ge=1)
    n_resamples: int = Field(1000, ge=10)


class RecommendStudy(BaseModel):
    """A recommend study file (``kind = "recommend"``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = BUILTIN_NAME
    kind: Literal["recommend"] = "recommend"
    description: str = ""
    seeds: list[int] = [0]
    data: RecommendDataSpec = RecommendDataSpec()
    evaluate: RecommendEvaluateSpec = RecommendEvaluateSpec()
    members: list[RecommenderSpec] = Field(default_factory=list, min_length=1)


def is_recommend_study(source: str | Path) -> bool:
    """True for the built-in ``recommend`` study and TOML files with ``kind = "recommend"``.

    Examples
    --------
    >>> is_recommend_study("recommend"), is_recommend_study("mnist1d")
    (True, False)
    """
    path = Path(source)
    if str(source) == BUILTIN_NAME and not path.exists():
        return True
    if path.suffix != ".toml" or not path.is_file():
        return False
    try:
        return bool(tomllib.loads(path.read_text(encoding="utf-8")).get("kind") == STUDY_KIND)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
        return False  # the classification loader reports the problem


def load_recommend_study(source: str | Path, overrides: list[str] = ()) -> RecommendStudy:  # type: ignore[assignment]
    """The study by name (``recommend``) or file, with ``--set key=value`` overrides applied.

    Raises
    ------
    ConfigError
        A missing file, bad TOML, an unknown key or a bad value (one line with a fix).

    Examples
    --------
    >>> study = load_recommend_study("recommend", ["evaluate.k=20"])
    >>> study.evaluate.k, study.members[0].kind
    (20, 'popularity')
    """
    path = Path(source)
    if str(source) == BUILTIN_NAME and not path.exists():
        text = (resources.files("polyculture") / "studies" / f"{BUILTIN_NAME}.toml").read_text()
        origin = BUILTIN_NAME
    elif path.is_file():
        text, origin = path.read_text(encoding="utf-8"), path.name
    else:
        raise ConfigError(
            f"no recommend study file '{source}'", hint="give a .toml path or 'recommend'"
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"'{source}' is not valid TOML: {err}", hint="fix the syntax") from None
    for item in overrides:
        apply_override(raw, item, RecommendStudy)
    try:
        study = RecommendStudy.model_validate(raw)
    except ValidationError as err:
        raise as_config_error(err, RecommendStudy, origin=origin) from None
    for spec in study.members:
        check_spec(spec)
        if spec.kind == "content" and spec.encoder == "member":
            from polyculture.run.members import find_member

            # A missing source run or member fails now, not after other members trained.
            find_member(load_run(spec.params["run"]).members, spec.params["member"])
    labels = [spec.label() for spec in study.members]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(
            f"two members are both named '{repeated[0]}'", hint="give each member its own name"
        )
    if not study.seeds or len(set(study.seeds)) != len(study.seeds):
        raise ConfigError(f"seeds {study.seeds} must be distinct", hint="e.g. seeds = [0, 1]")
    return study


# --- data -------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """Everything a member needs, with the tables the run directory keeps."""

    raw: InteractionData
    split: TemporalSplit
    data: RecommendationData
    users: pd.DataFrame  # every user of the raw data: ratings, likes, status
    liked: pd.DataFrame  # liked interactions with their split
    fingerprint: str


def prepare_data(study: RecommendStudy) -> PreparedData:
    """Read, filter and split the study's data (before anything is written).

    Raises
    ------
    ConfigError
        No data path.
    DataError
        Missing or malformed files; no user with enough liked interactions.

    Examples
    --------
    >>> prepare_data(load_recommend_study("recommend"))
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: the recommend study needs its data folder; ...
    """
    if not study.data.path:
        raise ConfigError(
            "the recommend study needs its data folder",
            hint="pass --data-dir DIR (MovieLens 100K's ml-100k, or interactions.csv + items.csv)",
        )
    raw = load_interactions(study.data.path, study.data.layout)
    liked = implicit_feedback(raw.interactions, study.data.min_rating)
    split = temporal_split(liked, study.data.min_interactions)
    if not split.users:
        raise DataError(
            f"no user has {study.data.min_interactions} or more liked interactions "
            f"(rating >= {study.data.min_rating})",
            hint="lower data.min_interactions or data.min_rating",
        )
    item_index = {item: i for i, item in enumerate(raw.items["item"])}
    user_index = {user: u for u, user in enumerate(split.users)}

    def indices(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        users = frame["user"].map(user_index).to_numpy(np.int64)
        items = frame["item"].map(item_index).to_numpy(np.int64)
        return users, items

    train_users, train_items = indices(split.train)
    _, validation_items = indices(split.validation.sort_values("user"))
    _, test_items = indices(split.test.sort_values("user"))
    data = RecommendationData(
        item_texts=list(raw.items["text"]),
        n_users=len(split.users),
        train_users=train_users,
        train_items=train_items,
        validation_items=validation_items,
        test_items=test_items,
    )
    parts = [
        split.train.assign(split="train"),
        split.validation.assign(split="validation"),
        split.test.assign(split="test"),
        liked[liked["user"].isin(set(split.excluded))].assign(split="excluded"),
    ]
    liked_table = pd.concat(parts, ignore_index=True).sort_values(
        ["user", "timestamp", "item"], kind="stable", ignore_index=True
    )
    ratings = raw.interactions.groupby("user")["item"].size()
    likes = liked.groupby("user")["item"].size().reindex(ratings.index, fill_value=0)
    evaluated = set(split.users)
    status = [
        "evaluated"
        if user in evaluated
        else ("no liked interaction" if likes[user] == 0 else "too few liked interactions")
        for user in ratings.index
    ]
    users = pd.DataFrame(
        {
            "user": ratings.index.astype(str),
            "ratings": ratings.to_numpy(np.int64),
            "liked": likes.to_numpy(np.int64),
            "status": status,
        }
    )
    users = users.iloc[_natural_order(users["user"])].reset_index(drop=True)
    # The row of a learned user embedding (training order); -1 for users not evaluated.
    users["index"] = users["user"].map(user_index).fillna(-1).astype(np.int64)
    fingerprint = stable_hash(
        {
            "data": raw.fingerprint(),
            "min_rating": study.data.min_rating,
            "min_interactions": study.data.min_interactions,
        }
    )
    return PreparedData(raw, split, data, users, liked_table, fingerprint)


def _natural_order(values: pd.Series) -> np.ndarray:
    """Numeric ids in numeric order (2 before 10), then the others as text."""
    numbers = pd.to_numeric(values, errors="coerce")
    frame = pd.DataFrame({"missing": numbers.isna(), "number": numbers.fillna(0), "text": values})
    return frame.sort_values(["missing", "number", "text"], kind="stable").index.to_numpy()


# --- members ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecommendPlan:
    """One member to train: its spec, seed and id."""

    spec: RecommenderSpec
    seed: int
    member_id: str

    @property
    def label(self) -> str:
        """How messages name the member."""
        return self.spec.label()


def plan_members(study: RecommendStudy, fingerprint: str) -> list[RecommendPlan]:
    """Every (member, seed) of the study; the popularity baseline runs once (it has no seed).

    Examples
    --------
    >>> study = load_recommend_study("recommend", ["seeds=[0, 1]"])
    >>> [(plan.label, plan.seed) for plan in plan_members(study, "data")][:3]
    [('popularity', 0), ('random', 0), ('random', 1)]
    """
    plans = []
    for spec in study.members:
        seeds = study.seeds[:1] if spec.kind == "popularity" else study.seeds
        for seed in seeds:
            # k picks a content member's best epoch (validation NDCG@k): part of what it is
            key = {"spec": spec.model_dump(mode="json"), "data": fingerprint, "seed": seed}
            if spec.kind == "content":
                key["k"] = study.evaluate.k
            member_id = stable_hash(key)
            plans.append(RecommendPlan(spec, seed, member_id))
    return plans


def member_scores(
    kind: str,
    arrays: dict[str, np.ndarray],
    seed: int,
    history_users: np.ndarray,
    history_items: np.ndarray,
    users: np.ndarray,
    n_items: int,
    stage: int,
) -> np.ndarray:
    """Scores ``(len(users), n_items)`` of a stored member for ``users`` given their histories.

    ``history_users`` index into ``users`` positions (0..len(users)-1); content members average
    their stored item embeddings over each history and add the learned user embedding (when
    they have one, for users the training knew: index < its rows).

    Examples
    --------
    >>> items = {"items": np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])}
    >>> member_scores("content", items, 0, np.array([0]), np.array([0]), np.array([0]), 3, 2)
    array([[1., 0., 1.]])
    """
    n = len(users)
    if kind == "popularity":
        return popularity_scores(arrays["likes"], n)
    if kind == "random":
        return random_scores(seed, users, n_items, stage)
    items = arrays["items"].astype(np.float64)  # (items, dim)
    sums = np.zeros((n, items.shape[1]))
    np.add.at(sums, history_users, items[history_items])
    counts = np.bincount(history_users, minlength=n).astype(np.float64)
    vectors = sums / np.maximum(counts, 1.0)[:, None]  # (n, dim)
    if "users" in arrays:
        learned = arrays["users"].astype(np.float64)
        known = users < len(learned)
        vectors[known] += learned[users[known]]
    return vectors @ items.T  # (n, items)


def member_features(run_dir: str | Path, member: str, texts: list[str] | Any) -> ItemFeatures:
    """Frozen item features from a text member of another run: its final representation.

    Raises
    ------
    ConfigError, RunStoreError
        An unknown run or member, or a member that cannot read raw text.

    Examples
    --------
    >>> member_features("/nonexistent", "cnn", ["a title"])
    Traceback (most recent call last):
    ...
    polyculture.errors.RunStoreError: '/nonexistent' is not a run directory (no study.toml); ...
    """
    from polyculture.run.predictor import load_predictor

    predictor = load_predictor(run_dir, member)
    representation = np.asarray(predictor.represent_texts(list(texts)), dtype=np.float32)
    return ItemFeatures(torch.as_tensor(representation))  # (items, d)


def _validator(data: RecommendationData, k: int) -> Callable[[np.ndarray], float]:
    seen = data.seen("validation")

    def validate(scores: np.ndarray) -> float:
        ranks = ranking.rank_of_targets(scores, data.validation_items, seen)
        return float(ranking.ndcg(ranks, k).mean())

    return validate


def _train_member(
    plan: RecommendPlan,
    prepared: PreparedData,
    study: RecommendStudy,
    features: dict[str, ItemFeatures],
) -> tuple[
    dict[str, Any], dict[str, np.ndarray], dict[str, torch.Tensor] | None, pd.DataFrame, str
]:
    """Train (content) or compute (baselines) one member: record, arrays, weights, history."""
    spec, data = plan.spec, prepared.data
    record: dict[str, Any] = {
        "member_id": plan.member_id,
        "name": plan.label,
        "family": spec.family,
        "kind": "torch" if spec.kind == "content" else "baseline",
        "seed": plan.seed,
        "spec": spec.model_dump(mode="json"),
        "status": "ok",
        "reason": "",
        "n_parameters": 0,
        "train_seconds": 0.0,
        "steps": 0,
        "best_epoch": 0,
    }
    if spec.kind == "popularity":
        likes = np.bincount(data.train_items, minlength=data.n_items)
        return record, {"likes": likes.astype(np.float32)}, None, pd.DataFrame(), ""
    if spec.kind == "random":
        return record, {}, None, pd.DataFrame(), ""
    key = stable_hash({"encoder": spec.encoder, "params": spec.params, "len": spec.max_length})
    try:
        if key not in features:
            features[key] = (
                member_features(spec.params["run"], spec.params["member"], data.item_texts)
                if spec.encoder == "member"
                else item_features(spec, data.item_texts)
            )
        trained = train_recommender(
            spec, data, plan.seed, _validator(data, study.evaluate.k), features[key]
        )
    except DivergenceError as err:
        record.update(status="failed", reason=str(err))
        return record, {}, None, err.history, traceback.format_exc()
    except (RuntimeError, ValueError, FloatingPointError) as err:
        # Numerical or resource failures of one member must not stop the study.
        reason = str(err).splitlines()[0] if str(err) else ""
        record.update(status="failed", reason=f"{type(err).__name__}: {reason}")
        return record, {}, None, pd.DataFrame(), traceback.format_exc()
    arrays = trained.arrays()
    if not all(np.isfinite(values).all() for values in arrays.values()):
        record.update(status="failed", reason="non-finite item or user embeddings")
        return record, {}, None, trained.history, ""
    record.update(
        n_parameters=trained.n_parameters,
        train_seconds=trained.seconds,
        steps=trained.steps,
        best_epoch=trained.best_epoch,
    )
    weights = {name: value.detach().clone() for name, value in trained.model.state_dict().items()}
    return record, arrays, weights, trained.history, ""


def _evaluate_member(
    record: dict[str, Any],
    arrays: dict[str, np.ndarray],
    prepared: PreparedData,
    study: RecommendStudy,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Test scores -> top-k lists ``(users, k)``, their scores, and per-user metric arrays."""
    data = prepared.data
    users = np.arange(data.n_users)
    history_users, history_items = data.history("test")
    kind = str(record["spec"]["kind"])
    if kind == "popularity":  # at test time the validation likes count too
        arrays = {"likes": np.bincount(history_items, minlength=data.n_items).astype(np.float32)}
    scores = member_scores(
        kind,
        arrays,
        int(record["seed"]),
        history_users,
        history_items,
        users,
        data.n_items,
        TEST_STAGE,
    )
    seen = data.seen("test")
    k = study.evaluate.k
    lists = ranking.top_k_items(scores, k, seen)
    ranks = ranking.rank_of_targets(scores, data.test_items, seen)
    counts = np.bincount(history_items, minlength=data.n_items)
    per_user = {
        "hit_rate": ranking.hit_rate(ranks, k),
        "ndcg": ranking.ndcg(ranks, k),
        "mrr": ranking.reciprocal_rank(ranks),
        "novelty": ranking.novelty(lists, counts, data.n_users),
        "user_overlap": ranking.between_user_overlap(lists, data.n_items),
    }
    return lists, np.take_along_axis(scores, lists, axis=1), per_user


def _metric_rows(
    member_id: str,
    lists: np.ndarray,
    per_user: dict[str, np.ndarray],
    n_items: int,
    n_resamples: int,
) -> list[dict[str, Any]]:
    """One row per metric: value and 95% bootstrap CI over users."""
    rows = []
    for metric in METRICS:
        if metric in per_user:
            values = per_user[metric]
            value = float(values.mean())
            low, high = (
                bootstrap_mean_ci(values, n_resamples=n_resamples)
                if len(values) > 1
                else (np.nan, np.nan)
            )
        else:
            statistic = {
                "coverage": ranking.catalogue_coverage,
                "gini": ranking.exposure_gini,
            }[metric]
            value = statistic(lists, n_items)
            low, high = ranking.catalogue_statistic_ci(
                statistic, lists, n_items, n_resamples=n_resamples
            )
        rows.append(
            {
                "member_id": member_id,
                "metric": metric,
                "value": value,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return rows


def _overlap_rows(
    lists: dict[str, np.ndarray], embeddings: dict[str, np.ndarray], n_resamples: int
) -> list[dict[str, Any]]:
    """Every pair of members: mean Jaccard overlap of their top-k lists for the same user, and
    (trained members) the linear CKA of their item embeddings (NaN for baselines)."""
    from polyculture.measure.similarity import linear_cka

    ids = list(lists)
    rows = []
    for a_index, a in enumerate(ids):
        for b in ids[a_index + 1 :]:
            values = ranking.jaccard_per_user(lists[a], lists[b])
            low, high = bootstrap_mean_ci(values, n_resamples=n_resamples)
            cka = (
                linear_cka(embeddings[a], embeddings[b])
                if a in embeddings and b in embeddings
                else np.nan
            )
            rows.append(
                {
                    "member_a": a,
                    "member_b": b,
                    "value": float(values.mean()),
                    "ci_low": low,
                    "ci_high": high,
                    "users": len(values),
                    "item_cka": cka,
                }
            )
    return rows


MemberCallback = Callable[[RecommendPlan, dict[str, Any], bool], None]


def run_recommend(
    source: str | Path,
    out: str | Path = "runs",
    overrides: list[str] = (),  # type: ignore[assignment]
    *,
    on_start: Callable[[int, int], None] | None = None,
    on_member: MemberCallback | None = None,
) -> RunResults:
    """Run (or resume) a recommend study into ``OUT/<name>`` and build its report.

    Parameters
    ----------
    source
        ``recommend`` (built-in) or a TOML file with ``kind = "recommend"``.
    out
        Parent folder of run directories.
    overrides
        ``key.path=value`` strings (``data.path=...`` for ``--data-dir``).
    on_start
        Called with (members to train, members reused) before training.
    on_member
        Called after each member with its plan, record and whether it was reused.

    Raises
    ------
    ConfigError, DataError
        Bad study or data (before the run directory is created).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "items.csv").write_text("item,title\\n" + "".join(
    ...     f"{i},title {i}\\n" for i in range(8)))
    >>> _ = (folder / "interactions.csv").write_text("user,item,rating,timestamp\\n" + "".join(
    ...     f"{u},{(u + t) % 8},1,{t}\\n" for u in range(4) for t in range(4)))
    >>> results = run_recommend("recommend", folder / "runs", [
    ...     f"data.path={str(folder)!r}", "data.min_rating=1", "data.min_interactions=3",
    ...     "evaluate.k=2",
    ...     "evaluate.n_resamples=20", "members=[{kind='popularity'}, {kind='random'}]"])
    >>> results.members["name"].tolist(), results.task["sizes"]["users"]
    (['popularity', 'random'], 4)
    """
    started = time.perf_counter()
    torch.set_num_threads(1)
    study = load_recommend_study(source, list(overrides))
    prepared = prepare_data(study)
    plans = plan_members(study, prepared.fingerprint)
    store = RunStore(Path(out) / study.name)
    store.root.mkdir(parents=True, exist_ok=True)
    store.clean_partial()
    _write_study(store, study, prepared)
    done = [p for p in plans if store.is_done(p.member_id)]
    if on_start is not None:
        on_start(len(plans) - len(done), len(done))
    features: dict[str, ItemFeatures] = {}
    records, histories, metric_rows = [], [], []
    lists: dict[str, np.ndarray] = {}
    embeddings: dict[str, np.ndarray] = {}  # (items, dim) final item embeddings
    list_rows = []
    trained = 0
    for plan in plans:
        reused = store.is_done(plan.member_id)
        if not reused:
            record, arrays, weights, history, detail = _train_member(
                plan, prepared, study, features
            )
            store.write_member(
                plan.member_id,
                record,
                probabilities={},
                representations=arrays,
                weights=weights,
                history=history,
                error_detail=detail,
            )
            trained += 1
        record = store.member_record(plan.member_id)
        arrays = store.representations(plan.member_id)
        history = store.history(plan.member_id)
        if len(history):
            histories.append(history.assign(member_id=plan.member_id))
        if record["status"] == "ok":
            top, top_scores, per_user = _evaluate_member(record, arrays, prepared, study)
            lists[plan.member_id] = top
            if "items" in arrays:
                embeddings[plan.member_id] = arrays["items"]
            rows = _metric_rows(
                plan.member_id, top, per_user, prepared.data.n_items, study.evaluate.n_resamples
            )
            metric_rows.extend(rows)
            for row in rows:
                record[f"test_{row['metric']}"] = row["value"]
                record[f"test_{row['metric']}_ci_low"] = row["ci_low"]
                record[f"test_{row['metric']}_ci_high"] = row["ci_high"]
            list_rows.append(_list_frame(plan.member_id, top, top_scores, prepared))
        records.append(record)
        if on_member is not None:
            on_member(plan, record, reused)
    _write_tables(store, records, histories, metric_rows, lists, embeddings, list_rows, study)
    timing = {
        "wall_seconds": time.perf_counter() - started,
        "workers": 1,
        "trained": trained,
        "reused": len(plans) - trained,
    }
    write_text(store.root / "timing.json", json.dumps(timing, indent=2))
    from polyculture.report import build_report

    build_report(store.root)
    return load_run(store.root)


def _list_frame(
    member_id: str, top: np.ndarray, scores: np.ndarray, prepared: PreparedData
) -> pd.DataFrame:
    users, k = top.shape
    item_ids = prepared.raw.items["item"].to_numpy()
    return pd.DataFrame(
        {
            "member_id": member_id,
            "user": np.repeat(np.asarray(prepared.split.users, dtype=object), k),
            "rank": np.tile(np.arange(1, k + 1), users),
            "item": item_ids[top.ravel()],
            "score": scores.ravel(),
        }
    )


def _write_study(store: RunStore, study: RecommendStudy, prepared: PreparedData) -> None:
    resolved = study.model_dump(mode="json", exclude_none=True)
    resolved["versions"] = package_versions()
    write_text(store.root / "study.toml", tomli_w.dumps(resolved))
    data = prepared.data
    excluded = prepared.users["status"].value_counts()
    cleaning = list(prepared.raw.cleaning)
    for status, step in (
        ("no liked interaction", f"users with no liked interaction (rating >= "
                                 f"{study.data.min_rating}), excluded"),
        ("too few liked interactions", f"users with fewer than {study.data.min_interactions} "
                                       "liked interactions, excluded"),
    ):  # fmt: skip
        cleaning.append({"step": step, "removed": int(excluded.get(status, 0))})
    task = {
        "name": prepared.raw.source,
        "modality": "text",
        "kind": STUDY_KIND,
        "classes": [],
        "k": study.evaluate.k,
        "ranking": "all catalogue items the user has not liked before (no sampled negatives)",
        "sizes": {
            "users": data.n_users,
            "items": data.n_items,
            "interactions": len(prepared.raw.interactions),
            "liked": len(prepared.liked),
            "train": len(data.train_items),
            "validation": data.n_users,
            "test": data.n_users,
        },
        "users_excluded": int(
            len(prepared.split.excluded) + excluded.get("no liked interaction", 0)
        ),
        "min_rating": study.data.min_rating,
        "min_interactions": study.data.min_interactions,
        "cleaning": cleaning,
    }
    write_text(store.root / "task.json", json.dumps(task, indent=2, default=str))
    tables = store.tables_dir
    items = prepared.raw.items.assign(
        likes=prepared.liked["item"]
        .value_counts()
        .reindex(prepared.raw.items["item"], fill_value=0)
        .to_numpy()
    )
    write_table(items, tables / "recommend_items.parquet")
    write_table(
        prepared.liked.astype({"user": str, "item": str}), tables / "recommend_liked.parquet"
    )
    write_table(prepared.users, tables / "recommend_users.parquet", csv=True)


def _write_tables(
    store: RunStore,
    records: list[dict[str, Any]],
    histories: list[pd.DataFrame],
    metric_rows: list[dict[str, Any]],
    lists: dict[str, np.ndarray],
    embeddings: dict[str, np.ndarray],
    list_rows: list[pd.DataFrame],
    study: RecommendStudy,
) -> None:
    tables = store.tables_dir
    members = pd.DataFrame(
        [
            {
                **{k: v for k, v in record.items() if k != "spec"},
                "params": json.dumps(record["spec"], sort_keys=True),
            }
            for record in records
        ]
    )
    write_table(members, tables / "members.parquet", csv=True)
    history = (
        pd.concat(histories, ignore_index=True)
        if histories
        else pd.DataFrame(
            columns=["member_id", "epoch", "step", "train_loss", "val_score", "seconds"]
        )
    )
    write_table(history, tables / "history.parquet")
    columns = ["member_id", "metric", "value", "ci_low", "ci_high"]
    write_table(
        pd.DataFrame(metric_rows, columns=columns), tables / "recommend_metrics.parquet", csv=True
    )
    overlap = pd.DataFrame(
        _overlap_rows(lists, embeddings, study.evaluate.n_resamples),
        columns=["member_a", "member_b", "value", "ci_low", "ci_high", "users", "item_cka"],
    )
    write_table(overlap, tables / "recommend_overlap.parquet", csv=True)
    list_columns = ["member_id", "user", "rank", "item", "score"]
    frame = (
        pd.concat(list_rows, ignore_index=True) if list_rows else pd.DataFrame(columns=list_columns)
    )
    write_table(frame, tables / "recommend_lists.parquet")


# --- serving ---------------------------------------------------------------------------------


@dataclass
class Recommendation:
    """A top-k answer for one user.

    Attributes
    ----------
    user
        The user id.
    member
        The member's display name (``popularity`` for a cold-start answer).
    member_id
        The member's id.
    cold_start
        True when the user has no liked interaction: the answer is the most popular items.
    message
        One line saying what the list is.
    items
        ``rank``, ``item``, ``title``, ``genres``, ``score``.
    """

    user: str
    member: str
    member_id: str
    cold_start: bool
    message: str
    items: pd.DataFrame


def _resolve_member(results: RunResults, member: str | None) -> pd.Series:
    members = results.members
    ok = members[members["status"] == "ok"]
    if ok.empty:
        raise RunStoreError(
            f"'{results.root}' has no successfully trained member", hint="rerun the study"
        )
    if member is None:  # the best member on the test NDCG
        return ok.loc[ok["test_ndcg"].astype(float).idxmax()]
    from polyculture.run.members import find_member

    return find_member(ok, member)  # failed members are not candidates


def recommend_for_user(
    run_dir: str | Path, user: str, k: int = 10, member: str | None = None
) -> Recommendation:
    """The top-``k`` unseen items for ``user`` from one member of a recommend run.

    The user's profile is every item they liked in the data (all splits); items they liked are
    never recommended. A user without any liked interaction gets the most popular items, and
    the answer says it is a cold start.

    Raises
    ------
    ConfigError
        ``k <= 0``, an unknown user, or an unknown member.
    RunStoreError
        ``run_dir`` is not a recommend run directory.

    Examples
    --------
    >>> recommend_for_user("/nonexistent", "196", k=0)
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: -k 0 must be at least 1; ...
    """
    if k <= 0:
        raise ConfigError(f"-k {k} must be at least 1", hint="ask for e.g. -k 10")
    results = load_run(run_dir)
    if results.study.get("kind") != STUDY_KIND:
        raise RunStoreError(
            f"'{results.root}' is not a recommend run",
            hint="pass the folder `polyculture run recommend --data-dir DIR` wrote",
        )
    store = results.store
    users = store.table("recommend_users")
    user = str(user).strip()
    if user not in set(users["user"].astype(str)):
        examples = ", ".join(users["user"].astype(str).head(3))
        raise ConfigError(
            f"unknown user '{user}' in '{results.root}'",
            hint=f"use a user id of the data ({len(users)} users, e.g. {examples})",
        )
    items = store.table("recommend_items")
    liked = store.table("recommend_liked")
    item_index = {str(item): i for i, item in enumerate(items["item"].astype(str))}
    history = np.array(
        [item_index[str(i)] for i in liked.loc[liked["user"].astype(str) == user, "item"]],
        dtype=np.int64,
    )
    n_items = len(items)
    k = min(k, n_items - len(history)) if n_items > len(history) else 0
    if k == 0:
        raise ConfigError(
            f"user '{user}' has liked every item", hint="there is nothing left to recommend"
        )
    if len(history) == 0:
        chosen = _popularity_member(results)
        scores = items["likes"].to_numpy(np.float64)[None, :]  # (1, items)
        cold = True
        message = (
            f"user '{user}' has no liked interaction: cold start, showing the {k} most popular "
            "items (popularity over all liked interactions)"
        )
    else:
        chosen = _resolve_member(results, member)
        record = store.member_record(str(chosen["member_id"]))
        kind = str(record["spec"]["kind"])
        arrays = store.representations(str(chosen["member_id"]))
        if kind == "popularity":
            arrays = {"likes": items["likes"].to_numpy(np.float32)}
        row = users[users["user"].astype(str) == user].iloc[0]
        # Learned user embeddings exist for evaluated users only (a row past the table otherwise).
        position = int(row["index"]) if int(row["index"]) >= 0 else len(users)
        index = position if kind != "random" else int(row.name)
        scores = member_scores(
            kind,
            arrays,
            int(record["seed"]),
            np.zeros(len(history), dtype=np.int64),
            history,
            np.array([index], dtype=np.int64),
            n_items,
            SERVE_STAGE,
        )
        cold = False
        message = (
            f"top {k} for user '{user}' from {chosen['name']} (seed {chosen['seed']}), "
            f"profile of {len(history)} liked item(s); liked items are left out"
        )
    seen = np.zeros((1, n_items), dtype=bool)
    seen[0, history] = True
    top = ranking.top_k_items(scores, k, seen)[0]
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, k + 1),
            "item": items["item"].astype(str).to_numpy()[top],
            "title": items["title"].astype(str).to_numpy()[top],
            "genres": items["genres"].astype(str).to_numpy()[top],
            "score": scores[0, top],
        }
    )
    name = "popularity" if cold else str(chosen["name"])
    return Recommendation(user, name, str(chosen["member_id"]), cold, message, frame)


def _popularity_member(results: RunResults) -> pd.Series:
    members = results.members
    popular = members[members["family"].astype(str) == "popularity"]
    if popular.empty:
        return pd.Series({"member_id": "", "name": "popularity", "seed": -1})
    return popular.iloc[0]
