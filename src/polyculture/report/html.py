"""The HTML report of a run directory: one self-contained file built from the stored tables only.

:func:`build_report` reads ``study.toml``, ``task.json``, ``timing.json`` (if present) and
``tables/*.parquet`` through :func:`polyculture.run.results.load_run` (plus, for reliability
diagrams, the stored class probabilities of one member per model), and writes

* ``RUN_DIR/report.html``: inline CSS, inline SVG figures, no scripts and no external URL, so it
  opens offline in any browser;
* ``RUN_DIR/report_tables/*.csv``: the long tables of the report, as plain numbers.

Sections appear only when their data exists: a trained zoo gets training curves, reliability
diagrams and similarity heatmaps; an audit run (predictions only) gets performance, agreement,
failure counts, systemic failure and diversity. The output is deterministic: building twice, or
from a copy of the run directory elsewhere, gives the same bytes (only the run's folder name is
embedded, never an absolute path).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform

from polyculture.errors import RunStoreError
from polyculture.measure.ecosystem import STATISTICS as ECOSYSTEM_STATISTICS
from polyculture.measure.ecosystem import ecosystem_finding
from polyculture.measure.performance import BUILTIN_METRICS
from polyculture.report import figures
from polyculture.run.emergence import AXIS_TITLES, metric_names
from polyculture.run.emergence import CROSSING_THRESHOLDS as CROSSING_LEVELS
from polyculture.run.results import RunResults, load_run
from polyculture.run.store import write_text
from polyculture.zoo.base import final_layer

REPORT_NAME = "report.html"
TABLES_DIR = "report_tables"
SPLIT = "test"
"""The split the headline figures use (shifted test sets are in the robustness section)."""
RELIABILITY_BINS = 10

# ---------------------------------------------------------------------------------------------
# Formatting: every cell reaches the template as a string (Jinja escapes it there).

DASH = "—"


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def num(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or a dash when missing.

    Examples
    --------
    >>> num(0.12345), num(float("nan"))
    ('0.123', '—')
    """
    return f"{float(value):.{digits}f}" if _finite(value) else DASH


def pct(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage.

    Examples
    --------
    >>> pct(0.9123)
    '91.2%'
    """
    return f"{100 * float(value):.{digits}f}%" if _finite(value) else DASH


def sig(value: Any) -> str:
    """Three significant digits, scientific notation for very small or large values.

    Examples
    --------
    >>> sig(0.000012), sig(5.929), sig(138756.6)
    ('1.20e-05', '5.93', '1.39e+05')
    """
    if not _finite(value):
        return DASH
    x = float(value)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.2e}"
    return f"{x:.3g}"


def share(value: Any) -> str:
    """A (possibly tiny) fraction as a percentage with two significant digits.

    Examples
    --------
    >>> share(0.0123), share(3.2e-9)
    ('1.23%', '3.2e-07%')
    """
    if not _finite(value):
        return DASH
    x = 100 * float(value)
    return f"{x:.2f}%" if x == 0 or abs(x) >= 0.01 else f"{x:.1e}%"


def interval(low: Any, high: Any, fmt: Callable[[Any], str] = pct) -> str:
    """``[low, high]`` or a dash when either bound is missing."""
    return f"[{fmt(low)}, {fmt(high)}]" if _finite(low) and _finite(high) else DASH


# ---------------------------------------------------------------------------------------------
# The page model handed to the template.


@dataclass
class Table:
    """One HTML table: string cells, numeric columns right-aligned, optional CSV beside it."""

    caption: str
    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)
    csv: str = ""


@dataclass
class FigureView:
    """An inline SVG figure with its accessible label and caption."""

    svg: str
    label: str
    caption: str


@dataclass
class Section:
    """One section of the report (``id`` is the anchor used in the table of contents)."""

    id: str
    title: str
    intro: list[str] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    figures: list[FigureView] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def _table(caption: str, frame: pd.DataFrame, numeric: Iterable[str] = (), csv: str = "") -> Table:
    numeric = set(numeric)
    return Table(
        caption=caption,
        columns=[str(c) for c in frame.columns],
        rows=[[str(v) for v in row] for row in frame.itertuples(index=False)],
        numeric=[c in numeric for c in frame.columns],
        csv=csv,
    )


class _Csv:
    """Collects the CSV files of one build (written atomically, stale ones removed)."""

    def __init__(self, root: Path) -> None:
        self.folder = root / TABLES_DIR
        self.written: dict[str, str] = {}
        self.prefix = ""  # set while one study of a suite report adds its tables

    def add(self, name: str, frame: pd.DataFrame) -> str:
        name = f"{self.prefix}{name}"
        self.written[f"{name}.csv"] = frame.to_csv(index=False, lineterminator="\n")
        return f"{TABLES_DIR}/{name}.csv"

    def flush(self) -> None:
        for name, text in self.written.items():
            write_text(self.folder / name, text)
        if self.folder.is_dir():
            for path in self.folder.glob("*.csv"):
                if path.name not in self.written:  # from an earlier build with other sections
                    path.unlink()


# ---------------------------------------------------------------------------------------------
# Reading helpers.


def _optional_table(results: RunResults, name: str) -> pd.DataFrame | None:
    """A table of ``tables/`` or ``None`` when it is missing or empty (audit runs, < 2 members)."""
    path = results.store.tables_dir / f"{name}.parquet"
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    return None if frame.empty else frame


def _member_labels(members: pd.DataFrame) -> dict[str, str]:
    """Display label per member id: the model name and seed (audited models: the name)."""
    labels: dict[str, str] = {}
    for row in members.itertuples(index=False):
        seed = int(row.seed) if _finite(row.seed) else -1
        labels[str(row.member_id)] = f"{row.name} s{seed}" if seed >= 0 else str(row.name)
    counts = pd.Series(list(labels.values())).value_counts()
    for member_id, label in labels.items():  # two members with one label: add the id
        if counts[label] > 1:
            labels[member_id] = f"{label} [{member_id[:6]}]"
    return labels


def _cluster_order(similarity: np.ndarray) -> np.ndarray:
    """Leaf order of average-linkage clustering on ``1 - similarity`` (NaN = unrelated)."""
    n = len(similarity)
    if n < 3:
        return np.arange(n)
    distance = 1.0 - np.nan_to_num(similarity, nan=0.0)
    distance = np.clip((distance + distance.T) / 2, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average", optimal_ordering=True)
    return np.asarray(leaves_list(tree))


def _symmetric(
    rows: pd.DataFrame, ids: list[str], diagonal: float = 1.0
) -> np.ndarray:  # rows: member_a, member_b, value
    index = {member_id: i for i, member_id in enumerate(ids)}
    matrix = np.full((len(ids), len(ids)), np.nan)
    for a, b, value in rows[["member_a", "member_b", "value"]].itertuples(index=False):
        if a in index and b in index:
            matrix[index[a], index[b]] = matrix[index[b], index[a]] = value
    np.fill_diagonal(matrix, np.where(np.isnan(np.diag(matrix)), diagonal, np.diag(matrix)))
    return matrix


# ---------------------------------------------------------------------------------------------
# Sections.


def _overview(results: RunResults, timing: dict[str, Any]) -> Section:
    study, task, members = results.study, results.task, results.members
    audit = study.get("kind") == "audit"
    section = Section("overview", "Overview")
    facts = section.facts
    facts.append(("run", results.root.name))
    kinds = {"audit": "audit of given predictions", "recommend": "recommendation study"}
    facts.append(("kind", kinds.get(str(study.get("kind")), "trained zoo")))
    if study.get("description"):
        facts.append(("description", str(study["description"])))
    if audit and study.get("source"):
        facts.append(("predictions file", Path(str(study["source"])).name))  # no absolute path
    facts.append(("task", f"{task.get('name', '?')} ({task.get('modality', '?')})"))
    classes = [str(c) for c in task.get("classes", [])]
    shown = ", ".join(classes[:30]) + (f", … ({len(classes)} in all)" if len(classes) > 30 else "")
    if classes:  # a recommendation study ranks items instead
        facts.append(("classes", f"{len(classes)}: {shown}"))
    if task.get("group_attributes"):
        facts.append(("group attributes", ", ".join(map(str, task["group_attributes"]))))
    if study.get("seeds"):
        facts.append(("seeds", ", ".join(map(str, study["seeds"]))))
    ok = int((members["status"] == "ok").sum())
    facts.append(("members", f"{len(members)} ({ok} ok, {len(members) - ok} failed)"))
    if timing:
        wall = timing.get("wall_seconds")
        detail = ", ".join(
            f"{timing[k]} {k}" for k in ("workers", "trained", "reused") if k in timing
        )
        facts.append(("wall time", f"{num(wall, 1)} s" + (f" ({detail})" if detail else "")))
    versions = study.get("versions", {})
    if versions:
        facts.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))

    sizes = task.get("sizes", {})
    if sizes:
        frame = pd.DataFrame({"split": list(sizes), "instances": [str(v) for v in sizes.values()]})
        section.tables.append(_table("Split sizes", frame, ["instances"]))
    cleaning = task.get("cleaning", [])
    if cleaning:
        frame = pd.DataFrame(cleaning).astype(str)
        section.tables.append(_table("Cleaning log (task.json)", frame, ["removed"]))
    models = []
    for name, group in members.groupby("name", sort=False):
        models.append(
            {
                "model": str(name),
                "family": str(group["family"].iloc[0]),
                "kind": str(group["kind"].iloc[0]),
                "seeds": ", ".join(str(int(s)) for s in group["seed"] if int(s) >= 0) or DASH,
                "members ok": f"{int((group['status'] == 'ok').sum())} of {len(group)}",
                "parameters": _count(group["n_parameters"].median()),
            }
        )
    section.tables.append(_table("Models", pd.DataFrame(models), ["members ok", "parameters"]))
    return section


def _count(value: Any) -> str:
    return f"{int(value):,}" if _finite(value) else DASH


def _performance(results: RunResults, labels: dict[str, str], csv: _Csv) -> Section | None:
    members = results.members
    ok = members[members["status"] == "ok"]
    if ok.empty or f"{SPLIT}_accuracy" not in ok:
        return None
    summary = results.summary(SPLIT)
    summary = summary[summary["members"] > summary["failed"]]
    section = Section("performance", "Performance on the test set")
    best = summary.loc[summary["accuracy_mean"].idxmax()]
    section.intro.append(
        f"{best['name']} is the most accurate model: {pct(best['accuracy_mean'])} test accuracy"
        + (f" (mean over {int(best['members'] - best['failed'])} seeds)." if best["members"] > 1
           else ".")
    )  # fmt: skip
    several = bool((summary["members"] - summary["failed"] > 1).any())
    section.intro.append(
        "Accuracy intervals are 95% bootstrap intervals over test instances"
        + (
            "; with several seeds the per-model table gives the mean ± standard deviation over "
            "seeds and the span of the members' intervals."
            if several
            else "."
        )
        + (
            " ECE uses 15 confidence bins (top label); NLL is in nats."
            if ok.get(f"{SPLIT}_nll", pd.Series(dtype=float)).notna().any()
            else ""
        )
    )

    def column(frame: pd.DataFrame, name: str) -> pd.Series:
        return frame[name] if name in frame else pd.Series(np.nan, index=frame.index)

    # Metrics beyond the built-ins: answer metrics (exact match, ...) and plugin metrics.
    extra = [name for name in metric_names(ok, SPLIT) if name not in BUILTIN_METRICS]
    rows = []
    for row in summary.itertuples(index=False):
        group = ok[ok["name"] == row.name]
        n = len(group)
        accuracy = pct(row.accuracy_mean) + (
            f" ± {100 * row.accuracy_std:.1f}" if n > 1 and _finite(row.accuracy_std) else ""
        )
        low = column(group, f"{SPLIT}_accuracy_ci_low").min()
        high = column(group, f"{SPLIT}_accuracy_ci_high").max()
        entry = {
            "model": str(row.name),
            "family": str(row.family),
            "members": f"{n}" + (f" (+{int(row.failed)} failed)" if row.failed else ""),
            "accuracy": accuracy,
            "95% CI": interval(low, high),
            "macro-F1": num(row.macro_f1_mean),
            "NLL": num(row.nll_mean),
            "ECE": num(row.ece_mean),
            "parameters": _count(row.n_parameters),
        }
        for name in extra:
            entry[name] = num(column(group, f"{SPLIT}_{name}").mean())
        if summary["published"].notna().any():
            entry["published vs measured"] = (
                f"{pct(row.published)} vs {pct(row.accuracy_mean)} "
                f"({100 * (row.accuracy_mean - row.published):+.1f} pts)"
                if _finite(row.published)
                else DASH
            )
        rows.append(entry)
    frame = _drop_empty(pd.DataFrame(rows))
    path = csv.add("models", summary)
    numeric = [c for c in frame.columns if c not in ("model", "family")]
    if several:  # with one member per model the per-member table says it all
        section.tables.append(_table("Per model (mean over seeds)", frame, numeric, path))

    member_rows = []
    for row in ok.itertuples(index=False):
        record = row._asdict()
        member_rows.append(
            {
                "member": labels[str(row.member_id)],
                "id": str(row.member_id),
                "accuracy": pct(record.get(f"{SPLIT}_accuracy")),
                "95% CI": interval(
                    record.get(f"{SPLIT}_accuracy_ci_low"), record.get(f"{SPLIT}_accuracy_ci_high")
                ),
                "macro-F1": num(record.get(f"{SPLIT}_macro_f1")),
                "macro-F1 CI": interval(
                    record.get(f"{SPLIT}_macro_f1_ci_low"),
                    record.get(f"{SPLIT}_macro_f1_ci_high"),
                    num,
                ),
                "NLL": num(record.get(f"{SPLIT}_nll")),
                "Brier": num(record.get(f"{SPLIT}_brier")),
                "ECE": num(record.get(f"{SPLIT}_ece")),
                **{
                    name: num(record.get(f"{SPLIT}_{name}"))
                    + (
                        " " + interval(low, high, num)
                        if _finite(low := record.get(f"{SPLIT}_{name}_ci_low"))
                        and _finite(high := record.get(f"{SPLIT}_{name}_ci_high"))
                        else ""
                    )
                    for name in extra
                },
                "train s": num(record.get("train_seconds"), 2),
            }
        )
    frame = _drop_empty(pd.DataFrame(member_rows))
    path = csv.add("members", members)
    numeric = [c for c in frame.columns if c not in ("member", "id")]
    section.tables.append(_table("Per member", frame, numeric, path))

    names = summary["name"].astype(str).tolist()
    groups = [ok[ok["name"] == name] for name in names]
    svg = figures.accuracy_dots(
        names,
        [g[f"{SPLIT}_accuracy"].tolist() for g in groups],
        [column(g, f"{SPLIT}_accuracy_ci_low").tolist() for g in groups],
        [column(g, f"{SPLIT}_accuracy_ci_high").tolist() for g in groups],
        f"{figures.short(str(best['name']), 40)} is most accurate ({pct(best['accuracy_mean'])})",
    )
    section.figures.append(
        FigureView(
            svg,
            f"Dot plot of test accuracy with 95% intervals for every member of {len(names)} models",
            "Test accuracy of every member (one dot per seed) with its 95% bootstrap interval.",
        )
    )
    return section


def _drop_empty(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop columns with no value in any row (e.g. NLL for audited hard predictions)."""
    empty = [c for c in frame.columns if (frame[c] == DASH).all()]
    return frame.drop(columns=empty)


def _training(results: RunResults) -> Section | None:
    history = _optional_table(results, "history")
    if history is None or "val_accuracy" not in history:
        return None
    names = results.members.set_index("member_id")["name"].astype(str)
    history = history.assign(model=history["member_id"].map(names))
    for column in ("val_loss", "train_loss"):
        if column not in history:
            history[column] = np.nan
    order = list(dict.fromkeys(results.members["name"].astype(str)))
    curves = {}
    for name in order:
        group = history[history["model"] == name]
        if group.empty:
            continue
        mean = group.groupby("epoch")[["val_accuracy", "val_loss", "train_loss"]].mean()
        curves[name] = (
            mean.index.to_numpy(),
            mean["val_accuracy"].to_numpy(float),
            mean["val_loss"].to_numpy(float),
            mean["train_loss"].to_numpy(float),
        )
    if not curves:
        return None
    final = {name: curve[1][-1] for name, curve in curves.items()}
    best = max(final, key=lambda name: final[name])
    title = f"{figures.short(best, 40)} ends with the best validation accuracy ({pct(final[best])})"
    section = Section("training", "Training curves")
    section.intro.append(
        "Validation accuracy and loss per evaluated epoch, averaged over seeds (classical "
        "members, fitted in one step, have no curve)."
    )
    section.figures.append(
        FigureView(
            figures.training_curves(curves, title),
            f"Line charts of validation accuracy and loss against epoch for {len(curves)} models; "
            + title,
            title + ". Left: validation accuracy; right: validation loss (bold) and training "
            "loss (faint).",
        )
    )
    return section


def _calibration(results: RunResults, csv: _Csv) -> Section | None:
    members = results.members
    ok = members[members["status"] == "ok"]
    store = results.store
    predictions: pd.DataFrame | None = None
    bins: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    rows = []
    for name, group in ok.groupby("name", sort=False):
        for member_id in group["member_id"]:  # the first member with stored probabilities
            proba = store.probabilities(str(member_id)).get(SPLIT)
            if proba is None:
                continue
            if predictions is None:
                predictions = results.predictions()
                predictions = predictions[predictions["split"] == SPLIT]
            labels = predictions.loc[predictions["member_id"] == member_id, "label"].to_numpy()
            if len(labels) != len(proba):
                continue
            confidence = proba.max(axis=1)
            correct = proba.argmax(axis=1) == labels
            edges = np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)
            which = np.clip(np.digitize(confidence, edges[1:-1]), 0, RELIABILITY_BINS - 1)
            count = np.bincount(which, minlength=RELIABILITY_BINS)
            filled = count > 0
            mean_conf = np.bincount(which, confidence, RELIABILITY_BINS)[filled] / count[filled]
            mean_acc = np.bincount(which, correct, RELIABILITY_BINS)[filled] / count[filled]
            ece = float(np.sum(count[filled] * np.abs(mean_acc - mean_conf)) / len(labels))
            bins[str(name)] = (mean_conf, mean_acc, count[filled])
            rows.append(
                {
                    "model": str(name),
                    "member": str(member_id),
                    "mean confidence": float(confidence.mean()),
                    "accuracy": float(correct.mean()),
                    "ece_10_bins": ece,
                }
            )
            break
    if not bins:
        return None
    frame = pd.DataFrame(rows)
    best = frame.loc[frame["ece_10_bins"].idxmin()]
    worst = frame.loc[frame["ece_10_bins"].idxmax()]
    name = figures.short(str(best["model"]), 36)
    title = f"{name} is best calibrated (ECE {best['ece_10_bins']:.3f})"
    section = Section("calibration", "Calibration")
    section.intro.append(
        f"Reliability diagram of one member per model on the test set ({RELIABILITY_BINS} "
        "equal-width confidence bins): points on the diagonal are calibrated, points below it "
        f"are over-confident. Least calibrated: {worst['model']} (ECE "
        f"{worst['ece_10_bins']:.3f})."
    )
    section.figures.append(
        FigureView(
            figures.reliability(bins, title),
            f"Reliability diagram of {len(bins)} models; {title}",
            title + ". Accuracy against mean confidence per bin; the dashed line is perfect "
            "calibration.",
        )
    )
    shown = pd.DataFrame(
        {
            "model": frame["model"],
            "member": frame["member"],
            "mean confidence": frame["mean confidence"].map(pct),
            "accuracy": frame["accuracy"].map(pct),
            f"ECE ({RELIABILITY_BINS} bins)": frame["ece_10_bins"].map(num),
        }
    )
    path = csv.add("calibration", frame)
    section.tables.append(
        _table("Calibration of the plotted members", shown, list(shown.columns[2:]), path)
    )
    return section


def _robustness(results: RunResults, csv: _Csv) -> Section | None:
    summary = results.summary(SPLIT)
    shifts = sorted(
        c.removesuffix("_accuracy_mean")
        for c in summary.columns
        if c.startswith(f"{SPLIT}_") and c.endswith("_accuracy_mean")
    )
    summary = summary[summary["accuracy_mean"].notna()]
    if not shifts or summary.empty:
        return None
    splits = [SPLIT, *shifts]
    accuracy = {
        str(row["name"]): [row["accuracy_mean"], *(row[f"{s}_accuracy_mean"] for s in shifts)]
        for _, row in summary.iterrows()
    }
    drops = {s: float(np.nanmean(summary[f"{s}_accuracy_mean"] - summary["accuracy_mean"]))
             for s in shifts}  # fmt: skip
    worst = min(drops, key=lambda s: drops[s])
    title = f"accuracy falls most on {worst} ({100 * drops[worst]:+.1f} points on average)"
    section = Section("robustness", "Robustness to shifted test sets")
    section.intro.append(
        "Test accuracy on the clean test set and on each shifted copy of it, mean over seeds; "
        "the table gives the change from the clean test set in percentage points."
    )
    section.figures.append(
        FigureView(
            figures.robustness(splits, accuracy, title),
            f"Line chart of accuracy on {len(splits)} evaluation sets for {len(accuracy)} models; "
            + title,
            title + ".",
        )
    )
    rows, raw = [], []
    for name, values in accuracy.items():
        entry = {"model": name, SPLIT: pct(values[0])}
        for shift, value in zip(shifts, values[1:], strict=True):
            entry[shift] = f"{pct(value)} ({100 * (value - values[0]):+.1f})"
        rows.append(entry)
        raw.append({"model": name, **dict(zip(splits, values, strict=True))})
    path = csv.add("robustness", pd.DataFrame(raw))
    section.tables.append(
        _table("Accuracy per evaluation set (change in points)", pd.DataFrame(rows), splits, path)
    )
    return section


def _adversarial(results: RunResults, csv: _Csv) -> Section | None:
    members = results.members
    if "robust_accuracy" not in members.columns:
        return None
    ok = members[members["status"] == "ok"]
    attacked = ok[ok["robust_accuracy"].notna()]
    if attacked.empty:
        return None
    evaluate = results.study.get("evaluate", {}) or {}
    grouped = attacked.groupby("name", sort=False)
    frame = pd.DataFrame(
        {
            "model": list(grouped.groups),
            "members": grouped.size().to_numpy(),
            "clean": grouped["robust_clean_accuracy"].mean().to_numpy(),
            "under PGD": grouped["robust_accuracy"].mean().to_numpy(),
        }
    )
    frame["drop (points)"] = 100 * (frame["under PGD"] - frame["clean"])
    shown = frame.assign(
        clean=frame["clean"].map(pct),
        **{"under PGD": frame["under PGD"].map(pct)},
        **{"drop (points)": frame["drop (points)"].map(lambda v: f"{v:+.1f}")},
    )
    section = Section("adversarial", "Adversarial robustness (PGD)")
    section.intro.append(
        f"Accuracy on the first {evaluate.get('robust_size', '?')} test instances, clean and "
        f"under an L∞ PGD attack ({evaluate.get('robust_steps', '?')} steps, radius "
        f"{evaluate.get('robust_epsilon', '?')} × the standard deviation of the training inputs; "
        "text members are attacked in embedding space); mean over seeds. An instance counts as "
        "robust only when it is right both clean and attacked."
    )
    skipped = ok[ok["robust_accuracy"].isna() & (ok["robust_note"].fillna("") != "")]
    if not skipped.empty:
        reasons = skipped.groupby("robust_note")["name"].unique()
        section.intro.append(
            "Not attacked: "
            + "; ".join(f"{', '.join(map(str, names))} ({note})" for note, names in reasons.items())
            + "."
        )
    path = csv.add("adversarial", frame)
    section.tables.append(
        _table(
            "Clean vs PGD accuracy", shown, ["members", "clean", "under PGD", "drop (points)"], path
        )
    )
    return section


def _attention(results: RunResults, labels: dict[str, str]) -> Section | None:
    members = results.members
    ok = members[members["status"] == "ok"].drop_duplicates("name")
    section = Section("attention", "Attention on probe inputs")
    for member_id in ok["member_id"].astype(str):
        stored = results.store.attention(member_id)
        if "maps" in stored:
            maps = stored["maps"]  # (n, depth, heads, T, T)
            # Each block's [CLS] row, mean over heads: where the classifier token looks.
            cls = maps[:, :, :, 0, 1:].mean(axis=2)  # (n, depth, T-1)
            matrix = cls[:, -1]  # last block, (n, T-1)
            what = "the [CLS] token's attention in the last block (mean over heads)"
        elif "pooling" in stored:
            matrix = stored["pooling"]  # (n, positions)
            what = "the attention-pooling weights"
        else:
            continue
        title = f"{labels[member_id]}: {what}"
        section.figures.append(
            FigureView(
                figures.heatmap(
                    matrix,
                    [f"probe {i}" for i in range(len(matrix))],
                    [str(j) for j in range(matrix.shape[1])],
                    title=figures.short(labels[member_id], 40),
                    colorbar="attention weight",
                    key=f"attention-{member_id}",
                    vmax=float(np.nanmax(matrix)) or 1.0,
                    xlabel="input position (token / patch)",
                ),
                f"Heatmap of {what} for {len(matrix)} probe inputs of {labels[member_id]}",
                title + "; rows are the first test instances.",
            )
        )
    if not section.figures:
        return None
    section.intro.append(
        "Where attention goes on the first test instances (one member per model): for "
        "transformers the [CLS] token's weights over the input tokens or patches, for CNN/RNN "
        "members with attention pooling the pooling weights over positions. Full maps: "
        "members/<id>/attention.safetensors."
    )
    return section


def _similarity(
    results: RunResults, labels: dict[str, str], csv: _Csv
) -> tuple[Section | None, list[str]]:
    """The CKA section, and the clustered member order (reused by the agreement heatmap)."""
    table = _optional_table(results, "similarity")
    members = results.members
    if table is None or "layers" not in members:
        return None, []
    table = table[table["measure"] == "linear_cka"]
    layers = {
        str(row.member_id): [x for x in str(row.layers).split(",") if x]
        for row in members.itertuples(index=False)
    }
    final = {m: final_layer(v) for m, v in layers.items() if v}
    is_final = [
        final.get(a) == la and final.get(b) == lb
        for a, la, b, lb in table[["member_a", "layer_a", "member_b", "layer_b"]].itertuples(
            index=False
        )
    ]
    final_rows = table[is_final]
    present = set(final_rows["member_a"]) | set(final_rows["member_b"])
    ids = [m for m in members["member_id"].astype(str) if m in present]
    if len(ids) < 2:
        return None, []
    matrix = _symmetric(final_rows, ids)
    order = _cluster_order(matrix)
    ids = [ids[i] for i in order]
    matrix = matrix[np.ix_(order, order)]
    names = members.set_index("member_id")["name"].astype(str)

    # The headline: the model whose seeds agree most, else the most similar pair of members.
    within: dict[str, float] = {}
    for name in dict.fromkeys(names[ids]):
        idx = [i for i, m in enumerate(ids) if names[m] == name]
        if len(idx) > 1:
            block = matrix[np.ix_(idx, idx)]
            within[name] = float(np.nanmean(block[~np.eye(len(idx), dtype=bool)]))
    if within:
        top = max(within, key=lambda n: within[n])
        title = f"{figures.short(top, 36)} members agree most (CKA {within[top]:.2f})"
    else:
        upper = np.where(np.triu(np.ones_like(matrix, dtype=bool), 1), matrix, np.nan)
        i, j = np.unravel_index(np.nanargmax(upper), upper.shape)
        title = f"most similar: {labels[ids[i]]} and {labels[ids[j]]} (CKA {matrix[i, j]:.2f})"
    section = Section("similarity", "Representational similarity (linear CKA)")
    section.intro.append(
        "Linear CKA between the final hidden layers of every pair of members on the probe set "
        "(1 = the same representation up to rotation and scale). Members are ordered by "
        "average-linkage clustering on 1 − CKA, so blocks of similar members sit together."
    )
    svg = figures.heatmap(
        matrix,
        [labels[m] for m in ids],
        [labels[m] for m in ids],
        title=title,
        colorbar="linear CKA (final layer)",
        key="cka",
    )
    section.figures.append(
        FigureView(
            svg,
            f"Heatmap of linear CKA between the final layers of {len(ids)} members; {title}",
            title + ". Member × member linear CKA of the final layers.",
        )
    )
    frame = pd.DataFrame(matrix, columns=[labels[m] for m in ids])
    frame.insert(0, "member", [labels[m] for m in ids])
    csv.add("similarity_final_layer", frame)

    # Layer x layer for the most and the least similar pair of models (their first seeds).
    first = [m for m in members.drop_duplicates("name")["member_id"].astype(str) if m in ids]
    position = {m: i for i, m in enumerate(ids)}
    pairs = sorted(
        (
            (matrix[position[a], position[b]], a, b)
            for i, a in enumerate(first)
            for b in first[i + 1 :]
            if np.isfinite(matrix[position[a], position[b]])
        ),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    lookup = {
        (a, la, b, lb): v
        for a, la, b, lb, v in table[
            ["member_a", "layer_a", "member_b", "layer_b", "value"]
        ].itertuples(index=False)
    }
    chosen = pairs[:1] + (pairs[-1:] if len(pairs) > 1 else [])
    for rank, (value, a, b) in zip(("most", "least"), chosen, strict=False):
        grid = np.array(
            [
                [lookup.get((a, la, b, lb), lookup.get((b, lb, a, la), np.nan)) for lb in layers[b]]
                for la in layers[a]
            ]
        )
        if grid.size < 2 or np.isnan(grid).all():
            continue
        caption = (
            f"{rank} similar pair of models: {names[a]} vs {names[b]} (final-layer CKA {value:.2f})"
        )
        svg = figures.heatmap(
            grid,
            layers[a],
            layers[b],
            title=f"{rank} similar models: final-layer CKA {value:.2f}",
            colorbar="linear CKA",
            key=f"layers-{rank}",
            ylabel=f"layer of {figures.short(labels[a], 36)}",
            xlabel=f"layer of {figures.short(labels[b], 36)}",
        )
        section.figures.append(
            FigureView(svg, f"Heatmap of layer by layer linear CKA; {caption}", caption + ".")
        )
    return section, ids


def _agreement(
    results: RunResults, labels: dict[str, str], order: list[str], csv: _Csv
) -> Section | None:
    table = _optional_table(results, "agreement")
    if table is None:
        return None
    rows = table[(table["measure"] == "error_consistency") & (table["split"] == SPLIT)]
    ok = results.members[results.members["status"] == "ok"]
    ids = [m for m in ok["member_id"].astype(str) if m in set(rows["member_a"])]
    if len(ids) < 2:
        return None
    if sorted(order) == sorted(ids):
        ids = order  # the CKA order: the two heatmaps read side by side
        matrix = _symmetric(rows, ids)
    else:
        matrix = _symmetric(rows, ids)
        clustered = _cluster_order(matrix)
        ids = [ids[i] for i in clustered]
        matrix = matrix[np.ix_(clustered, clustered)]
    headline = results.headline(SPLIT)
    within = headline.get("error_consistency_within", np.nan)
    across = headline.get("error_consistency_across", np.nan)
    if _finite(within) and _finite(across):
        more = "within" if within > across else "across"
        title = f"errors agree more {more} families (κ {within:.2f} within vs {across:.2f} across)"
    else:
        upper = np.where(np.triu(np.ones_like(matrix, dtype=bool), 1), matrix, np.nan)
        i, j = np.unravel_index(np.nanargmax(upper), upper.shape)
        title = (
            f"{figures.short(labels[ids[i]], 24)} and {figures.short(labels[ids[j]], 24)} "
            f"fail most alike (κ {matrix[i, j]:.2f})"
        )
    section = Section("agreement", "Error consistency")
    section.intro.append(
        "Error consistency κ (Geirhos et al. 2020) between every pair of members on the test "
        "set: 0 = their errors overlap as much as expected from their accuracies alone, 1 = they "
        "fail on exactly the same instances, negative = fewer shared errors than chance."
    )
    finite = matrix[np.isfinite(matrix)]
    svg = figures.heatmap(
        matrix,
        [labels[m] for m in ids],
        [labels[m] for m in ids],
        title=title,
        colorbar="error consistency κ",
        key="agreement",
        vmin=min(0.0, float(finite.min()) if finite.size else 0.0),
    )
    section.figures.append(
        FigureView(
            svg,
            f"Heatmap of pairwise error consistency of {len(ids)} members; {title}",
            title + ".",
        )
    )
    frame = pd.DataFrame(matrix, columns=[labels[m] for m in ids])
    frame.insert(0, "member", [labels[m] for m in ids])
    csv.add("error_consistency", frame)
    return section


def _failures(results: RunResults, csv: _Csv) -> Section | None:
    table = _optional_table(results, "failure_counts")
    if table is None:
        return None
    zoo = table[(table["scope"] == "zoo") & (table["split"] == SPLIT)].sort_values("k")
    if zoo.empty:
        return None
    k = zoo["k"].to_numpy(int)
    observed = zoo["observed"].to_numpy(float)
    expected = zoo["expected"].to_numpy(float)
    members = int(k.max())
    title = (
        f"{pct(observed[-1])} of instances fail all {members} members "
        f"vs {share(expected[-1])} if errors were independent"
    )
    section = Section("failures", "How many members fail each instance")
    section.intro.append(
        "Share of test instances failed by exactly k members (bars) against the Poisson-binomial "
        "distribution the members' error rates give if their errors were independent (dots). "
        "Excess mass at both ends (everyone right, everyone wrong) is homogenization."
    )
    section.figures.append(
        FigureView(
            figures.failure_counts(k, observed, expected, members, title),
            f"Bar chart of the number of members failing each test instance; {title}",
            title + " (y axis linear below 0.1%, logarithmic above).",
        )
    )
    shown = pd.DataFrame(
        {
            "members failing": k.astype(str),
            "observed": [pct(v, 2) for v in observed],
            "independent errors": [share(v) for v in expected],
        }
    )
    path = csv.add("failure_counts", table)
    section.tables.append(
        _table("Failure-count distribution (whole zoo)", shown, list(shown.columns), path)
    )
    return section


def _systemic(results: RunResults, csv: _Csv) -> Section | None:
    table = _optional_table(results, "homogenization")
    if table is None:
        return None
    test = table[table["split"] == SPLIT]
    if test.empty:
        return None
    section = Section("systemic", "Systemic failure and homogenization")
    headline = results.headline(SPLIT)
    if headline:
        observed_ci, ratio_ci = headline["systemic_observed_ci"], headline["systemic_ratio_ci"]
        section.intro.append(
            f"{pct(headline['systemic_observed'], 2)} of test instances are failed by all "
            f"{headline['members']} members "
            f"(95% CI {interval(observed_ci[0], observed_ci[1], lambda v: pct(v, 2))}); "
            f"independent errors would give {share(headline['systemic_expected'])}, a ratio of "
            f"{sig(headline['systemic_ratio'])} "
            f"(95% CI {interval(ratio_ci[0], ratio_ci[1], sig)})."
        )
    section.intro.append(
        "Ratio and H = 1 mean failures look independent; above 1 they pile up on the same "
        "instances (Toups et al. 2023; Bommasani et al. 2022). Scopes: the whole zoo, each "
        "family and each model over its seeds."
    )
    rows = []
    for row in test.to_dict("records"):
        entry = {
            "scope": str(row["scope"]),
            "members": str(row["members"]),
            "mean error": pct(row["mean_error_rate"]),
            "systemic observed [95% CI]": f"{pct(row['systemic_observed'], 2)} "
            + interval(
                row["systemic_observed_ci_low"],
                row["systemic_observed_ci_high"],
                lambda v: pct(v, 2),
            ),
            "expected": sig(row["systemic_expected"]),
            "ratio [95% CI]": f"{sig(row['systemic_ratio'])} "
            + interval(row["systemic_ratio_ci_low"], row["systemic_ratio_ci_high"], sig),
            "H_avg": sig(row["h_avg"]),
            "H_unif": sig(row["h_unif"]),
            "H_worst": sig(row["h_worst"]),
        }
        for key in ("group_h_avg", "group_h_unif", "group_h_worst"):
            if key in row:
                entry[key.replace("group_h_", "group H_")] = sig(row[key])
        entry["notes"] = str(row.get("note") or "")
        rows.append(entry)
    frame = pd.DataFrame(rows)
    if (frame["notes"] == "").all():
        frame = frame.drop(columns="notes")
    path = csv.add("systemic", table)
    numeric = [c for c in frame.columns if c not in ("scope", "notes")]
    section.tables.append(_table("Systemic failure per scope (test set)", frame, numeric, path))
    return section


def _ecosystems(results: RunResults, csv: _Csv) -> Section | None:
    summary = _optional_table(results, "ecosystems")
    if summary is None:
        return None
    comparisons = _optional_table(results, "ecosystem_comparisons")
    comparisons = pd.DataFrame() if comparisons is None else comparisons
    definitions = {str(eco.get("name")): eco for eco in results.study.get("ecosystems", []) or []}
    section = Section("ecosystems", "Component sharing: which ecosystems fail together")
    if not comparisons.empty:
        section.intro.append(ecosystem_finding(summary, comparisons))
    section.intro.append(
        "Each ecosystem is a set of members a user could meet. Systemic-failure ratio: the share "
        "of test instances all its members fail, over the share expected if they failed "
        "independently (1 = independent). Error consistency: Cohen's κ of the members' "
        "right/wrong outcomes, mean over pairs. CKA: linear CKA of the members' final "
        "representations on the probe set, mean over pairs. Intervals: 95% percentile "
        "bootstrap over test instances; comparisons resample the same instances for every "
        "ecosystem (paired). Read the ratio together with accuracy: its independence baseline "
        "is a product of error rates, so it grows quickly as members get more accurate; error "
        "consistency is corrected for chance and is the fairer ranking across accuracies."
    )
    names = summary["ecosystem"].astype(str).tolist()
    labels = {
        "systemic_ratio": "systemic-failure ratio",
        "error_consistency": "error consistency (κ)",
        "cka": "mean CKA",
    }
    panels = [
        (
            labels[stat],
            summary[stat].tolist(),
            summary[f"{stat}_ci_low"].tolist(),
            summary[f"{stat}_ci_high"].tolist(),
        )
        for stat in ECOSYSTEM_STATISTICS
    ]
    title = "Homogeneity of each ecosystem (95% CI)"
    section.figures.append(
        FigureView(
            figures.interval_panels(
                names, panels, title, "ecosystems", reference=[1.0, 0.0], log=[True]
            ),
            f"Dot plots with intervals of three statistics for {len(names)} ecosystems",
            title + "; dotted lines mark independence.",
        )
    )
    rows = []
    for row in summary.to_dict("records"):
        entry = {
            "ecosystem": str(row["ecosystem"]),
            "models": ", ".join(
                map(str, definitions.get(str(row["ecosystem"]), {}).get("models", []))
            ),
            "members": str(row["members"]),
            "mean accuracy": pct(row["accuracy"]),
        }
        for stat in ECOSYSTEM_STATISTICS:
            fmt = sig if stat == "systemic_ratio" else num
            entry[f"{labels[stat]} [95% CI]"] = f"{fmt(row[stat])} " + interval(
                row[f"{stat}_ci_low"], row[f"{stat}_ci_high"], fmt
            )
        rows.append(entry)
    frame = pd.DataFrame(rows)
    path = csv.add("ecosystems", summary)
    section.tables.append(_table("Ecosystems (test set)", frame, list(frame.columns[2:]), path))
    if not comparisons.empty:
        shown = pd.DataFrame(
            {
                "ecosystem a": comparisons["ecosystem_a"].astype(str),
                "ecosystem b": comparisons["ecosystem_b"].astype(str),
                "statistic": [labels.get(str(s), str(s)) for s in comparisons["statistic"]],
                "a − b [95% CI]": [
                    f"{sig(d)} " + interval(lo, hi, sig)
                    for d, lo, hi in zip(
                        comparisons["difference"],
                        comparisons["ci_low"],
                        comparisons["ci_high"],
                        strict=True,
                    )
                ],
                "p (paired bootstrap)": [
                    "< 0.001" if p == 0 else sig(p) for p in comparisons["p_value"]
                ],
            }
        )
        path = csv.add("ecosystem_comparisons", comparisons)
        section.tables.append(
            _table(
                "Paired comparisons between ecosystems",
                shown,
                ["a − b [95% CI]", "p (paired bootstrap)"],
                path,
            )
        )
    return section


def _scale(value: Any) -> str:
    """A scale value (parameters, rows, FLOPs) in 3 significant digits."""
    return "—" if not _finite(value) else f"{float(value):.3g}"


def _emergence(results: RunResults, csv: _Csv, part: str = "") -> Section | None:
    """The emergence section; ``part`` names the study inside a suite report (ids, titles)."""
    sweeps = results.study.get("sweeps", []) or []
    curves = _optional_table(results, "emergence_curves")
    notes = _optional_table(results, "emergence_notes")
    if not sweeps and curves is None and not _grokking(results):
        return None
    section = Section(
        f"emergence-{part}" if part else "emergence",
        f"{part}: emergence against scale" if part else "Emergence: abilities against scale",
    )
    verdicts = _optional_table(results, "emergence_verdicts")
    for row in [] if verdicts is None else verdicts.to_dict("records"):
        section.intro.append(f"Sweep {row['sweep']}: {row['text']}.")
    section.intro.append(
        "Each sweep places the members of one zoo entry on a scale axis and fits every metric "
        "with a power law, a sigmoid in log scale and a broken power law (Caballero et al. 2022). "
        "A curve jumps when a sharp fit beats the power law (ΔBIC ≥ 10 and a nested F-test), "
        "is flat and then steep over at most 35% of the log range, and concentrates its change "
        "(BIG-bench breakthroughness per step ≥ 1). Breaks come with 95% bootstrap CIs over "
        "seeds. The metric-swap test (Schaeffer et al. 2023) asks whether a jump under a "
        "discontinuous metric (exact match) survives a continuous one (per-token accuracy, "
        "log-likelihood): if not, the jump is likely an artifact of the metric."
    )
    for row in [] if notes is None else notes.to_dict("records"):
        section.intro.append(str(row["note"]))
    points = _optional_table(results, "emergence_points")
    if curves is not None and points is not None:
        for sweep_name, sweep_curves in curves.groupby("sweep", sort=False):
            _sweep_figure(section, str(sweep_name), sweep_curves, points, part)
        rows = []
        for row in curves.to_dict("records"):
            where = "none"
            if row["has_break"]:
                where = (
                    f"{_scale(row['break_location'])} "
                    f"[{_scale(row['break_location_ci_low'])}, "
                    f"{_scale(row['break_location_ci_high'])}]"
                )
            rows.append(
                {
                    "sweep": str(row["sweep"]),
                    "axis": str(row["axis"]),
                    "metric": str(row["metric"]),
                    "shape": f"{row['shape']}: {row['reason']}",
                    "break [95% CI]": where,
                    "breakthroughness / step": num(row["breakthroughness_per_step"], 2),
                    "linearity (R²)": num(row["linearity"], 2),
                    "largest scale: observed / power-law forecast": (
                        f"{num(row['extrapolated_observed'])} / "
                        f"{num(row['extrapolated_predicted'])}"
                    ),
                }
            )
        path = csv.add("emergence_curves", curves)
        section.tables.append(
            _table(
                "Shape of each metric over scale",
                pd.DataFrame(rows),
                numeric=["breakthroughness / step", "linearity (R²)"],
                csv=path,
            )
        )
    _generalization(results, section, csv, part)
    return section


GROKKING_RATIO = 5.0
"""A study without sweeps gets the emergence section when some member's held-out accuracy first
reaches 90% at least this many times later than its training accuracy (delayed generalization)."""


def _grokking(results: RunResults) -> bool:
    crossings = _optional_table(results, "emergence_crossings")
    if crossings is None:
        return False
    late = crossings[crossings["threshold"] == CROSSING_LEVELS[-1]]
    return bool((late["heldout_step"] >= GROKKING_RATIO * late["train_step"]).any())


def _sweep_figure(
    section: Section, sweep: str, curves: pd.DataFrame, points: pd.DataFrame, part: str = ""
) -> None:
    """One panel per metric of a sweep: members, the power law and the best sharp fit."""
    from polyculture.measure.emergence import fit_curve

    axis = str(curves["axis"].iloc[0])
    panels: list[figures.ScalingPanel] = []
    for row in curves.to_dict("records"):
        metric = str(row["metric"])
        chosen = points[(points["sweep"] == sweep) & (points["metric"] == metric)]
        x, y = chosen["scale"].to_numpy(float), chosen["value"].to_numpy(float)
        grid = np.geomspace(x.min(), x.max(), 200)
        fitted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for family in ("power_law", str(row["sharp_family"])):
            fitted[family.replace("_", " ")] = (grid, fit_curve(x, y, family).predict(grid))  # type: ignore[arg-type]
        found = None
        if row["has_break"]:
            found = (
                float(row["break_location"]),
                float(row["break_location_ci_low"]),
                float(row["break_location_ci_high"]),
            )
        panels.append((metric, x, y, fitted, found))
    jumps = [str(r["metric"]) for r in curves.to_dict("records") if r["shape"] == "jump"]
    title = f"Sweep {sweep}: " + (
        f"{', '.join(jumps)} jump{'s' if len(jumps) == 1 else ''}" if jumps else "no jump"
    )
    section.figures.append(
        FigureView(
            figures.scaling_panels(
                panels, AXIS_TITLES.get(axis, axis), title, f"sweep-{part}-{sweep}"
            ),
            f"Scatter plots of {len(panels)} metrics against {AXIS_TITLES.get(axis, axis)} "
            f"with fitted curves; {title}",
            title + ". Dots: members (every seed); lines: fitted power law and the better sharp "
            "fit; dotted line and grey band: break and its 95% bootstrap CI.",
        )
    )


def _generalization(results: RunResults, section: Section, csv: _Csv, part: str = "") -> None:
    """Training vs held-out accuracy over steps, and when each first reaches 50% and 90%."""
    crossings = _optional_table(results, "emergence_crossings")
    history = _optional_table(results, "history")
    if crossings is None or history is None or "train_accuracy" not in history:
        return
    by_model = crossings.groupby(["name", "threshold"], sort=False)
    summary = by_model[["train_step", "heldout_step", "delay"]].median().reset_index()
    wide = summary.pivot(index="name", columns="threshold")
    order = list(dict.fromkeys(crossings["name"].astype(str)))
    delays = {
        name: wide.loc[name, ("delay", CROSSING_LEVELS[-1])] if name in wide.index else np.nan
        for name in order
    }
    ranked = sorted(order, key=lambda name: -np.nan_to_num(delays[name], nan=-1.0))[:6]
    first_seed = crossings.sort_values("seed").drop_duplicates("name").set_index("name")
    curves = {}
    for name in ranked:
        log = history[history["member_id"] == first_seed.loc[name, "member_id"]].sort_values("step")
        curves[name] = (
            log["step"].to_numpy(float),
            log["train_accuracy"].to_numpy(float),
            log["val_accuracy"].to_numpy(float),
        )
    top = ranked[0]
    if _finite(delays[top]):
        title = (
            f"{figures.short(top, 40)}: training accuracy reaches 90% "
            f"{_count(delays[top])} steps before held-out accuracy does"
        )
    else:
        title = "Training and held-out accuracy over training"
    section.figures.append(
        FigureView(
            figures.generalization_curves(curves, title, f"generalization-{part}"),
            f"Line chart of training and held-out accuracy against step for {len(curves)} "
            f"models; {title}",
            title + " (first seed of each model; the models with the longest delay at 90%).",
        )
    )

    def cell(name: str, column: str, level: float, missing: str) -> str:
        value = wide.loc[name, (column, level)] if name in wide.index else np.nan
        return _count(value) if _finite(value) else missing

    rows = []
    for name in order:
        row = {"model": name}
        for level in CROSSING_LEVELS:
            row[f"train ≥ {level:.0%} at step"] = cell(name, "train_step", level, "never")
            row[f"held-out ≥ {level:.0%} at step"] = cell(name, "heldout_step", level, "never")
            row[f"delay at {level:.0%}"] = cell(name, "delay", level, "—")
        rows.append(row)
    path = csv.add("emergence_crossings", crossings)
    section.tables.append(
        _table(
            "When training and held-out (validation) accuracy first reach 50% and 90% "
            "(median over seeds; the first logged step at or above the level)",
            pd.DataFrame(rows),
            numeric=[c for c in rows[0] if c != "model"],
            csv=path,
        )
    )


def _budget(results: RunResults, csv: _Csv) -> Section | None:
    """Successive halving vs uniform allocation (runs written by ``polyculture budget``)."""
    table = _optional_table(results, "budget")
    if table is None:
        return None
    section = Section("budget", "Compute budget: successive halving vs uniform allocation")
    rows = []
    for method, group in table.groupby("allocation", sort=False):
        charged = group[group["charged"].astype(bool)]
        winner = group[group["winner"].astype(bool)]
        best = winner.iloc[0] if len(winner) else group.loc[group["val_accuracy"].idxmax()]
        rows.append(
            {
                "allocation": str(method),
                "winner": f"{best['candidate']} ({int(best['epochs'])} epochs)",
                "validation accuracy": pct(best["val_accuracy"]),
                "test accuracy": pct(best["test_accuracy"]),
                "member-epochs spent": _count(charged["cost_epochs"].sum()),
                "seconds spent": num(charged["cost_seconds"].sum(), 1),
            }
        )
    frame = pd.DataFrame(rows)
    if len(frame) == 2:
        spent = (
            table[table["charged"].astype(bool)]
            .groupby("allocation", sort=False)["cost_epochs"]
            .sum()
        )
        section.intro.append(
            f"{frame.iloc[0]['allocation']} reaches {frame.iloc[0]['test accuracy']} test "
            f"accuracy with {_count(spent.iloc[0])} member-epochs; "
            f"{frame.iloc[1]['allocation']} reaches {frame.iloc[1]['test accuracy']} with "
            f"{_count(spent.iloc[1])} ({pct(spent.iloc[0] / spent.iloc[1])} of its compute "
            "spent by the first)."
        )
    section.intro.append(
        "Successive halving trains every candidate briefly, keeps the best by validation "
        "accuracy and retrains the survivors from scratch for longer; uniform allocation gives "
        "every candidate the same epochs. Each (candidate, epochs) member is charged once per "
        "allocation (docs/budget.md)."
    )
    path = csv.add("budget", table)
    section.tables.append(
        _table("Winner and compute of each allocation", frame, ["member-epochs spent"], path)
    )
    return section


def _diversity(results: RunResults, csv: _Csv) -> Section | None:
    table = _optional_table(results, "diversity")
    if table is None:
        return None
    test = table[table["split"] == SPLIT]
    if test.empty:
        return None
    scopes = list(dict.fromkeys(test["scope"]))
    measures = list(dict.fromkeys(test["measure"]))
    wide = test.pivot(index="scope", columns="measure", values="value").loc[scopes, measures]
    shown = wide.map(num).reset_index()
    path = csv.add("diversity", table)
    section = Section("diversity", "Ensemble diversity")
    section.intro.append(
        "Kuncheva & Whitaker (2003) measures on the test set. Higher disagreement, entropy, "
        "Kohavi–Wolpert variance, GD and CFD mean more diverse members; higher Q, correlation, "
        "double fault and interrater κ mean less diverse ones."
    )
    section.tables.append(
        _table("Diversity per scope (test set)", shown, list(shown.columns[1:]), path)
    )
    return section


def _failed(results: RunResults, labels: dict[str, str], csv: _Csv) -> Section | None:
    members = results.members
    failed = members[members["status"] != "ok"]
    if failed.empty:
        return None
    frame = pd.DataFrame(
        {
            "member": [labels[str(m)] for m in failed["member_id"]],
            "id": failed["member_id"].astype(str),
            "status": failed["status"].astype(str),
            "reason": failed["reason"].fillna("").astype(str),
        }
    )
    path = csv.add("failed", frame)
    section = Section("failed", "Failed members")
    section.intro.append(
        f"{len(failed)} member(s) failed and are left out of every measure above "
        "(tracebacks in members/<id>/error.txt)."
    )
    section.tables.append(_table("Failed members", frame, [], path))
    return section


# ---------------------------------------------------------------------------------------------
# Rendering.


def _environment() -> jinja2.Environment:
    templates = resources.files("polyculture.report").joinpath("templates")

    def load(name: str) -> str:
        return templates.joinpath(name).read_text(encoding="utf-8")

    return jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


_URL = re.compile(r"(?i)\b(https?):(?=//)")


def render(sections: Sequence[Section], title: str, subtitle: str) -> str:
    """Render the sections into the report page (all text escaped, figures inlined).

    Any ``http://``/``https://`` left in user text is written with an entity for the colon
    (``http&#58;//``): it reads the same but no byte sequence of the page is a URL.

    Examples
    --------
    >>> page = render([Section("overview", "Overview", intro=["<b>hi</b>"])], "t", "s")
    >>> "&lt;b&gt;hi&lt;/b&gt;" in page and "<b>hi" not in page
    True
    """
    page = (
        _environment()
        .get_template("report.html")
        .render(sections=sections, title=title, subtitle=subtitle)
    )
    return _URL.sub(r"\1&#58;", page)


def build_suite_report(folder: str | Path) -> Path:
    """Write ``FOLDER/report.html`` for a suite run by :func:`polyculture.run.run_suite`.

    One overview row per study (task, members, link to its own report), then each study's
    emergence section (sweep fits, the metric-swap verdicts, training vs held-out accuracy).

    Raises
    ------
    RunStoreError
        When ``folder`` has no ``suite.json`` or a study's run directory is missing.
    """
    folder = Path(folder)
    try:
        suite = json.loads((folder / "suite.json").read_text())
    except (OSError, ValueError) as err:
        raise RunStoreError(
            f"'{folder}' is not a suite run folder ({err})",
            hint="pass the folder `polyculture run <suite>` wrote, e.g. runs/emergence",
        ) from None
    csv = _Csv(folder)
    overview = Section("overview", "Overview")
    if suite.get("description"):
        overview.intro.append(str(suite["description"]))
    rows, sections = [], [overview]
    for name in suite["studies"]:
        results = load_run(folder / name)
        members = results.members
        rows.append(
            {
                "study": name,
                "task": str(results.task.get("name", "?")),
                "members (ok / all)": f"{int((members['status'] == 'ok').sum())} / {len(members)}",
                "description": str(results.study.get("description", "")),
                "report": f"{name}/{REPORT_NAME}",
            }
        )
        csv.prefix = f"{name}-"
        section = _emergence(results, csv, part=name)
        if section is not None:
            sections.append(section)
    overview.tables.append(
        _table("Studies of the suite (each has its own full report)", pd.DataFrame(rows))
    )
    page = render(
        sections,
        f"polyculture report: {suite['name']}",
        f"Suite report · {len(rows)} studies",
    )
    csv.flush()
    target = folder / REPORT_NAME
    write_text(target, page)
    return target


def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report.html`` (and ``RUN_DIR/report_tables/*.csv``) from the stored files.

    Parameters
    ----------
    run_dir
        A run directory written by ``polyculture run`` or ``polyculture audit``.

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    RunStoreError
        When ``run_dir`` is not a (complete) run directory.

    Examples
    --------
    >>> import tempfile
    >>> from polyculture.run.audit import load_predictions, write_audit_run
    >>> from polyculture.run.analyze import analyze_run
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "p.csv").write_text("instance,label,a,b\\n1,x,x,y\\n2,y,y,y\\n3,x,x,x\\n")
    >>> store = write_audit_run(load_predictions(folder / "p.csv"), folder / "demo")
    >>> analyze_run(store, n_resamples=50)
    >>> build_report(folder / "demo").name
    'report.html'
    """
    from polyculture.report.fairness import fairness_sections
    from polyculture.report.monitor import monitor_sections
    from polyculture.report.recommendation import recommendation_sections
    from polyculture.report.selection import selection_sections
    from polyculture.report.support import support_section

    results = load_run(run_dir)
    root = results.root
    timing_path = root / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    csv = _Csv(root)
    labels = _member_labels(results.members)
    similarity, order = _similarity(results, labels, csv)
    candidates = [
        _overview(results, timing),
        _performance(results, labels, csv),
        _training(results),
        _calibration(results, csv),
        _robustness(results, csv),
        _adversarial(results, csv),
        _attention(results, labels),
        similarity,
        _agreement(results, labels, order, csv),
        _failures(results, csv),
        _systemic(results, csv),
        _ecosystems(results, csv),
        _emergence(results, csv),
        _budget(results, csv),
        _diversity(results, csv),
        *selection_sections(results, csv),
        *monitor_sections(results, csv),
        *fairness_sections(results, csv),
        *recommendation_sections(results, csv),
        support_section(results, csv),
        _failed(results, labels, csv),
    ]
    sections = [s for s in candidates if s is not None]
    audit = results.study.get("kind") == "audit"
    name = str(results.study.get("name") or root.name)
    subtitle = (
        f"{'Audit' if audit else 'Study'} report · task {results.task.get('name', '?')} · "
        f"{len(results.members)} members"
    )
    page = render(sections, f"polyculture report: {name}", subtitle)
    csv.flush()
    target = root / REPORT_NAME
    write_text(target, page)
    return target
