"""Figures of the cost-profile and selection sections (deterministic inline SVG).

Built like :mod:`polyculture.report.figures` (same rc settings, palette and SVG clean-up): every
function takes plain arrays and labels and returns SVG text.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import numpy as np

from polyculture.report.figures import (
    _RC,
    HEATMAP,
    OKABE_ITO,
    _figure,
    _log_axis,
    short,
    style,
    to_svg,
)


def _front_line(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The staircase of the (x down, y up) Pareto front of the points, sorted by x."""
    finite = np.isfinite(x) & np.isfinite(y)
    order = np.lexsort((-y[finite], x[finite]))
    xs, ys = x[finite][order], y[finite][order]
    keep_x, keep_y, best = [], [], -np.inf
    for xi, yi in zip(xs, ys, strict=True):
        if yi > best:
            keep_x.append(xi)
            keep_y.append(yi)
            best = yi
    return np.asarray(keep_x), np.asarray(keep_y)


def latency_accuracy(
    models: Sequence[str],
    latency: Sequence[Sequence[float]],
    accuracy: Sequence[Sequence[float]],
    title: str,
) -> str:
    """Test accuracy against latency at batch 1 (log scale), one marker per model, with the
    Pareto front of all members (accuracy up, latency down) as a staircase."""
    fig = _figure(6.5, 3.8)
    with mpl.rc_context(_RC):
        ax = fig.add_subplot()
        for i, (name, xs, ys) in enumerate(zip(models, latency, accuracy, strict=True)):
            s = style(i)
            ax.plot(
                xs,
                100 * np.asarray(ys, float),
                linestyle="none",
                marker=s["marker"],
                color=s["color"],
                ms=6,
                label=short(name),
            )
        all_x = np.concatenate([np.asarray(v, float) for v in latency])
        all_y = 100 * np.concatenate([np.asarray(v, float) for v in accuracy])
        front_x, front_y = _front_line(all_x, all_y)
        if len(front_x):
            ax.step(front_x, front_y, where="post", color="#888888", lw=1, ls="--",
                    label="Pareto front")  # fmt: skip
        _log_axis(ax)
        ax.set_xlabel("latency at batch 1, p50 (ms, log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_svg(fig, "cost-latency")


def selection_scatter(
    labels: Sequence[str],
    x: np.ndarray,
    accuracy: np.ndarray,
    systemic: np.ndarray,
    feasible: np.ndarray,
    pareto: np.ndarray,
    recommended: int,
    xlabel: str,
    title: str,
    log_x: bool = True,
) -> str:
    """Accuracy against a cost (latency or parameters), coloured by systemic contribution.

    Filled markers are feasible members, hollow ones are ruled out; members on the Pareto front
    of all members are ringed; the recommended member is a star with its label.
    """
    fig = _figure(6.5, 4.0)
    y = 100 * np.asarray(accuracy, float)
    colour_values = np.asarray(systemic, float)
    known = np.isfinite(colour_values)
    low, high = (
        (float(colour_values[known].min()), float(colour_values[known].max()))
        if known.any()
        else (0.0, 1.0)
    )
    if high <= low:
        high = low + 1e-9
    cmap = mpl.colormaps[HEATMAP]
    norm = mpl.colors.Normalize(vmin=low, vmax=high)
    with mpl.rc_context(_RC):
        ax = fig.add_subplot()
        for i in range(len(labels)):
            colour = cmap(norm(colour_values[i])) if known[i] else "#999999"
            ax.scatter(
                x[i],
                y[i],
                s=40,
                marker="*" if i == recommended else "o",
                facecolors=colour if feasible[i] else "none",
                edgecolors=colour,
                linewidths=1.2,
                zorder=3,
            )
            if pareto[i]:
                ax.scatter(x[i], y[i], s=130, facecolors="none", edgecolors=OKABE_ITO[3],
                           linewidths=0.9, zorder=2)  # fmt: skip
        if 0 <= recommended < len(labels):
            ax.scatter(x[recommended], y[recommended], s=260, marker="*", facecolors="none",
                       edgecolors="black", linewidths=1.0, zorder=4)  # fmt: skip
            ax.annotate(
                short(labels[recommended], 30),
                (x[recommended], y[recommended]),
                textcoords="offset points",
                xytext=(8, -12),
                fontsize=8,
            )
        if log_x and np.all(np.asarray(x)[np.isfinite(x)] > 0):
            _log_axis(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title, loc="left")
        ax.grid(alpha=0.3)
        grey = "#666666"
        for marker, face, edge, size, text in (
            ("o", grey, grey, 40, "feasible"),
            ("o", "none", grey, 40, "ruled out"),
            ("o", "none", OKABE_ITO[3], 130, "Pareto front"),
            ("*", "none", "black", 160, "recommended"),
        ):  # legend entries only: an empty scatter per kind of marker
            ax.scatter([], [], marker=marker, s=size, facecolors=face, edgecolors=edge, label=text)
        ax.legend(fontsize=7, frameon=False, loc="best")
        if known.any():
            mappable = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
            fig.colorbar(mappable, ax=ax, label="systemic contribution (lower is better)",
                         shrink=0.85)  # fmt: skip
    return to_svg(fig, "selection-front")
