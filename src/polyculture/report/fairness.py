"""Report sections of the fairness audit, the model cards and the re-evaluations of a run.

:func:`fairness_sections` returns (only where their data exists):

* **Fairness**: leads with the worst group (lowest accuracy among groups large enough to compare,
  averaged over members), then per attribute and member the worst and best group with the gap,
  demographic parity and equalized odds with CIs, every group's accuracy, selection rate, TPR
  and FPR with CIs (unitary and intersectional), and the per-group systemic failure of the zoo
  with H_avg / H_unif / H_worst (from ``tables/fairness_*``);
* **Model card: ...**: one section per card in ``RUN_DIR/cards/`` (built again from the tables,
  so the report and the Markdown files say the same);
* **Re-evaluation**: the latest ``polyculture reevaluate`` of the run: the alert, each member's
  accuracy change with its CI and test, the drifted inputs, and retrained members.

``report/html.py`` imports this module inside ``build_report``. Every cell is a string the
template escapes.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from polyculture.report.html import DASH, Section, _Csv, _table, interval, num, pct, share
from polyculture.report.selection import _labels
from polyculture.run.fairness import ALL, load_fairness
from polyculture.run.results import RunResults

REEVALUATIONS_DIR = "reevaluations"


def fairness_sections(results: RunResults, csv: _Csv) -> list[Section]:
    """The fairness, model-card and re-evaluation sections of a run's report (where data exists).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from polyculture.run.audit import load_predictions, write_audit_run
    >>> from polyculture.run import load_run
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "p.csv").write_text("instance,label,a,b\\n1,x,x,y\\n2,y,y,y\\n")
    >>> _ = write_audit_run(load_predictions(folder / "p.csv"), folder / "demo")
    >>> fairness_sections(load_run(folder / "demo"), _Csv(folder / "demo"))  # no groups, no cards
    []
    """
    sections = [_fairness(results, csv), *_cards(results), _reevaluation(results, csv)]
    return [section for section in sections if section is not None]


def _fairness(results: RunResults, csv: _Csv) -> Section | None:
    fairness = load_fairness(results)
    if fairness is None:
        return None
    policy = fairness["policy"]
    labels = _labels(results.members)
    groups = fairness["fairness_groups"]
    disparities = fairness["fairness_disparities"]
    systemic = fairness["fairness_systemic"]
    homogenization = fairness["fairness_homogenization"]
    section = Section("fairness", "Fairness by group")

    compared = groups[(groups["attribute"] != ALL) & ~groups["small"].astype(bool)]
    if len(compared):
        mean_accuracy = compared.groupby(["attribute", "group"])["accuracy"].mean()
        (attribute, worst), worst_accuracy = mean_accuracy.idxmin(), mean_accuracy.min()
        same_attribute = mean_accuracy.loc[attribute]
        best, best_accuracy = same_attribute.idxmax(), same_attribute.max()
        lead = (
            f"Worst group: {worst} ({attribute}), mean test accuracy over "
            f"{policy['members']} member(s) {pct(worst_accuracy)} against {pct(best_accuracy)} "
            f"for {best}, the best group of that attribute."
        )
        failed = systemic[(systemic["attribute"] == attribute) & (systemic["group"] == worst)]
        if len(failed):
            item = failed.iloc[0]
            lead += (
                f" Every member fails {pct(item['observed_systemic'])} "
                f"{interval(item['observed_systemic_ci_low'], item['observed_systemic_ci_high'])} "
                f"of its instances (if members erred independently: "
                f"{share(item['expected_systemic'])})."
            )
        section.intro.append(lead)
    section.intro.append(
        f"Positive decision: '{policy['positive_class']}'. Selection rate = share predicted "
        "positive; TPR / FPR = share of true positives / negatives predicted positive. CIs: "
        f"{int(policy['confidence'] * 100)}% percentile bootstrap over the "
        f"{policy['instances']:,} test instances ({policy['n_resamples']} resamples, the same for "
        f"every member). Groups with fewer than {policy['min_group_size']} test instances are "
        "shown (marked small) but left out of the differences, ratios and the worst group."
    )
    for row in homogenization.to_dict("records"):
        section.facts.append(
            (
                f"H_avg / H_unif / H_worst ({row['attribute']})",
                f"{num(row['h_avg'], 2)} / {num(row['h_unif'], 2)} / {num(row['h_worst'], 2)}"
                + (
                    f"; most concentrated failures: {row['most_concentrated_group']}"
                    if row["most_concentrated_group"]
                    else ""
                ),
            )
        )

    # pivot, not pivot_table: a disparity that is NaN everywhere (fewer than two groups large
    # enough to compare) must stay a column, shown as a dash
    wide = disparities.drop_duplicates(["member_id", "attribute", "measure"]).pivot(
        index=["member_id", "attribute"],
        columns="measure",
        values=["value", "ci_low", "ci_high"],
    )
    summary_rows = []
    first = disparities.drop_duplicates(["member_id", "attribute"])
    for item in first.to_dict("records"):
        key = (item["member_id"], item["attribute"])

        def cell(measure: str, fmt: Any = num, key: tuple[str, str] = key) -> str:
            if ("value", measure) not in wide.columns:
                return DASH
            value = wide.loc[key, ("value", measure)]
            bounds = interval(
                wide.loc[key, ("ci_low", measure)], wide.loc[key, ("ci_high", measure)], fmt
            )
            return f"{fmt(value)} {bounds}"

        summary_rows.append(
            {
                "member": labels.get(item["member_id"], item["member_id"]),
                "attribute": item["attribute"],
                "worst group": item["worst_group"] or "—",
                "worst accuracy": pct(item["worst_group_accuracy"]),
                "best group": item["best_group"] or "—",
                "accuracy gap [CI]": cell("accuracy_difference", pct),
                "DP difference [CI]": cell("demographic_parity_difference"),
                "DP ratio [CI]": cell("demographic_parity_ratio"),
                "EO difference [CI]": cell("equalized_odds_difference"),
                "EO ratio [CI]": cell("equalized_odds_ratio"),
            }
        )
    section.tables.append(
        _table(
            "Worst group and disparities per member and attribute (groups not small)",
            pd.DataFrame(summary_rows),
            csv=csv.add("fairness_disparities", disparities),
        )
    )
    csv_groups = csv.add("fairness_groups", groups)
    for attribute in [a for a in dict.fromkeys(groups["attribute"]) if a != ALL]:
        part = groups[groups["attribute"] == attribute].sort_values(["member_id", "accuracy"])
        rows = []
        for item in part.to_dict("records"):
            rows.append(
                {
                    "member": labels.get(item["member_id"], item["member_id"]),
                    "group": item["group"] + (" (small)" if item["small"] else ""),
                    "n": f"{int(item['n']):,}",
                    "accuracy [CI]": _value_ci(item, "accuracy"),
                    "selection rate [CI]": _value_ci(item, "selection_rate"),
                    "TPR [CI]": _value_ci(item, "tpr"),
                    "FPR [CI]": _value_ci(item, "fpr"),
                }
            )
        kind = "Intersectional" if " x " in attribute else "Unitary"
        section.tables.append(
            _table(
                f"{kind}: {attribute} (each member's groups from worst to best accuracy)",
                pd.DataFrame(rows),
                numeric=["n"],
                csv=csv_groups,
            )
        )
    rows = []
    for item in systemic.sort_values(
        ["attribute", "observed_systemic"], ascending=[True, False]
    ).to_dict("records"):
        rows.append(
            {
                "attribute": item["attribute"],
                "group": item["group"] + (" (small)" if item["small"] else ""),
                "n": f"{int(item['n']):,}",
                "mean error rate": pct(item["mean_error_rate"]),
                "every member fails [CI]": f"{pct(item['observed_systemic'])} "
                + interval(item["observed_systemic_ci_low"], item["observed_systemic_ci_high"]),
                "if independent": share(item["expected_systemic"]),
                "observed / independent": num(item["within_group_ratio"], 2),
            }
        )
    section.tables.append(
        _table(
            f"Per-group systemic failure of the zoo ({policy['members']} members)",
            pd.DataFrame(rows),
            numeric=["n"],
            csv=csv.add("fairness_systemic", systemic),
        )
    )
    return section


def _value_ci(item: dict[str, Any], key: str) -> str:
    return f"{pct(item[key])} {interval(item[f'{key}_ci_low'], item[f'{key}_ci_high'])}"


def _cards(results: RunResults) -> list[Section]:
    from polyculture.run.cards import CARDS_DIR, build_cards

    folder = results.root / CARDS_DIR
    if not folder.is_dir() or not any(folder.glob("*.md")):
        return []
    sections = []
    for card in build_cards(results):
        section = Section(f"card-{card.member_id}", card.title)
        for part in card.sections:
            section.facts.append((part.title, " ".join(part.paragraphs) or "see the tables below"))
            for caption, frame in part.tables:
                section.tables.append(_table(f"{part.title}: {caption}", frame))
        sections.append(section)
    return sections


def _reevaluation(results: RunResults, csv: _Csv) -> Section | None:
    folder = results.root / REEVALUATIONS_DIR
    if not folder.is_dir():
        return None
    # The latest by when it was written (names are timestamps by default, or chosen freely).
    runs = sorted(
        (p for p in folder.iterdir() if (p / "summary.json").is_file()),
        key=lambda p: ((p / "summary.json").stat().st_mtime_ns, p.name),
    )
    if not runs:
        return None
    latest = runs[-1]
    summary = json.loads((latest / "summary.json").read_text())
    section = Section("reevaluation", "Re-evaluation on new data")
    section.intro.append(str(summary.get("verdict", "")))
    section.facts += [
        ("re-evaluation", latest.name),
        ("new data", str(summary.get("data_name", ""))),
        ("new instances", f"{int(summary.get('instances', 0)):,}"),
        ("alert rule", str(summary.get("rule", ""))),
    ]
    if len(runs) > 1:
        section.facts.append(("earlier re-evaluations", ", ".join(p.name for p in runs[:-1])))
    labels = _labels(results.members)
    performance = pd.read_parquet(latest / "performance.parquet")
    rows = []
    for item in performance.to_dict("records"):
        rows.append(
            {
                "member": labels.get(item["member_id"], item["member_id"]),
                "accuracy before [CI]": f"{pct(item['old_accuracy'])} "
                + interval(item["old_ci_low"], item["old_ci_high"]),
                "accuracy on new data [CI]": f"{pct(item['new_accuracy'])} "
                + interval(item["new_ci_low"], item["new_ci_high"]),
                "change [CI]": f"{pct(item['change'])} "
                + interval(item["change_ci_low"], item["change_ci_high"]),
                "p (Holm)": num(item["p_holm"], 4),
                "flagged": "yes" if item["flagged"] else "no",
            }
        )
    section.tables.append(
        _table(
            "Accuracy before and on the new data",
            pd.DataFrame(rows),
            csv=csv.add(f"reevaluation_{latest.name}_performance", performance),
        )
    )
    drift_path = latest / "drift.parquet"
    if drift_path.is_file():
        drift = pd.read_parquet(drift_path)
        top = drift.sort_values("psi", ascending=False).head(15)
        section.tables.append(
            _table(
                "Input drift (largest PSI first; all in the CSV)",
                pd.DataFrame(
                    {
                        "input": top["feature"].astype(str),
                        "PSI": [num(v) for v in top["psi"]],
                        "KS statistic": [num(v) for v in top["ks_statistic"]],
                        "KS p (Holm)": [num(v, 4) for v in top["ks_p_holm"]],
                        "drifted": ["yes" if v else "no" for v in top["drifted"]],
                    }
                ),
                csv=csv.add(f"reevaluation_{latest.name}_drift", drift),
            )
        )
    retrained_path = latest / "retrained.parquet"
    if retrained_path.is_file():
        retrained = pd.read_parquet(retrained_path)
        rows = [
            {
                "member": labels.get(item["member_id"], item["member_id"]),
                "held-out new instances": f"{int(item['instances']):,}",
                "old member": pct(item["old_accuracy"]),
                "retrained (old + new data)": pct(item["retrained_accuracy"]),
                "difference [CI]": f"{pct(item['difference'])} "
                + interval(item["difference_ci_low"], item["difference_ci_high"]),
                "McNemar p": num(item["mcnemar_p"], 4),
            }
            for item in retrained.to_dict("records")
        ]
        section.tables.append(
            _table(
                "Flagged members retrained on old + new data, compared on held-out new data",
                pd.DataFrame(rows),
            )
        )
    return section
