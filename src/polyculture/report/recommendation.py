"""Report sections of a recommend run (``polyculture run recommend``).

:func:`recommendation_sections` returns, for a run whose study kind is ``recommend``:

* **Recommendation data**: users evaluated and excluded (and why), items, liked interactions,
  the split and the ranking protocol (all unseen items, no sampled negatives);
* **Ranking quality**: HitRate@k, NDCG@k and MRR per member with 95% bootstrap CIs over users;
* **Beyond accuracy**: catalogue coverage, item-exposure Gini and novelty;
* **Recommendation homogenization**: the Jaccard overlap of two members' top-k lists for the
  same user (matrix), and of one member's lists between users.

``report/html.py`` imports this module inside ``build_report``; every cell is a string the
template escapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from polyculture.report import figures
from polyculture.report.html import (
    FigureView,
    Section,
    _Csv,
    _member_labels,
    _optional_table,
    _table,
    interval,
    num,
    pct,
)
from polyculture.run.results import RunResults

QUALITY = (("hit_rate", "HitRate"), ("ndcg", "NDCG"), ("mrr", "MRR"))
BEYOND = (("coverage", "coverage"), ("gini", "exposure Gini"), ("novelty", "novelty (bits)"))


def _cell(row: pd.Series, metric: str, fmt: Any = num) -> tuple[str, str]:
    return fmt(row.get(f"test_{metric}")), interval(
        row.get(f"test_{metric}_ci_low"), row.get(f"test_{metric}_ci_high"), fmt
    )


def _data_section(results: RunResults) -> Section:
    task = results.task
    sizes = task.get("sizes", {})
    section = Section("recommendation-data", "Recommendation data and protocol")
    section.intro.append(
        f"Liked = rating >= {task.get('min_rating')}. Per user the last liked interaction (by "
        "time, ties by item id) is the test item and the one before the validation item; earlier "
        f"ones train. Each member ranks {task.get('ranking', 'all unseen items')}; "
        f"lists hold k = {task.get('k')} items. Intervals are 95% bootstrap intervals over users."
    )
    section.facts.extend(
        [
            ("data", str(task.get("name", "?"))),
            ("users evaluated", str(sizes.get("users", "?"))),
            ("users excluded", str(task.get("users_excluded", 0))),
            ("items", str(sizes.get("items", "?"))),
            ("interactions", f"{sizes.get('interactions', '?')} ({sizes.get('liked', '?')} liked)"),
            ("training interactions", str(sizes.get("train", "?"))),
        ]
    )
    return section


def recommendation_sections(results: RunResults, csv: _Csv) -> list[Section]:
    """The sections of a recommend run (none for other runs).

    Examples
    --------
    >>> from pathlib import Path
    >>> audit = RunResults(Path("."), {"kind": "audit"}, {}, pd.DataFrame())
    >>> recommendation_sections(audit, _Csv(Path(".")))
    []
    """
    if results.study.get("kind") != "recommend":
        return []
    sections = [_data_section(results)]
    members = results.members
    ok = members[members["status"] == "ok"]
    if ok.empty or "test_ndcg" not in ok:
        return sections
    labels = _member_labels(members)
    k = results.task.get("k", 10)
    ok = ok.assign(label=[labels[str(m)] for m in ok["member_id"]])
    ordered = ok.sort_values("test_ndcg", ascending=False, kind="stable")
    sections.append(_quality(ordered, k, csv))
    sections.append(_beyond(ordered, k, csv))
    homogenization = _homogenization(results, ordered, k, csv)
    if homogenization is not None:
        sections.append(homogenization)
    return sections


def _quality(ordered: pd.DataFrame, k: int, csv: _Csv) -> Section:
    section = Section("recommendation-quality", f"Ranking quality (top {k})")
    best = ordered.iloc[0]
    random = ordered[ordered["family"] == "random"]
    line = f"{best['label']} ranks best: NDCG@{k} {num(best['test_ndcg'])}"
    if not random.empty:
        line += f" vs {num(random['test_ndcg'].mean())} for the random baseline"
        beaten = ordered[(ordered["family"] != "random")]
        losers = beaten[beaten["test_ndcg"] <= random["test_ndcg"].max()]
        line += (
            "; every other member beats random."
            if losers.empty
            else f"; {len(losers)} member(s) do not beat random: "
            + ", ".join(losers["label"].astype(str))
            + "."
        )
    section.intro.append(line)
    rows = []
    for _, row in ordered.iterrows():
        cells: dict[str, str] = {"member": str(row["label"])}
        for metric, title in QUALITY:
            name = f"{title}@{k}" if metric != "mrr" else title
            cells[name], cells[f"{name} 95% CI"] = _cell(row, metric)
        rows.append(cells)
    frame = pd.DataFrame(rows)
    path = csv.add("recommendation_quality", frame)
    section.tables.append(
        _table("Ranking quality per member", frame, list(frame.columns[1:]), path)
    )
    names = ordered["label"].astype(str).tolist()
    panels = [
        (
            f"{title}@{k}" if metric != "mrr" else title,
            ordered[f"test_{metric}"].astype(float).tolist(),
            ordered[f"test_{metric}_ci_low"].astype(float).tolist(),
            ordered[f"test_{metric}_ci_high"].astype(float).tolist(),
        )
        for metric, title in QUALITY
    ]
    title = f"{figures.short(str(best['label']), 30)} ranks held-out items best"
    section.figures.append(
        FigureView(
            figures.interval_panels(names, panels, title, "recommend-quality"),
            f"Dot plots of HitRate, NDCG and MRR with 95% intervals for {len(names)} members",
            title + ". Dots: value over test users; bars: 95% bootstrap interval over users.",
        )
    )
    return section


def _beyond(ordered: pd.DataFrame, k: int, csv: _Csv) -> Section:
    section = Section("recommendation-beyond", "Beyond accuracy: coverage, exposure, novelty")
    widest = ordered.loc[ordered["test_coverage"].astype(float).idxmax()]
    narrowest = ordered.loc[ordered["test_coverage"].astype(float).idxmin()]
    section.intro.append(
        f"Coverage is the share of the catalogue shown in at least one top-{k} list; the Gini "
        "coefficient measures how unequally items are shown (0 = evenly, near 1 = a few items "
        "everywhere); novelty is the mean self-information -log2 p of recommended items (p = "
        "share of users who liked the item in training, smoothed). "
        f"{widest['label']} covers the most ({pct(widest['test_coverage'])}), "
        f"{narrowest['label']} the least ({pct(narrowest['test_coverage'])})."
    )
    rows = []
    for _, row in ordered.iterrows():
        cells: dict[str, str] = {"member": str(row["label"])}
        for metric, title in BEYOND:
            fmt = pct if metric == "coverage" else num
            cells[title], cells[f"{title} 95% CI"] = _cell(row, metric, fmt)
        rows.append(cells)
    frame = pd.DataFrame(rows)
    path = csv.add("recommendation_beyond_accuracy", frame)
    section.tables.append(
        _table("Coverage, exposure Gini and novelty", frame, list(frame.columns[1:]), path)
    )
    return section


def _homogenization(
    results: RunResults, ordered: pd.DataFrame, k: int, csv: _Csv
) -> Section | None:
    overlap = _optional_table(results, "recommend_overlap")
    section = Section("recommendation-homogenization", "Recommendation homogenization")
    section.intro.append(
        f"Jaccard overlap |A ∩ B| / |A ∪ B| of top-{k} lists. Between members: the same user's "
        "lists from two members (1 = identical recommendations). Between users: one member's "
        "lists for two different users, averaged over all pairs (high = everyone is shown the "
        "same items). For two trained members the table also gives the linear CKA of their item "
        "embeddings over the whole catalogue (1 = the same item geometry up to rotation and "
        "scale): representational homogenization beside the outcome one."
    )
    ids = ordered["member_id"].astype(str).tolist()
    names = ordered["label"].astype(str).tolist()
    if overlap is not None and len(ids) > 1:
        matrix = np.eye(len(ids))
        index = {member_id: i for i, member_id in enumerate(ids)}
        for row in overlap.itertuples(index=False):
            a, b = index.get(str(row.member_a)), index.get(str(row.member_b))
            if a is not None and b is not None:
                matrix[a, b] = matrix[b, a] = float(row.value)
        off = overlap[overlap["member_a"].isin(ids) & overlap["member_b"].isin(ids)]
        top = off.loc[off["value"].astype(float).idxmax()]
        label = dict(zip(ids, names, strict=True))
        headline = (
            f"The most alike pair, {label[str(top['member_a'])]} and "
            f"{label[str(top['member_b'])]}, share {pct(top['value'])} of their lists per user"
        )
        trained = set(ordered.loc[ordered["kind"] != "baseline", "member_id"].astype(str))
        both = off["member_a"].astype(str).isin(trained) & off["member_b"].astype(str).isin(trained)
        mean = f"mean over all pairs {pct(off['value'].mean())}"
        if both.any():
            mean = (
                f"mean over pairs of trained members {pct(off.loc[both, 'value'].mean())}, " + mean
            )
        section.intro.append(headline + f" ({mean}).")
        section.figures.append(
            FigureView(
                figures.heatmap(
                    matrix,
                    names,
                    names,
                    title=figures.short(headline, 70),
                    colorbar=f"Jaccard overlap of top-{k} lists (same user)",
                    key="recommend-overlap",
                ),
                f"Heatmap of the top-{k} overlap between {len(ids)} members",
                headline + ". Cells: mean over test users of the Jaccard overlap.",
            )
        )
        pairs = pd.DataFrame(
            {
                "member A": [label[str(a)] for a in off["member_a"]],
                "member B": [label[str(b)] for b in off["member_b"]],
                "overlap": [pct(v) for v in off["value"]],
                "95% CI": [
                    interval(lo, hi) for lo, hi in zip(off["ci_low"], off["ci_high"], strict=True)
                ],
                # Older runs lack the column: a dash then.
                "item-embedding CKA": [num(v) for v in off.get("item_cka", [np.nan] * len(off))],
            }
        )
        path = csv.add("recommendation_overlap_between_members", pairs)
        numeric = ["overlap", "95% CI", "item-embedding CKA"]
        section.tables.append(_table("Overlap between members (same user)", pairs, numeric, path))
    users = pd.DataFrame(
        {
            "member": names,
            "overlap between users": [pct(v) for v in ordered["test_user_overlap"]],
            "95% CI": [
                interval(lo, hi)
                for lo, hi in zip(
                    ordered["test_user_overlap_ci_low"],
                    ordered["test_user_overlap_ci_high"],
                    strict=True,
                )
            ],
        }
    )
    path = csv.add("recommendation_overlap_between_users", users)
    section.tables.append(
        _table(
            "Overlap between users (same member)", users, ["overlap between users", "95% CI"], path
        )
    )
    return section
