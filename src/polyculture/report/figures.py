"""Matplotlib figures of the HTML report, rendered to small, deterministic, self-contained SVG.

Every function takes plain arrays and labels (already read from the run directory) and returns
SVG text ready to inline in HTML5. The figures never touch pyplot or the caller's global
matplotlib state: each is a bare :class:`matplotlib.figure.Figure` rendered inside an
``rc_context`` that fixes the SVG hash salt (stable element ids), writes text as ``<text>`` nodes
(``svg.fonttype = "none"``, which matplotlib escapes, so a label like ``<script>`` stays inert)
and turns off mathtext parsing (a ``$`` in a model name is text, not a formula).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

OKABE_ITO = [
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
]
"""Okabe & Ito's colour-blind-safe palette (yellow late: it is pale on white)."""
LINE_STYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
HEATMAP = "cividis"  # perceptually uniform and readable with any colour-vision deficiency

_RC: Any = {  # Any: matplotlib types rc keys as literals
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100.0,
    "savefig.bbox": "tight",
}


def style(index: int) -> dict[str, Any]:
    """Colour, line style and marker of the ``index``-th series (distinct without colour, too)."""
    return {
        "color": OKABE_ITO[index % len(OKABE_ITO)],
        "linestyle": LINE_STYLES[(index // len(OKABE_ITO)) % len(LINE_STYLES)],
        "marker": MARKERS[index % len(MARKERS)],
    }


def short(label: str, width: int = 28) -> str:
    """Shorten a label in the middle, keeping its end (the seed); the full text is in the tables.

    Examples
    --------
    >>> short("logreg(max_iter=200, C=1.0) s1", 20)
    'logreg(max_…=1.0) s1'
    """
    if len(label) <= width:
        return label
    tail = min(8, width // 2)
    return label[: width - tail - 1] + "…" + label[-tail:]


def to_svg(fig: Figure, key: str) -> str:
    """Render ``fig`` as inline SVG: no XML header, DOCTYPE, metadata, comments or namespace URLs.

    ``key`` salts the element ids so that several figures in one page never share an id.
    """
    buf = io.StringIO()
    with mpl.rc_context({**_RC, "svg.hashsalt": f"polyculture-{key}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop <?xml ...?>, <!DOCTYPE ...> and the leading comment
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    svg = re.sub(r"<!--.*?-->\s*", "", svg, flags=re.DOTALL)
    # HTML5 puts inline <svg> in the SVG namespace itself; the xmlns URIs are not needed.
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    return svg.strip()


def _figure(width: float, height: float) -> Figure:
    with mpl.rc_context(_RC):  # the rc values are read when the figure and axes are made
        return Figure(figsize=(width, height), layout="constrained")


def accuracy_dots(
    names: Sequence[str],
    values: Sequence[Sequence[float]],
    lows: Sequence[Sequence[float]],
    highs: Sequence[Sequence[float]],
    title: str,
) -> str:
    """Test accuracy of every member (dots, 95% CI bars), one row per model."""
    fig = _figure(6.5, 0.9 + 0.32 * len(names))
    with mpl.rc_context(_RC):
        ax = fig.add_subplot()
        for i, (vals, lo, hi) in enumerate(zip(values, lows, highs, strict=True)):
            y = np.full(len(vals), len(names) - 1 - i) + np.linspace(-0.15, 0.15, len(vals))
            v = 100 * np.asarray(vals, float)
            err = np.abs(100 * np.vstack([lo, hi]) - v)
            err = np.where(np.isfinite(err), err, 0.0)
            ax.errorbar(v, y, xerr=err, fmt="o", color=OKABE_ITO[0], ms=4, capsize=2, lw=1)
        ax.set_yticks(range(len(names)), [short(n) for n in reversed(names)])
        ax.set_xlabel("test accuracy (%), 95% bootstrap CI per member")
        ax.set_title(title, loc="left")
        ax.grid(axis="x", alpha=0.3)
    return to_svg(fig, "accuracy")


def training_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], title: str
) -> str:
    """Validation accuracy and loss vs epoch, one line per model (mean over seeds).

    ``curves`` maps a model name to (epochs, val accuracy, val loss, train loss).
    """
    fig = _figure(8.0, 3.2)
    with mpl.rc_context(_RC):
        acc_ax, loss_ax = fig.subplots(1, 2)
        for i, (name, (epoch, acc, val_loss, train_loss)) in enumerate(curves.items()):
            s = style(i)
            acc_ax.plot(epoch, 100 * acc, label=short(name), ms=3, **s)
            loss_ax.plot(epoch, val_loss, ms=3, **s)
            if np.isfinite(train_loss).any():
                loss_ax.plot(epoch, train_loss, color=s["color"], lw=0.8, alpha=0.5)
        acc_ax.set_xlabel("epoch")
        acc_ax.set_ylabel("validation accuracy (%)")
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("loss (nats): validation bold, training faint")
        for ax in (acc_ax, loss_ax):
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        acc_ax.legend(fontsize=7, frameon=False)
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    return to_svg(fig, "training")


def reliability(bins: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], title: str) -> str:
    """Reliability diagram: accuracy vs mean confidence per confidence bin, one line per model.

    ``bins`` maps a label to (mean confidence, accuracy, count) per non-empty bin.
    """
    fig = _figure(4.8, 4.2)
    with mpl.rc_context(_RC):
        ax = fig.add_subplot()
        ax.plot([0, 100], [0, 100], color="#888888", lw=1, linestyle="--", label="perfect")
        for i, (name, (confidence, acc, _count)) in enumerate(bins.items()):
            ax.plot(100 * confidence, 100 * acc, ms=4, label=short(name), **style(i))
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_aspect("equal")
        ax.set_xlabel("confidence in the predicted class (%)")
        ax.set_ylabel("accuracy in the bin (%)")
        ax.set_title(title, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    return to_svg(fig, "reliability")


def robustness(splits: list[str], accuracy: dict[str, list[float]], title: str) -> str:
    """Accuracy per evaluation split (test, then shifted sets), one line per model."""
    fig = _figure(6.5, 3.4)
    with mpl.rc_context(_RC):
        ax = fig.add_subplot()
        for i, (name, values) in enumerate(accuracy.items()):
            ax.plot(range(len(splits)), 100 * np.asarray(values), label=short(name), **style(i))
        ax.set_xticks(range(len(splits)), splits)
        ax.set_xlabel("evaluation set")
        ax.set_ylabel("test accuracy (%), mean over seeds")
        ax.set_title(title, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="best")
    return to_svg(fig, "robustness")


def heatmap(
    matrix: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    *,
    title: str,
    colorbar: str,
    key: str,
    vmin: float = 0.0,
    vmax: float = 1.0,
    xlabel: str = "",
    ylabel: str = "",
) -> str:
    """A heatmap with a colour bar; cell values are printed when the matrix is small."""
    n_rows, n_cols = matrix.shape
    # Cells about 0.3 in square, within a readable overall size.
    fig = _figure(max(3.6, min(10.0, 3.0 + 0.3 * n_cols)), max(2.4, min(9.0, 2.2 + 0.3 * n_rows)))
    with mpl.rc_context(_RC):
        ax = fig.add_subplot()
        image = ax.imshow(
            np.ma.masked_invalid(matrix),
            cmap=HEATMAP,
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
            aspect="auto",
        )
        ax.set_xticks(range(n_cols), [short(c, 22) for c in columns], rotation=60, ha="right")
        ax.set_yticks(range(n_rows), [short(r, 22) for r in rows])
        ax.spines[:].set_visible(False)
        if max(n_rows, n_cols) <= 12:
            for (r, c), value in np.ndenumerate(matrix):
                if np.isfinite(value):
                    dark = (value - vmin) / (vmax - vmin or 1.0) < 0.55
                    ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")  # fmt: skip
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
        fig.colorbar(image, ax=ax, label=colorbar, shrink=0.8)
    return to_svg(fig, key)


def failure_counts(
    k: np.ndarray, observed: np.ndarray, expected: np.ndarray, members: int, title: str
) -> str:
    """Share of instances failed by exactly k members: observed bars vs Poisson-binomial dots."""
    fig = _figure(6.5, 3.4)
    with mpl.rc_context(_RC):
        ax = fig.add_subplot()
        ax.bar(k, 100 * observed, color=OKABE_ITO[0], label="observed", width=0.7)
        ax.plot(k, 100 * expected, "o", color=OKABE_ITO[3], ms=5, label="independent errors")
        ax.set_yscale("symlog", linthresh=0.1)
        # Plain numbers: the default log labels are mathtext, which is off here (see _RC).
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.set_xticks(range(members + 1))
        ax.set_xlabel(f"number of members (of {members}) that fail the instance")
        ax.set_ylabel("share of test instances (%)")
        ax.set_title(title, loc="left")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(frameon=False)
    return to_svg(fig, "failures")


def interval_panels(
    names: Sequence[str],
    panels: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[float]]],
    title: str,
    key: str,
    reference: Sequence[float | None] = (),
    log: Sequence[bool] = (),
) -> str:
    """One panel per statistic: a dot and its interval for each named row (e.g. ecosystems).

    ``panels`` holds ``(axis label, values, lows, highs)``; ``reference`` an optional vertical
    line per panel (e.g. 1 for a ratio whose independence value is 1); ``log`` a log-scaled
    axis per panel (for ratios that span orders of magnitude).
    """
    fig = _figure(2.6 * len(panels) + 1.4, 0.9 + 0.35 * len(names))
    with mpl.rc_context(_RC):
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        rows = np.arange(len(names))[::-1]
        for index, (ax, (label, values, lows, highs)) in enumerate(zip(axes, panels, strict=True)):
            v = np.asarray(values, float)
            err = np.abs(np.vstack([np.asarray(lows, float), np.asarray(highs, float)]) - v)
            err = np.where(np.isfinite(err), err, 0.0)
            ax.errorbar(v, rows, xerr=err, fmt="o", color=OKABE_ITO[index], ms=5, capsize=3, lw=1)
            if index < len(reference) and reference[index] is not None:
                ax.axvline(float(reference[index]), color="0.5", lw=0.8, ls=":")  # type: ignore[arg-type]
            if index < len(log) and log[index] and np.nanmin(v) > 0:
                _log_axis(ax)
            ax.set_xlabel(label)
            ax.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(rows, [short(n) for n in names])
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    return to_svg(fig, key)


def _log_axis(ax: Any, which: str = "x") -> None:
    """A log-scaled axis with plain-number ticks (the report's rc disables mathtext)."""
    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


ScalingPanel = tuple[
    str, np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]], tuple[float, ...] | None
]
"""(metric, scales, values, fitted curves by name -> (x, y), break (location, low, high))."""


def scaling_panels(panels: Sequence[ScalingPanel], axis_title: str, title: str, key: str) -> str:
    """One panel per metric: every member (dots), the fitted curves, and the break with its CI.

    Scales are on a log axis; a shaded band marks the break's bootstrap CI.
    """
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig = _figure(2.9 * columns + 0.6, 2.6 * rows + 0.5)
    with mpl.rc_context(_RC):
        axes = fig.subplots(rows, columns, squeeze=False).ravel()
        for ax, (metric, x, y, curves, found) in zip(axes, panels, strict=False):
            ax.plot(x, y, "o", color=OKABE_ITO[0], ms=3.5, alpha=0.7, label="members")
            for index, (name, (cx, cy)) in enumerate(curves.items()):
                s = style(index + 1)
                ax.plot(cx, cy, color=s["color"], linestyle=s["linestyle"], lw=1.3, label=name)
            if found is not None:
                location, low, high = found
                ax.axvline(location, color="0.3", lw=0.8, ls=":")
                if np.isfinite(low) and np.isfinite(high):
                    ax.axvspan(low, high, color="0.85", alpha=0.6, lw=0)
            _log_axis(ax)
            ax.set_xlabel(axis_title)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        axes[0].legend(fontsize=7, frameon=False)
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    return to_svg(fig, key)


def generalization_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], title: str, key: str
) -> str:
    """Training (faint) and held-out (bold) accuracy against optimizer step, one colour per model.

    ``curves`` maps a model name to (steps, training accuracy, held-out accuracy).
    """
    fig = _figure(6.5, 3.2)
    with mpl.rc_context(_RC):
        ax = fig.add_subplot()
        for index, (name, (steps, train, heldout)) in enumerate(curves.items()):
            s = style(index)
            ax.plot(
                steps,
                100 * heldout,
                label=short(name, 36),
                ms=0,
                lw=1.6,
                **{k: v for k, v in s.items() if k != "marker"},
            )
            ax.plot(steps, 100 * train, color=s["color"], lw=0.9, alpha=0.55)
        for level in (50, 90):
            ax.axhline(level, color="0.6", lw=0.6, ls=":")
        if all(len(steps) and steps.min() > 0 for steps, _, _ in curves.values()):
            _log_axis(ax)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    return to_svg(fig, key)
