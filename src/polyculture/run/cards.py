"""Model cards (Mitchell et al. 2019): one per member, filled from the run directory.

Mitchell, Wu, Zaldivar, Barnes, Vasserman, Hutchinson, Spitzer, Raji & Gebru, "Model Cards for
Model Reporting" (FAT* 2019) propose nine sections: model details, intended use, factors,
metrics, evaluation data, training data, quantitative analyses (unitary and intersectional),
ethical considerations, and caveats and recommendations. :func:`build_cards` fills every one of
them from the run's stored files (``study.toml``, ``task.json``, the members table, the fairness
tables of :mod:`polyculture.run.fairness` and the homogenization table): the numbers carry their
bootstrap CIs, and the caveats are computed from them (which group is worst and by how much,
which groups are too small to compare, how often the whole zoo fails the same people).

:func:`write_cards` writes ``RUN_DIR/cards/<member_id>.md``; the report shows the same cards.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyculture.run.fairness import ALL, load_fairness
from polyculture.run.results import RunResults, load_run
from polyculture.run.store import write_text

CARDS_DIR = "cards"
SECTIONS = (
    "Model details",
    "Intended use",
    "Factors",
    "Metrics",
    "Evaluation data",
    "Training data",
    "Quantitative analyses",
    "Ethical considerations",
    "Caveats and recommendations",
)
"""The sections of Mitchell et al. (2019), in their order."""


@dataclass
class CardSection:
    """One section of a card: paragraphs, then tables of strings (caption, frame)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)


@dataclass
class ModelCard:
    """The card of one member: its identity and the nine sections (see :data:`SECTIONS`)."""

    member_id: str
    name: str
    seed: int
    sections: list[CardSection]

    @property
    def title(self) -> str:
        """``Model card: <name>, seed <seed>``."""
        return f"Model card: {self.name}, seed {self.seed}"

    def to_markdown(self) -> str:
        """The card as Markdown (``#`` title, ``##`` per section, pipe tables)."""
        lines = [f"# {self.title}", ""]
        for section in self.sections:
            lines += [f"## {section.title}", ""]
            for paragraph in section.paragraphs:
                lines += [paragraph, ""]
            for caption, frame in section.tables:
                lines += [f"**{caption}**", "", *_markdown_table(frame), ""]
        return "\n".join(lines).rstrip() + "\n"


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return [header, rule, *rows]


# ---------------------------------------------------------------------------------------------
# Formatting (no placeholder strings: a missing number says "not defined")

UNDEFINED = "not defined"


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f}%" if _finite(value) else UNDEFINED


def _share(value: Any) -> str:
    """A possibly tiny share as a percentage (two significant digits below 0.01%)."""
    if not _finite(value):
        return UNDEFINED
    x = 100 * float(value)
    return f"{x:.2f}%" if x == 0 or abs(x) >= 0.01 else f"{x:.1e}%"


def _sig(value: Any) -> str:
    """Three significant digits (scientific notation from 10^4)."""
    if not _finite(value):
        return UNDEFINED
    x = float(value)
    return f"{x:.2e}" if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4) else f"{x:.3g}"


def _num(value: Any, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if _finite(value) else UNDEFINED


def _with_ci(value: Any, low: Any, high: Any, fmt: Any = _pct) -> str:
    if not _finite(value):
        return UNDEFINED
    if _finite(low) and _finite(high):
        return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"
    return str(fmt(value))


def _knobs(params: Any) -> str:
    if isinstance(params, str):
        params = json.loads(params) if params.strip().startswith("{") else {}
    if not params:
        return "the family's defaults"
    return ", ".join(f"{key}={value}" for key, value in sorted(params.items()))


# ---------------------------------------------------------------------------------------------
# Building


def build_cards(run_dir: str | Path | RunResults) -> list[ModelCard]:
    """One :class:`ModelCard` per member that trained (failed members have no card).

    Examples
    --------
    >>> import tempfile
    >>> from polyculture.run.audit import load_predictions, write_audit_run
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "p.csv").write_text("instance,label,a,b\\n1,x,x,y\\n2,y,y,y\\n3,x,x,x\\n")
    >>> _ = write_audit_run(load_predictions(folder / "p.csv"), folder / "demo")
    >>> [section.title for section in build_cards(folder / "demo")[0].sections][:3]
    ['Model details', 'Intended use', 'Factors']
    """
    results = run_dir if isinstance(run_dir, RunResults) else load_run(run_dir)
    fairness = load_fairness(results)
    members = results.members[results.members["status"] == "ok"]
    context = _Context(results, fairness)
    return [context.card(row) for row in members.to_dict("records")]


def write_cards(run_dir: str | Path | RunResults) -> list[Path]:
    """Write ``RUN_DIR/cards/<member_id>.md`` for every member that trained; the paths.

    Cards of members no longer in the run are removed, so the folder matches the run.
    """
    results = run_dir if isinstance(run_dir, RunResults) else load_run(run_dir)
    folder = results.root / CARDS_DIR
    paths = []
    for card in build_cards(results):
        path = folder / f"{card.member_id}.md"
        write_text(path, card.to_markdown())
        paths.append(path)
    if folder.is_dir():
        for stale in folder.glob("*.md"):
            if stale not in paths:
                stale.unlink()
    return paths


class _Context:
    """What every card of one run shares: the task, the study, the zoo-level figures."""

    def __init__(self, results: RunResults, fairness: dict[str, Any] | None) -> None:
        self.results = results
        self.fairness = fairness
        self.task = results.task
        self.study = results.study
        self.headline = results.headline()
        self.modality = str(self.task.get("modality", "unknown"))
        self.classes = [str(c) for c in self.task.get("classes", [])]
        self.attributes = [str(a) for a in self.task.get("group_attributes", [])]
        options = (self.study.get("data", {}) or {}).get("options", {}) or {}
        self.groups_as_features = bool(options.get("groups_as_features", True))
        self.audit = self.study.get("kind") == "audit"

    # -- one card ------------------------------------------------------------------------------

    def card(self, row: dict[str, Any]) -> ModelCard:
        member_id = str(row["member_id"])
        seed = int(row["seed"]) if _finite(row.get("seed")) else 0
        sections = [
            self._details(row),
            self._intended_use(),
            self._factors(),
            self._metrics(),
            self._evaluation_data(),
            self._training_data(row),
            self._quantitative(row),
            self._ethics(row),
            self._caveats(row),
        ]
        return ModelCard(member_id, str(row["name"]), seed, sections)

    def _details(self, row: dict[str, Any]) -> CardSection:
        section = CardSection("Model details")
        study = str(self.study.get("name") or self.results.root.name)
        versions = self.study.get("versions", {}) or {}
        if self.audit:
            section.paragraphs.append(
                f"Model '{row['name']}' is an externally trained system audited from its "
                f"predictions in the polyculture audit '{study}'; its internals are not known to "
                "this card."
            )
            return section
        kind = str(row.get("kind", ""))
        section.paragraphs.append(
            f"Model '{row['name']}' (member id {row['member_id']}) is a {row['family']} "
            f"{'scikit-learn estimator' if kind == 'sklearn' else 'neural network'} with "
            f"{_knobs(row.get('params'))}, trained with seed {row['seed']} by polyculture "
            f"{versions.get('polyculture', '')} in the study '{study}'."
        )
        facts = [
            (
                "parameters",
                f"{int(row['n_parameters']):,}" if _finite(row.get("n_parameters")) else UNDEFINED,
            ),
            (
                "training time",
                f"{float(row['train_seconds']):.1f} s"
                if _finite(row.get("train_seconds"))
                else UNDEFINED,
            ),
        ]
        if row.get("backbone"):
            facts.append(("backbone", f"{row['backbone']} ({row.get('adapt') or 'adapted'})"))
        train = self.study.get("train", {}) or {}
        if kind == "torch" and train:
            facts.append(
                (
                    "training recipe (study default)",
                    f"optimizer {train.get('optimizer')}, learning rate {train.get('lr')}, "
                    f"batch size {train.get('batch_size')}, epochs {train.get('epochs')}, "
                    f"schedule {train.get('schedule')}",
                )
            )
        if kind == "sklearn":
            facts.append(
                ("storage", "no weights file: refitted deterministically on the training split")
            )
        facts.append(
            (
                "versions",
                ", ".join(f"{k} {v}" for k, v in versions.items()) or "recorded in study.toml",
            )
        )
        section.tables.append(("Facts", pd.DataFrame(facts, columns=["item", "value"])))
        return section

    def _intended_use(self) -> CardSection:
        section = CardSection("Intended use")
        description = str(self.study.get("description") or "").strip()
        classes = ", ".join(self.classes) if self.classes else "the task's classes"
        section.paragraphs.append(
            f"Predicts one of {len(self.classes)} classes ({classes}) from {self.modality} "
            f"inputs of the task '{self.task.get('name', 'unknown')}'"
            + (f" ({description})." if description else ".")
        )
        section.paragraphs.append(
            "Primary intended use: research on model zoos, comparing this member with the others "
            "of its run for accuracy, fairness across groups and outcome homogenization. "
            "Out of scope: automated decisions about individual people (credit, employment, "
            "housing, benefits) without a human review and an audit on the population it would "
            "serve; the evaluation below covers only the data of this run."
        )
        return section

    def _factors(self) -> CardSection:
        section = CardSection("Factors")
        if not self.attributes or self.fairness is None:
            section.paragraphs.append(
                "The task records no group attributes, so no disaggregated evaluation was "
                "possible; instrumentation, environment and group factors are unknown. Add group "
                "columns (data.options.groups, or --group in an audit) to evaluate them."
            )
            return section
        policy = self.fairness["policy"]
        attributes = ", ".join(policy["attributes"])
        section.paragraphs.append(
            f"Relevant factors: the group attributes {', '.join(self.attributes)} and their "
            f"intersection, evaluated as {attributes}. "
            + (
                "The attributes are also model inputs (a study choice: the model can use them "
                "directly)."
                if self.groups_as_features
                else "The attributes are not model inputs (they are kept only for evaluation; "
                "other features may still encode them)."
            )
        )
        systemic = self.fairness["fairness_systemic"]
        counts = systemic[["attribute", "group", "n", "small"]].copy()
        counts["small"] = np.where(counts["small"], f"yes (n < {policy['min_group_size']})", "no")
        counts = counts.rename(columns={"n": "test instances", "small": "too small to compare"})
        section.tables.append(("Groups of the test split", counts))
        return section

    def _metrics(self) -> CardSection:
        section = CardSection("Metrics")
        section.paragraphs.append(
            "Accuracy, macro F1, negative log-likelihood and expected calibration error on the "
            "test split, each with a 95% percentile bootstrap CI over test instances where shown."
        )
        if self.fairness is not None:
            policy = self.fairness["policy"]
            section.paragraphs.append(
                f"By group (positive decision: '{policy['positive_class']}'): accuracy, selection "
                "rate (share predicted positive), true-positive rate and false-positive rate, with "
                f"{int(policy['confidence'] * 100)}% bootstrap CIs ({policy['n_resamples']} "
                "resamples of the test instances); demographic parity difference and ratio "
                "(selection rates) and equalized odds difference and ratio (worst of TPR and "
                f"FPR) between groups with at least {policy['min_group_size']} test instances."
            )
        section.paragraphs.append(
            "Homogenization: the systemic failure rate (share of instances every member of the "
            "zoo fails) against its value if members erred independently, and per group; H_avg, "
            "H_unif and H_worst (Bommasani et al. 2022), where 1 means failures look "
            "independent of the group and larger values mean they concentrate on some groups."
        )
        return section

    def _evaluation_data(self) -> CardSection:
        section = CardSection("Evaluation data")
        sizes = self.task.get("sizes", {}) or {}
        shifted = ", ".join(s for s in sizes if s.startswith("test_"))
        section.paragraphs.append(
            f"The test split of the task '{self.task.get('name', 'unknown')}': "
            f"{sizes.get('test', 'an unrecorded number of')} instances"
            + (f"; shifted copies for robustness: {shifted}." if shifted else ".")
        )
        steps = [s for s in self.task.get("cleaning", []) if s.get("split") == "test"]
        section.paragraphs.append(_cleaning_sentence(steps, "test"))
        return section

    def _training_data(self, row: dict[str, Any]) -> CardSection:
        section = CardSection("Training data")
        if self.audit:
            section.paragraphs.append(
                "Not known: the audited system was trained outside polyculture; only its "
                "predictions on the evaluation data were provided."
            )
            return section
        sizes = self.task.get("sizes", {}) or {}
        section.paragraphs.append(
            f"{sizes.get('train', 'An unrecorded number of')} training and "
            f"{sizes.get('val', 'an unrecorded number of')} validation instances of the same "
            f"source (validation carved from the training data with a seeded stratified split); "
            f"this member used {_pct(row.get('data_fraction', 1.0))} of the training split."
        )
        if self.modality == "tabular":
            section.paragraphs.append(
                "Preprocessing: numeric columns standardized and categorical columns one-hot "
                "encoded with statistics of the training rows only."
            )
        steps = [s for s in self.task.get("cleaning", []) if s.get("split") == "train"]
        section.paragraphs.append(_cleaning_sentence(steps, "training"))
        return section

    def _quantitative(self, row: dict[str, Any]) -> CardSection:
        section = CardSection("Quantitative analyses")
        metrics = [
            ("accuracy", "test_accuracy", _pct),
            ("macro F1", "test_macro_f1", _pct),
            ("negative log-likelihood", "test_nll", _num),
            ("expected calibration error", "test_ece", _num),
        ]
        overall = []
        for label, column, fmt in metrics:
            if column in row:
                overall.append(
                    (
                        label,
                        _with_ci(
                            row.get(column),
                            row.get(f"{column}_ci_low"),
                            row.get(f"{column}_ci_high"),
                            fmt,
                        ),
                    )
                )
        section.tables.append(
            ("Overall (test split)", pd.DataFrame(overall, columns=["metric", "value [95% CI]"]))
        )
        if self.fairness is not None:
            groups = self.fairness["fairness_groups"]
            mine = groups[(groups["member_id"] == row["member_id"]) & (groups["attribute"] != ALL)]
            attributes = list(dict.fromkeys(mine["attribute"]))
            unitary = [a for a in attributes if " x " not in a]
            crossed = [a for a in attributes if " x " in a]
            for kind, chosen in (("Unitary", unitary), ("Intersectional", crossed)):
                if chosen:
                    section.tables.append(
                        (
                            f"{kind} results by group",
                            _group_table(mine[mine["attribute"].isin(chosen)]),
                        )
                    )
            disparities = self.fairness["fairness_disparities"]
            mine_d = disparities[disparities["member_id"] == row["member_id"]]
            if len(mine_d):
                section.tables.append(("Between-group disparities", _disparity_table(mine_d)))
        headline = self.headline
        if headline:
            section.paragraphs.append(
                f"Zoo-level homogenization ({headline['members']} members): "
                f"{_pct(headline['systemic_observed'])} of test instances are failed by every "
                f"member, {_sig(headline['systemic_ratio'])} times "
                f"[{_sig(headline['systemic_ratio_ci'][0])}, "
                f"{_sig(headline['systemic_ratio_ci'][1])}] the rate expected if members "
                "erred independently."
            )
        else:
            section.paragraphs.append(
                "Zoo-level homogenization is not defined for this run (it needs at least two "
                "members that trained)."
            )
        if self.fairness is not None:
            h = self.fairness["fairness_homogenization"]
            table = pd.DataFrame(
                {
                    "attribute": h["attribute"],
                    "H_avg": [_num(v, 2) for v in h["h_avg"]],
                    "H_unif": [_num(v, 2) for v in h["h_unif"]],
                    "H_worst": [_num(v, 2) for v in h["h_worst"]],
                    "most concentrated group": [
                        g or UNDEFINED for g in h["most_concentrated_group"]
                    ],
                }
            )
            section.tables.append(("Group-level homogenization of the zoo", table))
            systemic = self.fairness["fairness_systemic"]
            section.tables.append(
                (
                    "Systemic failure by group (share of the group's instances every member fails)",
                    pd.DataFrame(
                        {
                            "attribute": systemic["attribute"],
                            "group": systemic["group"],
                            "n": systemic["n"].astype(int),
                            "observed [95% CI]": [
                                _with_ci(v, lo, hi)
                                for v, lo, hi in zip(
                                    systemic["observed_systemic"],
                                    systemic["observed_systemic_ci_low"],
                                    systemic["observed_systemic_ci_high"],
                                    strict=True,
                                )
                            ],
                            "if independent": [_share(v) for v in systemic["expected_systemic"]],
                        }
                    ),
                )
            )
        return section

    def _ethics(self, row: dict[str, Any]) -> CardSection:
        section = CardSection("Ethical considerations")
        if self.fairness is None:
            section.paragraphs.append(
                "Without group attributes this run cannot show whether errors fall more often on "
                "some people than on others; treat the overall accuracy as an average that may "
                "hide groups served much worse."
            )
        else:
            feature_text = (
                "The sensitive attributes are model inputs: the model can condition its decision "
                "on them directly."
                if self.groups_as_features
                else "The sensitive attributes are not model inputs, but correlated features can "
                "still act as proxies for them."
            )
            section.paragraphs.append(feature_text)
            worst = self._worst_systemic()
            if worst is not None:
                section.paragraphs.append(
                    f"Outcome homogenization: in group {worst['group']} ({worst['attribute']}), "
                    f"{_pct(worst['observed_systemic'])} of instances are failed by every member "
                    f"of the zoo (if members erred independently: "
                    f"{_share(worst['expected_systemic'])}); a person failed by this model there "
                    "is likely to be failed by the alternatives too."
                )
        removed = sum(int(s.get("removed", 0)) for s in self.task.get("cleaning", []))
        if removed:
            section.paragraphs.append(
                f"Cleaning removed {removed:,} rows (see Training and Evaluation data); rows with "
                "missing values are often not missing at random, so some groups may be "
                "under-represented in what the model saw and in this evaluation."
            )
        return section

    def _worst_systemic(self) -> dict[str, Any] | None:
        assert self.fairness is not None
        systemic = self.fairness["fairness_systemic"]
        compared = systemic[~systemic["small"] & systemic["observed_systemic"].notna()]
        if compared.empty:
            return None
        return dict(compared.loc[compared["observed_systemic"].idxmax()])

    def _caveats(self, row: dict[str, Any]) -> CardSection:
        section = CardSection("Caveats and recommendations")
        if self.fairness is not None:
            disparities = self.fairness["fairness_disparities"]
            mine = disparities[
                (disparities["member_id"] == row["member_id"])
                & (disparities["measure"] == "accuracy_difference")
            ]
            groups = self.fairness["fairness_groups"]
            for item in mine.to_dict("records"):
                if not item["worst_group"]:
                    continue
                significant = _gap_is_significant(groups, row["member_id"], item)
                section.paragraphs.append(
                    f"By {item['attribute']}, the worst group is {item['worst_group']} with "
                    f"accuracy {_pct(item['worst_group_accuracy'])}, "
                    f"{_pct(item['value'])} [{_pct(item['ci_low'])}, {_pct(item['ci_high'])}] "
                    f"below the best group {item['best_group']} "
                    f"({_pct(item['best_group_accuracy'])})"
                    + (
                        "; the gap is significant (two-proportion z-test of the two groups, "
                        "Bonferroni over every pair of compared groups, 5% level)."
                        if significant
                        else "; the gap is not significant (two-proportion z-test of the two "
                        "groups, Bonferroni over every pair of compared groups, 5% level)."
                    )
                )
            dp = disparities[
                (disparities["member_id"] == row["member_id"])
                & (disparities["measure"] == "demographic_parity_ratio")
            ]
            for item in dp.to_dict("records"):
                if _finite(item["value"]) and float(item["value"]) < 0.8:
                    section.paragraphs.append(
                        f"Selection rates by {item['attribute']} fail the four-fifths rule: the "
                        f"lowest group's rate is {_num(item['value'], 2)} times the highest's."
                    )
            groups = self.fairness["fairness_groups"]
            small = groups[(groups["member_id"] == row["member_id"]) & groups["small"].astype(bool)]
            if len(small):
                listed = ", ".join(
                    f"{g} (n={int(n)})" for g, n in zip(small["group"], small["n"], strict=True)
                )
                section.paragraphs.append(
                    f"Groups too small to compare (n < "
                    f"{self.fairness['policy']['min_group_size']}): {listed}. Their figures are "
                    "shown with wide CIs and left out of the disparities; collect more data "
                    "before drawing conclusions about them."
                )
        section.paragraphs.append(
            "Performance was measured on data from the same source as the training data; "
            "re-check it on fresh data on a schedule (polyculture reevaluate RUN_DIR --data "
            "NEW_FILE exits with code 3 when a member degrades significantly) and retrain when "
            "it does."
        )
        return section


def _cleaning_sentence(steps: list[dict[str, Any]], what: str) -> str:
    if not steps:
        return f"Nothing was removed from the {what} data while loading."
    parts = [f"{int(s['removed']):,} ({s['step']})" for s in steps]
    return f"Removed from the {what} data while loading: {', '.join(parts)}."


def _group_table(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for item in frame.to_dict("records"):
        rows.append(
            {
                "attribute": item["attribute"],
                "group": item["group"] + (" (small)" if item["small"] else ""),
                "n": int(item["n"]),
                **{
                    label: _with_ci(item[key], item[f"{key}_ci_low"], item[f"{key}_ci_high"])
                    for key, label in (
                        ("accuracy", "accuracy"),
                        ("selection_rate", "selection rate"),
                        ("tpr", "TPR"),
                        ("fpr", "FPR"),
                    )
                },
            }
        )
    return pd.DataFrame(rows)


def _disparity_table(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "attribute": frame["attribute"],
            "measure": frame["measure"].str.replace("_", " "),
            "value [95% CI]": [
                _with_ci(v, lo, hi, _num)
                for v, lo, hi in zip(frame["value"], frame["ci_low"], frame["ci_high"], strict=True)
            ],
            "groups compared": frame["groups_compared"].astype(int),
        }
    )


def _gap_is_significant(groups: pd.DataFrame, member_id: str, item: dict[str, Any]) -> bool:
    """Whether the worst and best groups' accuracies differ beyond chance.

    The max-minus-min gap is positive in every resample, so its interval cannot answer this; the
    two named groups are compared with a two-proportion z-test instead, at 5% Bonferroni-corrected
    for all pairs of compared (not small) groups, since the pair was picked after seeing the data.
    """
    from scipy.stats import norm

    mine = groups[
        (groups["member_id"] == member_id)
        & (groups["attribute"] == item["attribute"])
        & ~groups["small"].astype(bool)
    ].set_index("group")
    worst, best = str(item["worst_group"]), str(item["best_group"])
    if worst not in mine.index or best not in mine.index or worst == best:
        return False
    n_worst, n_best = float(mine.loc[worst, "n"]), float(mine.loc[best, "n"])
    p_worst, p_best = float(mine.loc[worst, "accuracy"]), float(mine.loc[best, "accuracy"])
    variance = p_worst * (1 - p_worst) / n_worst + p_best * (1 - p_best) / n_best
    if not variance > 0:
        return p_best > p_worst
    pairs = len(mine) * (len(mine) - 1) / 2
    p_value = 2 * norm.sf(abs(p_best - p_worst) / math.sqrt(variance))
    return bool(p_value * pairs < 0.05)
