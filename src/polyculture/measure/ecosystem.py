"""Comparing ecosystems: sets of deployed models, and how much they fail and represent alike.

An ecosystem is the set of models a population of users meets (Bommasani et al., 2022, "Picking on
the same person"). The component-sharing experiment asks whether ecosystems whose members share a
component (a pretrained backbone, a family, the training data) are more homogeneous than ecosystems
that share nothing. Per ecosystem of ``K`` members this module gives, each with a percentile
bootstrap interval over instances:

* the **systemic-failure ratio**: the share of instances on which all ``K`` members fail, divided
  by the share expected if members failed independently at their own error rates
  (``prod_j mean(fail_j)``); 1 means independent failures, larger means shared failures;
* the **mean error consistency**: Cohen's kappa of the members' correct/wrong outcomes, averaged
  over member pairs (Geirhos et al., 2020); 0 = chance agreement, 1 = identical errors;
* the **mean CKA**: linear CKA (Kornblith et al., 2019) of the members' final representations on
  the probe instances, averaged over member pairs.

Ecosystems evaluated on the same instances are compared with a *paired* bootstrap: every replicate
resamples the same instances for all ecosystems, so the interval of a difference accounts for the
instances being shared.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from polyculture.errors import MeasureInputError
from polyculture.measure._checks import check_bootstrap
from polyculture.measure.statistics import percentile_interval

STATISTICS = ("systemic_ratio", "error_consistency", "cka")
"""The per-ecosystem statistics, in report order."""


@dataclass(frozen=True)
class Ecosystem:
    """One ecosystem's inputs.

    Attributes
    ----------
    correct
        ``(n, K)`` booleans: member ``j`` was right on test instance ``i``.
    representations
        One ``(p, d_j)`` array per member: the final representation of the first ``p`` test
        instances (the probe set), or ``None`` where a member stores none.
    """

    correct: np.ndarray
    representations: list[np.ndarray | None]


def _gram(x: np.ndarray) -> np.ndarray:
    return x @ x.T  # (p, p)


def _center(gram: np.ndarray) -> np.ndarray:
    row = gram.mean(axis=1, keepdims=True)
    return gram - row - row.T + gram.mean()


def _mean_cka(grams: list[np.ndarray], rows: np.ndarray | None) -> float:
    """Mean linear CKA over member pairs, from (uncentered) Gram matrices; rows resamples."""
    centered = []
    for gram in grams:
        g = gram if rows is None else gram[np.ix_(rows, rows)]
        centered.append(_center(g))
    self_hsic = [float((c * c).sum()) for c in centered]
    values = []
    for a, b in itertools.combinations(range(len(centered)), 2):
        denominator = np.sqrt(self_hsic[a] * self_hsic[b])
        values.append(float((centered[a] * centered[b]).sum()) / denominator)
    return float(np.mean(values)) if values else float("nan")


def _correctness_statistics(
    correct: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Systemic ratio and mean error consistency for each row of instance weights.

    ``weights`` is ``(B, n)``: how often each instance is drawn in each replicate (the
    observed data is a row of ones). Returns two ``(B,)`` arrays.
    """
    n = correct.shape[0]
    wrong = (~correct).astype(np.float64)  # (n, K)
    error_rates = weights @ wrong / n  # (B, K)
    all_wrong = weights @ wrong.all(axis=1).astype(np.float64) / n  # (B,)
    expected = np.prod(error_rates, axis=1)  # (B,)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(expected > 0, all_wrong / expected, np.nan)
    kappas = []
    for a, b in itertools.combinations(range(correct.shape[1]), 2):
        same = weights @ (correct[:, a] == correct[:, b]).astype(np.float64) / n  # (B,)
        pa, pb = 1 - error_rates[:, a], 1 - error_rates[:, b]
        chance = pa * pb + (1 - pa) * (1 - pb)
        with np.errstate(divide="ignore", invalid="ignore"):
            kappas.append(np.where(chance < 1, (same - chance) / (1 - chance), np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all pairs undefined: NaN is the answer
        consistency = np.nanmean(np.stack(kappas), axis=0)
    return ratio, consistency


def compare_ecosystems(
    ecosystems: dict[str, Ecosystem],
    *,
    n_resamples: int = 1000,
    cka_resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-ecosystem statistics with intervals, and paired comparisons between ecosystems.

    Parameters
    ----------
    ecosystems
        By name; every ecosystem's ``correct`` has the same instances in the same order (and
        the representations the same probe instances).
    n_resamples
        Bootstrap replicates of the failure statistics.
    cka_resamples
        Bootstrap replicates of the CKA (each costs a few Gram-matrix passes per member).
    confidence
        Interval level.
    seed
        Bootstrap seed.

    Returns
    -------
    summary : pandas.DataFrame
        One row per ecosystem: ``members``, ``accuracy``, and for each statistic its value and
        ``_ci_low`` / ``_ci_high``.
    comparisons : pandas.DataFrame
        One row per (ecosystem_a, ecosystem_b, statistic): ``difference`` (a - b), its interval
        and a two-sided paired-bootstrap ``p_value``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> hard = rng.random(500) < 0.3                  # instances every shared member fails
    >>> shared = Ecosystem(np.stack([~hard] * 3, axis=1), [None] * 3)
    >>> independent = Ecosystem(rng.random((500, 3)) > 0.3, [None] * 3)
    >>> summary, comparisons = compare_ecosystems({"shared": shared, "independent": independent},
    ...                                           n_resamples=200)
    >>> summary.set_index("ecosystem")["systemic_ratio"].round(1).to_dict()
    {'shared': 15.0, 'independent': 1.1}
    >>> bool(comparisons.query("statistic == 'systemic_ratio'")["p_value"].iloc[0] < 0.01)
    True
    """
    check_bootstrap(n_resamples, confidence)
    check_bootstrap(cka_resamples, confidence)
    if not ecosystems:
        raise MeasureInputError("no ecosystems to compare", hint="define [[ecosystems]]")
    shapes = {name: eco.correct.shape[0] for name, eco in ecosystems.items()}
    if len(set(shapes.values())) != 1:
        raise MeasureInputError(
            f"ecosystems are scored on different numbers of instances: {shapes}",
            hint="compare ecosystems on the same test split",
        )
    for name, eco in ecosystems.items():
        if eco.correct.ndim != 2 or eco.correct.shape[1] < 2:
            raise MeasureInputError(
                f"ecosystem '{name}' needs at least two members, has shape {eco.correct.shape}",
                hint="list more models (or seeds) in it",
            )
    n = next(iter(shapes.values()))
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1 / n), size=n_resamples).astype(np.float64)
    grams = {
        name: [_gram(np.asarray(r, np.float64)) for r in eco.representations]
        for name, eco in ecosystems.items()
        if eco.representations and all(r is not None for r in eco.representations)
    }
    probe = {len(g[0]) for g in grams.values()}
    if len(probe) > 1:
        raise MeasureInputError(
            f"representations cover different numbers of probe instances: {sorted(probe)}",
            hint="store the same probe set for every member",
        )
    probe_size = probe.pop() if probe else 0
    cka_draws = rng.integers(0, max(probe_size, 1), size=(cka_resamples, probe_size))

    point: dict[str, dict[str, float]] = {}
    replicates: dict[str, dict[str, np.ndarray]] = {}
    summary_rows = []
    for name, eco in ecosystems.items():
        correct = np.asarray(eco.correct, dtype=bool)
        ratio, consistency = _correctness_statistics(correct, np.ones((1, n)))
        boot_ratio, boot_consistency = _correctness_statistics(correct, weights)
        cka = _mean_cka(grams[name], None) if name in grams else float("nan")
        boot_cka = (
            np.array([_mean_cka(grams[name], rows) for rows in cka_draws])
            if name in grams
            else np.full(cka_resamples, np.nan)
        )
        point[name] = {
            "systemic_ratio": float(ratio[0]),
            "error_consistency": float(consistency[0]),
            "cka": cka,
        }
        replicates[name] = {
            "systemic_ratio": boot_ratio,
            "error_consistency": boot_consistency,
            "cka": boot_cka,
        }
        row: dict[str, float | str | int] = {
            "ecosystem": name,
            "members": correct.shape[1],
            "accuracy": float(correct.mean()),
        }
        for statistic in STATISTICS:
            low, high = _interval(replicates[name][statistic], confidence)
            row[statistic] = point[name][statistic]
            row[f"{statistic}_ci_low"] = low
            row[f"{statistic}_ci_high"] = high
        summary_rows.append(row)

    comparison_rows = []
    for a, b in itertools.combinations(ecosystems, 2):
        for statistic in STATISTICS:
            differences = replicates[a][statistic] - replicates[b][statistic]
            low, high = _interval(differences, confidence)
            comparison_rows.append(
                {
                    "ecosystem_a": a,
                    "ecosystem_b": b,
                    "statistic": statistic,
                    "difference": point[a][statistic] - point[b][statistic],
                    "ci_low": low,
                    "ci_high": high,
                    "p_value": _two_sided_p(differences),
                }
            )
    return pd.DataFrame(summary_rows), pd.DataFrame(comparison_rows)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) < max(10, len(values) // 2):
        return float("nan"), float("nan")
    return percentile_interval(finite, confidence)


def _two_sided_p(differences: np.ndarray) -> float:
    """Paired-bootstrap p-value of "no difference": twice the smaller tail mass at zero."""
    finite = differences[np.isfinite(differences)]
    if len(finite) == 0:
        return float("nan")
    tail = min(np.mean(finite <= 0), np.mean(finite >= 0))
    return float(min(1.0, 2 * tail))


def ecosystem_finding(
    summary: pd.DataFrame, comparisons: pd.DataFrame, n_resamples: int = 1000
) -> str:
    """One sentence that answers "which ecosystem is most homogeneous?", with its evidence.

    Ecosystems are ranked by mean error consistency, which is corrected for chance agreement and
    so for the members' accuracy; the systemic-failure ratio is not (its independence baseline,
    a product of small error rates, shrinks fast as accuracy rises), so it is reported beside it
    with CKA. The most and least homogeneous ecosystems are named with their intervals and the
    paired-bootstrap p-value of their difference.

    Examples
    --------
    >>> summary = pd.DataFrame({"ecosystem": ["a", "b"], "members": [3, 3],
    ...     "error_consistency": [0.5, 0.1], "error_consistency_ci_low": [0.4, 0.0],
    ...     "error_consistency_ci_high": [0.6, 0.2], "systemic_ratio": [4.0, 1.1],
    ...     "cka": [0.9, 0.4]})
    >>> comparisons = pd.DataFrame({"ecosystem_a": ["a"], "ecosystem_b": ["b"],
    ...     "statistic": ["error_consistency"], "p_value": [0.0]})
    >>> import textwrap
    >>> print(textwrap.fill(ecosystem_finding(summary, comparisons), 90))
    Ecosystem 'a' is the most homogeneous: its members' errors agree beyond chance with κ =
    0.50 (95% CI 0.40-0.60), against 0.10 (0.00-0.20) for 'b', a significant difference
    (paired bootstrap p < 0.001); the systemic-failure ratio (4.00 vs 1.10) and CKA (0.90 vs
    0.40) agree.
    """
    primary = "error_consistency"
    ranked = summary.dropna(subset=[primary]).sort_values(primary, ascending=False)
    if len(ranked) < 2:
        return "Fewer than two ecosystems have a defined error consistency to compare."
    top, bottom = ranked.iloc[0], ranked.iloc[-1]
    names = {top["ecosystem"], bottom["ecosystem"]}
    pair = comparisons[
        (comparisons["statistic"] == primary)
        & comparisons["ecosystem_a"].isin(names)
        & comparisons["ecosystem_b"].isin(names)
    ]
    p_value = float(pair["p_value"].iloc[0]) if len(pair) else float("nan")
    shown_p = f"p < {1 / n_resamples:.3g}" if p_value == 0 else f"p = {p_value:.3g}"
    verdict = (
        f"a significant difference (paired bootstrap {shown_p})"
        if p_value < 0.05
        else f"a difference the data cannot confirm (paired bootstrap {shown_p})"
    )
    agree = []
    for statistic, label in (("systemic_ratio", "the systemic-failure ratio"), ("cka", "CKA")):
        a, b = float(top[statistic]), float(bottom[statistic])
        if np.isfinite(a) and np.isfinite(b):
            agree.append((label, a, b, a > b))
    tail = ""
    if agree:
        parts = " and ".join(f"{label} ({a:.2f} vs {b:.2f})" for label, a, b, _ in agree)
        tail = f"; {parts} {'agree' if all(x[3] for x in agree) else 'do not all agree'}"
    return (
        f"Ecosystem '{top['ecosystem']}' is the most homogeneous: its members' errors agree "
        f"beyond chance with κ = {top[primary]:.2f} (95% CI {top[f'{primary}_ci_low']:.2f}-"
        f"{top[f'{primary}_ci_high']:.2f}), against {bottom[primary]:.2f} "
        f"({bottom[f'{primary}_ci_low']:.2f}-{bottom[f'{primary}_ci_high']:.2f}) for "
        f"'{bottom['ecosystem']}', {verdict}{tail}."
    )
