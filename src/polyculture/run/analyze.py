"""Zoo-level measures computed from a run directory's stored tables and representations.

After a study trains (or an audit loads predictions), :func:`analyze_run` reads
``tables/predictions`` (and the members' probe representations, where they exist) and writes:

* ``tables/agreement.parquet``: one row per (split, member_a, member_b, measure) — disagreement,
  Cohen's kappa, error consistency, same-wrong rate and its chance level, double fault, Q, rho;
* ``tables/homogenization.parquet``: one row per (split, scope) — systemic failure (observed,
  expected under independence, ratio, bootstrap CIs), the failure-count distance to the
  Poisson-binomial, H_avg / H_unif / H_worst (per group when the task has groups);
* ``tables/failure_counts.parquet``: one row per (split, scope, k) — observed vs Poisson-binomial;
* ``tables/diversity.parquet``: one row per (split, scope, measure) — Kuncheva & Whitaker;
* ``tables/ecosystems.parquet`` and ``tables/ecosystem_comparisons.parquet``: per named ecosystem
  of the study, the systemic-failure ratio, mean error consistency and mean CKA with intervals,
  and paired comparisons between ecosystems;
* ``tables/similarity.parquet``: one row per (member_a, layer_a, member_b, layer_b, measure) —
  linear CKA (and debiased CKA) of the final representations of every pair of members, and
  layer x layer CKA between one member (the first seed) of every pair of models.

A scope is the whole zoo (``zoo``), one family (``family:cnn``) or one model over its seeds
(``model:cnn(width=32)``) when it holds at least two members.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from polyculture.data.task import join_groups
from polyculture.measure.agreement import pairwise_agreement
from polyculture.measure.diversity import diversity_report
from polyculture.measure.ecosystem import Ecosystem, compare_ecosystems
from polyculture.measure.homogenization import (
    failure_count_distribution,
    homogenization,
    systemic_failure,
)
from polyculture.measure.similarity import linear_cka
from polyculture.run.store import RunStore, write_table
from polyculture.zoo.base import final_layer

TEST_LIKE = "test"
"""Splits analysed: ``test`` and the shifted test sets (``test_*``), not validation."""


def _test_splits(predictions: pd.DataFrame) -> list[str]:
    return sorted(s for s in predictions["split"].unique() if str(s).startswith(TEST_LIKE))


def _matrices(
    predictions: pd.DataFrame, split: str, member_ids: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances, labels ``(n,)`` and predictions ``(n, m)`` of ``member_ids`` on ``split``."""
    rows = predictions[(predictions["split"] == split) & predictions["member_id"].isin(member_ids)]
    wide = rows.pivot(index="instance", columns="member_id", values="prediction")[member_ids]
    labels = rows.drop_duplicates("instance").set_index("instance")["label"].loc[wide.index]
    return wide.index.to_numpy(), labels.to_numpy(np.int64), wide.to_numpy(np.int64)


def _scopes(members: pd.DataFrame) -> Iterator[tuple[str, list[str]]]:
    """(scope, member ids): the zoo, then each family and each model with >= 2 members.

    A scope with the same members as an earlier one (a family with one model) is skipped.
    """
    seen: set[frozenset[str]] = set()
    candidates = [("zoo", members["member_id"].tolist())]
    for column, prefix in (("family", "family"), ("name", "model")):
        for value, group in members.groupby(column, sort=False):
            candidates.append((f"{prefix}:{value}", group["member_id"].tolist()))
    for scope, ids in candidates:
        if len(ids) >= 2 and frozenset(ids) not in seen:
            seen.add(frozenset(ids))
            yield scope, ids


def analyze_run(
    store: RunStore,
    *,
    seed: int = 0,
    n_resamples: int = 2000,
    ecosystems: dict[str, list[str]] | None = None,
) -> None:
    """Compute the zoo-level tables of a run directory (see the module docstring).

    Members that failed are left out. With fewer than two usable members the agreement,
    homogenization, failure-count and diversity tables are written empty (they compare members).
    ``ecosystems`` (name -> model display names) adds ``tables/ecosystems`` and
    ``tables/ecosystem_comparisons`` (see :func:`polyculture.measure.ecosystem.compare_ecosystems`).
    """
    members = store.table("members")
    members = members[members["status"] == "ok"].reset_index(drop=True)
    predictions = store.table("predictions")
    groups = _groups(store)
    agreement_rows: list[dict[str, Any]] = []
    homogenization_rows: list[dict[str, Any]] = []
    count_frames: list[pd.DataFrame] = []
    diversity_rows: list[dict[str, Any]] = []
    ids = members["member_id"].tolist()
    if len(ids) >= 2:
        for split in _test_splits(predictions):
            instances, labels, predicted = _matrices(predictions, split, ids)
            correct = predicted == labels[:, None]  # (n, m)
            for measure, matrix in pairwise_agreement(predicted, labels).items():
                for a, b in zip(*np.triu_indices(len(ids)), strict=True):
                    agreement_rows.append(
                        {
                            "split": split,
                            "member_a": ids[a],
                            "member_b": ids[b],
                            "measure": measure,
                            "value": float(matrix[a, b]),
                        }
                    )
            group_labels = None
            if groups is not None:
                group_labels = join_groups(groups.loc[instances])
            position = {member_id: j for j, member_id in enumerate(ids)}
            for scope, scope_ids in _scopes(members):
                columns = [position[i] for i in scope_ids]
                scope_correct = correct[:, columns]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # degenerate cases are NaN with notes
                    homogenization_rows.append(
                        _homogenization_row(
                            split, scope, scope_correct, group_labels, seed, n_resamples
                        )
                    )
                    for measure, value in diversity_report(scope_correct).items():
                        diversity_rows.append(
                            {"split": split, "scope": scope, "measure": measure, "value": value}
                        )
                counts = failure_count_distribution(scope_correct).to_frame()
                count_frames.append(counts.assign(split=split, scope=scope))
    tables = store.tables_dir
    write_table(
        pd.DataFrame(agreement_rows, columns=AGREEMENT_COLUMNS), tables / "agreement.parquet"
    )
    write_table(pd.DataFrame(homogenization_rows), tables / "homogenization.parquet", csv=True)
    write_table(
        pd.concat(count_frames, ignore_index=True) if count_frames else pd.DataFrame(),
        tables / "failure_counts.parquet",
    )
    write_table(pd.DataFrame(diversity_rows), tables / "diversity.parquet")
    write_table(_similarity(store, members), tables / "similarity.parquet")
    summary, comparisons = _ecosystem_tables(store, members, predictions, ecosystems or {}, seed)
    write_table(summary, tables / "ecosystems.parquet", csv=True)
    write_table(comparisons, tables / "ecosystem_comparisons.parquet", csv=True)


def _ecosystem_tables(
    store: RunStore,
    members: pd.DataFrame,
    predictions: pd.DataFrame,
    ecosystems: dict[str, list[str]],
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ecosystem statistics on the test split (empty tables when none is defined or usable)."""
    inputs: dict[str, Ecosystem] = {}
    for name, models in ecosystems.items():
        ids = members[members["name"].isin(models)]["member_id"].tolist()
        if len(ids) < 2:
            warnings.warn(
                f"ecosystem '{name}' has fewer than two members that trained; left out",
                stacklevel=2,
            )
            continue
        _, labels, predicted = _matrices(predictions, TEST_LIKE, ids)
        representations: list[np.ndarray | None] = []
        for member_id in ids:
            layers = store.representations(member_id)
            representations.append(layers[final_layer(list(layers))] if layers else None)
        inputs[name] = Ecosystem(predicted == labels[:, None], representations)
    if not inputs:
        return pd.DataFrame(), pd.DataFrame()
    return compare_ecosystems(inputs, seed=seed)


AGREEMENT_COLUMNS = ["split", "member_a", "member_b", "measure", "value"]
SIMILARITY_COLUMNS = [
    "member_a",
    "layer_a",
    "member_b",
    "layer_b",
    "measure",
    "value",
    "ci_low",
    "ci_high",
]


def _groups(store: RunStore) -> pd.DataFrame | None:
    path = store.tables_dir / "groups.parquet"
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    frame = frame[frame["split"] == TEST_LIKE].drop(columns="split")
    return frame.set_index("instance")


def _homogenization_row(
    split: str,
    scope: str,
    correct: np.ndarray,
    group_labels: pd.Series | None,
    seed: int,
    n_resamples: int,
) -> dict[str, Any]:
    systemic = systemic_failure(correct, n_resamples=n_resamples, seed=seed)
    counts = failure_count_distribution(correct)
    individual = homogenization(correct)
    row: dict[str, Any] = {
        "split": split,
        "scope": scope,
        "members": correct.shape[1],
        "instances": correct.shape[0],
        "mean_error_rate": float(systemic.error_rates.mean()),
        "systemic_observed": systemic.observed,
        "systemic_observed_ci_low": systemic.observed_ci[0],
        "systemic_observed_ci_high": systemic.observed_ci[1],
        "systemic_expected": systemic.expected,
        "systemic_ratio": systemic.ratio,
        "systemic_ratio_ci_low": systemic.ratio_ci[0],
        "systemic_ratio_ci_high": systemic.ratio_ci[1],
        "failure_count_tv": counts.total_variation,
        "h_avg": individual.h_avg,
        "h_unif": individual.h_unif,
        "h_worst": individual.h_worst,
        # dict.fromkeys: both measures explain the same never-failing members in the same words
        "note": "; ".join(dict.fromkeys(filter(None, [systemic.note, individual.note]))),
    }
    if group_labels is not None:
        grouped = homogenization(correct, group_labels.to_numpy())
        row |= {
            "group_h_avg": grouped.h_avg,
            "group_h_unif": grouped.h_unif,
            "group_h_worst": grouped.h_worst,
        }
    return row


def _similarity(store: RunStore, members: pd.DataFrame) -> pd.DataFrame:
    representations = {
        member_id: store.representations(member_id) for member_id in members["member_id"]
    }
    representations = {k: v for k, v in representations.items() if v}
    final = {member_id: final_layer(list(layers)) for member_id, layers in representations.items()}
    rows: list[dict[str, Any]] = []
    ids = list(representations)
    for i, a in enumerate(ids):  # final representation, every pair of members
        for b in ids[i:]:
            for debiased in (False, True):
                rows.append(_cka_row(a, final[a], b, final[b], representations, debiased))
    # One member (the first seed) per model: every layer against every layer.
    first = members[members["member_id"].isin(ids)].drop_duplicates("name")["member_id"].tolist()
    for i, a in enumerate(first):
        for b in first[i:]:
            layers_a, layers_b = list(representations[a]), list(representations[b])
            for index_a, layer_a in enumerate(layers_a):
                # within one member, CKA is symmetric: each unordered pair of layers once
                for layer_b in layers_b[index_a + 1 :] if a == b else layers_b:
                    if (layer_a, layer_b) == (final[a], final[b]):
                        continue  # final x final is already above
                    rows.append(_cka_row(a, layer_a, b, layer_b, representations, False))
    return pd.DataFrame(rows, columns=SIMILARITY_COLUMNS)


def _cka_row(
    a: str,
    layer_a: str,
    b: str,
    layer_b: str,
    representations: dict[str, dict[str, np.ndarray]],
    debiased: bool,
) -> dict[str, Any]:
    x, y = representations[a][layer_a], representations[b][layer_b]
    try:
        value = linear_cka(x, y, debiased=debiased)
    except ValueError:  # a constant representation (e.g. a dead layer): CKA is undefined
        value = float("nan")
    return {
        "member_a": a,
        "layer_a": layer_a,
        "member_b": b,
        "layer_b": layer_b,
        "measure": "linear_cka_debiased" if debiased else "linear_cka",
        "value": value,
        "ci_low": np.nan,
        "ci_high": np.nan,
    }
