"""Compute-budget allocation: successive halving over candidates, and uniform allocation.

*Successive halving* (Karnin et al. 2013; Jamieson & Talwalkar 2016; the inner loop of
Hyperband, Li et al. 2018) spends a training budget on the candidates that look promising:

* rung 0 trains every candidate for ``r0`` epochs;
* each rung keeps the best ``n // eta`` candidates (at least one) by *validation* accuracy and
  trains them again, longer: ``eta`` times the epochs, or more where the budget left over
  allows (less only when the budget is nearly spent);
* it stops when one candidate is left (trained at the longest budget of the plan), when the
  budget cannot pay for another rung, or when every later rung would only re-rank members
  already trained (rungs held at ``max_epochs``); the winner is then the candidate with the best
  validation accuracy in the last rung. Test accuracy is carried along for reporting only;
  nothing here ever chooses by it.

The algorithm is pure: it calls ``evaluate(candidate, epochs) -> Outcome`` and never trains
anything itself, so it runs on synthetic learning curves as well as on real members
(:mod:`polyculture.run.budget` trains them through the run store).

How compute is counted
----------------------
* Each call ``evaluate(c, r)`` means "candidate ``c`` trained **from scratch** for ``r``
  epochs" (a survivor is retrained at the longer budget rather than continued: with a learning
  rate schedule that depends on the number of epochs, a member trained for ``r`` epochs is then
  an ordinary, deterministic member, and the plan's cost is simply the sum of its rungs).
  Its :class:`Outcome` reports the full cost of that training, ``cost_epochs`` (member-epochs:
  one pass of one member over the training split; a candidate of several seeds costs one per
  seed) and ``cost_seconds`` (measured).
* The cost of every ``(candidate, epochs)`` pair is charged once. A pair evaluated again (a
  capped rung that cannot grow, a fixed candidate carried to the next rung) reuses its outcome
  at no charge: the member is the same one.
* ``fixed`` candidates (scikit-learn families) have no epochs: they are evaluated once, as
  ``evaluate(c, 0)``, in rung 0, compete in every rung with that one accuracy, and cost the
  epochs their outcome reports (0) and its measured seconds. With an epoch budget their seconds
  are reported but not charged against the budget; with a seconds budget they are.
* With ``unit="epochs"`` the plan is exact: ``r0`` is the largest number of epochs (at least
  ``min_epochs``) for which the whole plan fits the budget even when the most expensive
  candidates survive, and each later rung grows to use what is left. The spending never exceeds
  the budget.
* With ``unit="seconds"`` nothing is known before training: rung 0 trains for ``min_epochs``
  and measures each candidate's seconds per epoch, from which the later rungs are planned in the
  same way. The measured seconds may then differ from the prediction (per-epoch seconds measured
  on short runs include fixed costs such as evaluation, so predictions tend to be high); the
  result reports what was spent.

Uniform allocation (:func:`uniform_allocation`) is the baseline: every candidate trained once
with the same epochs (``budget / n`` each, :func:`uniform_epochs`) and the best on validation
chosen.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from polyculture.errors import ConfigError

__all__ = [
    "Allocation",
    "Evaluation",
    "Outcome",
    "Unit",
    "check_settings",
    "rung_sizes",
    "successive_halving",
    "uniform_allocation",
    "uniform_epochs",
    "uniform_epochs_for_seconds",
]

Unit = Literal["epochs", "seconds"]

UNITS: tuple[Unit, ...] = ("epochs", "seconds")


@dataclass(frozen=True)
class Outcome:
    """What training one candidate for some epochs gave, and what it cost.

    Attributes
    ----------
    val_accuracy
        Validation accuracy (selection uses this only); NaN when training failed.
    test_accuracy
        Test accuracy (reported, never used to choose).
    cost_epochs
        Member-epochs spent (epochs x members trained; 0 for a candidate without epochs).
    cost_seconds
        Measured seconds spent.
    """

    val_accuracy: float
    test_accuracy: float
    cost_epochs: float
    cost_seconds: float

    def cost(self, unit: Unit) -> float:
        """The cost in ``unit``."""
        return self.cost_epochs if unit == "epochs" else self.cost_seconds


Evaluate = Callable[[str, int], Outcome]
"""``evaluate(candidate, epochs)``: train the candidate from scratch for ``epochs``; 0 = fixed."""

Prepare = Callable[[list[tuple[str, int]]], None]
"""Called with a rung's ``(candidate, epochs)`` pairs before they are evaluated (to train them
together, e.g. in parallel)."""


@dataclass(frozen=True)
class Evaluation:
    """One candidate in one rung.

    ``charged`` is False when the same ``(candidate, epochs)`` was evaluated in an earlier rung
    (its outcome is reused and costs nothing more); ``kept`` is True when the candidate goes on
    to the next rung, or, in the last rung, when it is the winner.
    """

    rung: int
    candidate: str
    epochs: int
    outcome: Outcome
    charged: bool
    kept: bool


@dataclass(frozen=True)
class Allocation:
    """The result of spending a budget on candidates (successive halving or uniform).

    Attributes
    ----------
    method
        ``successive_halving`` or ``uniform``.
    unit, budget
        The budget and its unit (``budget`` is NaN for a uniform allocation given by epochs).
    evaluations
        Every (rung, candidate) evaluation, in order.
    winner
        The candidate chosen (best validation accuracy in the last rung).
    stop_reason
        Why it stopped.
    """

    method: str
    unit: Unit
    budget: float
    evaluations: tuple[Evaluation, ...]
    winner: str
    stop_reason: str
    fixed: frozenset[str] = field(default_factory=frozenset)

    @property
    def spent_epochs(self) -> float:
        """Member-epochs charged (every charged evaluation's ``cost_epochs``)."""
        return float(sum(e.outcome.cost_epochs for e in self.evaluations if e.charged))

    @property
    def spent_seconds(self) -> float:
        """Measured seconds charged."""
        return float(sum(e.outcome.cost_seconds for e in self.evaluations if e.charged))

    def spent(self, unit: Unit | None = None) -> float:
        """What was spent, in ``unit`` (default: the budget's unit)."""
        return self.spent_epochs if (unit or self.unit) == "epochs" else self.spent_seconds

    @property
    def rungs(self) -> int:
        """Number of rungs run."""
        return 1 + max((e.rung for e in self.evaluations), default=-1)

    @property
    def final(self) -> Evaluation:
        """The winner's last (longest) evaluation: the model one would ship."""
        return [e for e in self.evaluations if e.candidate == self.winner][-1]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no per-rung rows)."""
        final = self.final
        return {
            "method": self.method,
            "unit": self.unit,
            "budget": None if math.isnan(self.budget) else self.budget,
            "winner": self.winner,
            "winner_epochs": final.epochs,
            "val_accuracy": _none_if_nan(final.outcome.val_accuracy),
            "test_accuracy": _none_if_nan(final.outcome.test_accuracy),
            "spent_epochs": self.spent_epochs,
            "spent_seconds": self.spent_seconds,
            "rungs": self.rungs,
            "evaluations": len(self.evaluations),
            "stop_reason": self.stop_reason,
        }


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def rung_sizes(n: int, eta: int) -> list[int]:
    """Candidates per rung: ``n``, then ``n // eta`` (at least 1) until one is left.

    Examples
    --------
    >>> rung_sizes(8, 2), rung_sizes(8, 3), rung_sizes(5, 2), rung_sizes(1, 2)
    ([8, 4, 2, 1], [8, 2, 1], [5, 2, 1], [1])
    """
    if n < 1 or eta < 2:
        raise ConfigError(f"rung_sizes needs n >= 1 and eta >= 2 (got n={n}, eta={eta})")
    sizes = [n]
    while sizes[-1] > 1:
        sizes.append(max(1, sizes[-1] // eta))
    return sizes


def _check_common(candidates: Sequence[str], fixed: Collection[str]) -> frozenset[str]:
    if not candidates:
        raise ConfigError("no candidates to allocate a budget to", hint="give at least one")
    if len(set(candidates)) != len(candidates):
        raise ConfigError("a candidate is listed twice", hint="list each candidate once")
    unknown = sorted(set(fixed) - set(candidates))
    if unknown:
        raise ConfigError(
            f"fixed candidate(s) {', '.join(unknown)} are not among the candidates",
            hint="fixed must be a subset of the candidates",
        )
    return frozenset(fixed)


def _check_budget(budget: float, unit: str) -> None:
    if unit not in UNITS:
        raise ConfigError(f"unknown budget unit '{unit}'", hint="use epochs or seconds")
    if not (isinstance(budget, int | float) and math.isfinite(budget) and budget > 0):
        raise ConfigError(f"budget {budget} is not a positive number", hint="give e.g. 100")


def _rank(candidates: Sequence[str], outcomes: Mapping[str, Outcome]) -> list[str]:
    """Best validation accuracy first; NaN (failed) last; ties keep the candidates' order."""

    def key(item: tuple[int, str]) -> tuple[float, int]:
        index, candidate = item
        val = outcomes[candidate].val_accuracy
        return (-val if math.isfinite(val) else math.inf, index)

    return [c for _, c in sorted(enumerate(candidates), key=key)]


def _plan_cost(
    weights: Sequence[float], sizes: Sequence[int], first: int, eta: int, cap: int | None, prev: int
) -> float:
    """Worst-case cost of rungs ``sizes`` when the first trains for ``first`` epochs.

    ``weights`` are the survivors' costs per epoch, most expensive first (the worst case: the
    most expensive candidates survive). A rung whose epochs equal the previous rung's (held at
    the cap) reuses its outcomes and costs nothing.
    """
    total = 0.0
    for j, size in enumerate(sizes):
        epochs = _capped(first * eta**j, cap)
        if epochs != prev:
            total += sum(weights[:size]) * epochs
        prev = epochs
    return total


def _capped(epochs: int, cap: int | None) -> int:
    return epochs if cap is None else min(epochs, cap)


def _largest_fitting(
    low: int, high: int, cost: Callable[[int], float], limit: float, breaks: Sequence[int]
) -> int | None:
    """The largest ``r`` in ``[low, high]`` with ``cost(r) <= limit``, or ``None``.

    ``cost`` is non-decreasing between consecutive ``breaks`` (where a rung reaches the cap), so
    each piece is searched by bisection.
    """
    if low > high:
        return None
    edges = sorted({low, high + 1, *(b for b in breaks if low < b <= high)})
    best: int | None = None
    for start, stop in itertools.pairwise(edges):
        lo, hi = start, stop - 1
        if cost(lo) > limit:
            continue
        while lo < hi:  # invariant: cost(lo) fits
            mid = (lo + hi + 1) // 2
            if cost(mid) <= limit:
                lo = mid
            else:
                hi = mid - 1
        best = lo if best is None else max(best, lo)
    return best


def check_settings(
    budget: float,
    unit: str,
    eta: int,
    min_epochs: int,
    max_epochs: int | None = None,
    *,
    trained: int = 0,
) -> None:
    """Check the settings of :func:`successive_halving` before anything trains.

    ``trained`` is the number of candidates trained by epochs: with an epoch budget, rung 0
    needs ``trained x min_epochs`` epochs.

    Raises
    ------
    ConfigError
        Naming the bad setting; for a budget too small for rung 0, what rung 0 needs.

    Examples
    --------
    >>> check_settings(40, "epochs", eta=2, min_epochs=1, trained=5)
    >>> check_settings(4, "epochs", eta=2, min_epochs=1, trained=5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: a budget of 4 epochs is too small for rung 0, ...= 5 epochs...
    """
    _check_budget(budget, unit)
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise ConfigError(
            f"eta {eta} would not halve: each rung keeps 1/eta of the candidates",
            hint="use an integer eta of 2 or more",
        )
    if min_epochs < 1:
        raise ConfigError(f"min_epochs {min_epochs} is below 1", hint="use 1 or more")
    if max_epochs is not None and max_epochs < min_epochs:
        raise ConfigError(
            f"max_epochs {max_epochs} is below min_epochs {min_epochs}",
            hint="raise max_epochs or lower min_epochs",
        )
    needed = trained * min_epochs
    if unit == "epochs" and needed > budget:
        raise ConfigError(
            f"a budget of {budget:g} epochs is too small for rung 0, which trains "
            f"{trained} candidate(s) for {min_epochs} epoch(s) each = {needed} epochs",
            hint=f"give a budget of at least {needed} epochs (or lower min_epochs)",
        )


def successive_halving(
    candidates: Sequence[str],
    evaluate: Evaluate,
    budget: float,
    *,
    unit: Unit = "epochs",
    eta: int = 2,
    min_epochs: int = 1,
    max_epochs: int | None = None,
    fixed: Collection[str] = (),
    prepare: Prepare | None = None,
) -> Allocation:
    """Spend ``budget`` on ``candidates`` by successive halving.

    Parameters
    ----------
    candidates
        Candidate names, in order (ties in validation accuracy go to the earlier one).
    evaluate
        ``evaluate(candidate, epochs) -> Outcome``: the candidate trained from scratch for
        ``epochs`` (``0`` for a fixed candidate). Called at most once per pair.
    budget
        What may be spent, in ``unit``.
    unit
        ``epochs`` (member-epochs, planned exactly) or ``seconds`` (measured; see the module
        docstring for how a seconds budget is planned).
    eta
        Keep ``1/eta`` of the candidates per rung (``n // eta``, at least one) and train them
        ``eta`` times longer. At least 2.
    min_epochs
        The fewest epochs of rung 0 (with a seconds budget: exactly rung 0's epochs).
    max_epochs
        The most epochs any rung trains for (``None``: no cap). A rung held at the cap reuses
        its members (no new cost); when every later rung would only re-rank members already
        trained, halving stops with the best of them.
    fixed
        Candidates without epochs (scikit-learn families): evaluated once, as ``epochs = 0``.
    prepare
        Called with each rung's ``(candidate, epochs)`` pairs still to evaluate, before they
        are (lets the caller train a rung in parallel).

    Returns
    -------
    Allocation
        Every evaluation, the winner and what was spent.

    Raises
    ------
    ConfigError
        Bad settings, or an epoch budget too small for rung 0 (the message says what rung 0
        needs).

    Examples
    --------
    Four synthetic candidates whose validation accuracy grows with epochs; ``b`` is best. The
    plan 4 x 3 + 2 x 6 + 1 x 12 epochs spends the budget of 36 exactly:

    >>> curves = {"a": 0.5, "b": 0.9, "c": 0.7, "d": 0.6}
    >>> def evaluate(name, epochs):
    ...     acc = curves[name] * epochs / (epochs + 2)
    ...     return Outcome(acc, acc, cost_epochs=epochs, cost_seconds=0.1 * epochs)
    >>> result = successive_halving(["a", "b", "c", "d"], evaluate, budget=36, eta=2)
    >>> [(e.rung, e.candidate, e.epochs) for e in result.evaluations if e.kept]
    [(0, 'b', 3), (0, 'c', 3), (1, 'b', 6), (2, 'b', 12)]
    >>> result.winner, result.spent_epochs
    ('b', 36.0)
    """
    fixed_set = _check_common(candidates, fixed)
    trained = [c for c in candidates if c not in fixed_set]
    check_settings(budget, unit, eta, min_epochs, max_epochs, trained=len(trained))
    sizes = rung_sizes(len(candidates), eta)
    # Cost per epoch of each candidate, known exactly for epochs, measured for seconds.
    per_epoch: dict[str, float] = {c: (0.0 if c in fixed_set else 1.0) for c in candidates}
    if unit == "epochs":
        first = _first_epochs(per_epoch, candidates, sizes, eta, budget, min_epochs, max_epochs)
    else:
        first = min_epochs

    cache: dict[tuple[str, int], Outcome] = {}
    evaluations: list[Evaluation] = []
    survivors = list(candidates)
    spent = 0.0
    epochs = first
    rung = 0
    stop_reason = "one candidate left"
    while True:
        pairs = [(c, 0 if c in fixed_set else epochs) for c in survivors]
        new = [pair for pair in pairs if pair not in cache]
        if prepare is not None and new:
            prepare(new)
        rung_rows: list[tuple[str, int, Outcome, bool]] = []
        for candidate, r in pairs:
            charged = (candidate, r) not in cache
            if charged:
                cache[(candidate, r)] = evaluate(candidate, r)
                outcome = cache[(candidate, r)]
                spent += outcome.cost(unit)
                if unit == "seconds" and r > 0:
                    per_epoch[candidate] = outcome.cost_seconds / r
            rung_rows.append((candidate, r, cache[(candidate, r)], charged))
        outcomes = {c: o for c, _, o, _ in rung_rows}
        ranked = _rank(survivors, outcomes)
        last_rung = rung == len(sizes) - 1
        next_epochs: int | None = None
        if not last_rung:
            if unit == "seconds" and spent > budget:
                stop_reason = f"budget overrun after rung {rung} ({spent:.3g} s spent)"
            else:
                next_epochs = _next_epochs(
                    per_epoch, ranked, sizes[rung + 1 :], eta, budget - spent, epochs, max_epochs
                )
                if next_epochs is None:
                    stop_reason = f"budget spent: rung {rung + 1} would not fit"
                elif all(
                    (c, 0 if c in fixed_set else next_epochs) in cache
                    for c in ranked[: sizes[rung + 1]]
                ):
                    # The later rungs would only re-rank known outcomes: the order is final.
                    next_epochs = None
                    stop_reason = "choice final: later rungs would train nothing new"
        keep = set(ranked[:1]) if next_epochs is None else set(ranked[: sizes[rung + 1]])
        evaluations += [
            Evaluation(rung, c, r, o, charged, c in keep) for c, r, o, charged in rung_rows
        ]
        if next_epochs is None:
            return Allocation(
                "successive_halving",
                unit,
                float(budget),
                tuple(evaluations),
                ranked[0],
                stop_reason,
                fixed_set,
            )
        survivors = [c for c in survivors if c in keep]
        epochs = next_epochs
        rung += 1


def _first_epochs(
    per_epoch: Mapping[str, float],
    candidates: Sequence[str],
    sizes: Sequence[int],
    eta: int,
    budget: float,
    min_epochs: int,
    max_epochs: int | None,
) -> int:
    """Rung 0's epochs: the largest whose whole worst-case plan fits, else ``min_epochs``."""
    weights = sorted((per_epoch[c] for c in candidates), reverse=True)
    heaviest = sum(weights[: sizes[0]])
    if heaviest == 0:  # nothing trains by epochs: epochs cost nothing
        return max_epochs or min_epochs
    high = int(budget // heaviest) if max_epochs is None else max_epochs
    breaks = _cap_breaks(max_epochs, eta, len(sizes))
    found = _largest_fitting(
        min_epochs,
        max(min_epochs, high),
        lambda r: _plan_cost(weights, sizes, r, eta, max_epochs, prev=-1),
        budget,
        breaks,
    )
    return min_epochs if found is None else found


def _cap_breaks(cap: int | None, eta: int, rungs: int) -> list[int]:
    """First epochs at which rung ``j`` reaches the cap (where the plan's cost may drop)."""
    if cap is None:
        return []
    return [-(-cap // eta**j) for j in range(rungs)] + [cap // eta**j for j in range(rungs)]


def _next_epochs(
    per_epoch: Mapping[str, float],
    ranked: Sequence[str],
    sizes: Sequence[int],
    eta: int,
    remaining: float,
    previous: int,
    max_epochs: int | None,
) -> int | None:
    """The next rung's epochs, or ``None`` when it cannot be paid for.

    The largest epochs of at least ``eta`` x the previous rung's for which the remaining plan
    fits (worst case: the most expensive survivors); when even the shortest such plan does not
    fit, the largest epochs beyond the previous rung's for which this rung alone fits.
    """
    # The next rung's survivors are known; the worst case only matters for the rungs after it.
    weights = sorted((per_epoch[c] for c in ranked[: sizes[0]]), reverse=True)
    heaviest = sum(weights)
    low = _capped(previous * eta, max_epochs)
    if heaviest == 0 or low == previous:  # fixed survivors only, or held at the cap: free
        return low
    high = int(remaining // heaviest) if max_epochs is None else max_epochs
    breaks = _cap_breaks(max_epochs, eta, len(sizes))
    whole = _largest_fitting(
        low,
        high,
        lambda r: _plan_cost(weights, sizes, r, eta, max_epochs, previous),
        remaining,
        breaks,
    )
    if whole is not None:
        return whole
    alone = min(low - 1, int(remaining // heaviest))  # this rung alone, paid in full
    return alone if alone > previous else None


def uniform_epochs(budget: float, candidates: Sequence[str], fixed: Collection[str] = ()) -> int:
    """Epochs each candidate gets when an epoch budget is shared evenly (fixed ones cost none).

    Examples
    --------
    >>> uniform_epochs(100, ["a", "b", "c", "rf"], fixed=["rf"])
    33
    """
    fixed_set = _check_common(candidates, fixed)
    _check_budget(budget, "epochs")
    trained = len(candidates) - len(fixed_set)
    each = int(budget // trained) if trained else 0
    if trained and each < 1:
        raise ConfigError(
            f"a budget of {budget:g} epochs gives {trained} candidates under one epoch each",
            hint=f"give a budget of at least {trained} epochs",
        )
    return each


def uniform_epochs_for_seconds(
    budget: float, seconds_per_epoch: Mapping[str, float], fixed_seconds: float = 0.0
) -> dict[str, int]:
    """Epochs per candidate when a seconds budget is shared evenly, from measured speeds.

    The fixed candidates' seconds (``fixed_seconds``) are paid first; each trained candidate
    then gets an equal share of the rest, converted to epochs with its measured
    ``seconds_per_epoch`` (rounded down, at least one epoch).

    Examples
    --------
    >>> uniform_epochs_for_seconds(100, {"cnn": 0.5, "gru": 2.0}, fixed_seconds=10)
    {'cnn': 90, 'gru': 22}
    """
    _check_budget(budget, "seconds")
    if not seconds_per_epoch:
        return {}
    share = (budget - fixed_seconds) / len(seconds_per_epoch)
    return {
        name: max(1, int(share // speed)) if speed > 0 else 1
        for name, speed in seconds_per_epoch.items()
    }


def uniform_allocation(
    candidates: Sequence[str],
    evaluate: Evaluate,
    epochs: int | Mapping[str, int],
    *,
    fixed: Collection[str] = (),
    budget: float = math.nan,
    unit: Unit = "epochs",
    prepare: Prepare | None = None,
) -> Allocation:
    """Train every candidate once for ``epochs`` (one number, or one per candidate); best wins.

    ``budget`` and ``unit`` are only recorded (see :func:`uniform_epochs` for an even share of an
    epoch budget). Fixed candidates are evaluated with ``epochs = 0``.

    Examples
    --------
    >>> def evaluate(name, epochs):
    ...     acc = {"a": 0.6, "b": 0.8}[name]
    ...     return Outcome(acc, acc - 0.01, cost_epochs=epochs, cost_seconds=0.0)
    >>> result = uniform_allocation(["a", "b"], evaluate, epochs=10)
    >>> result.winner, result.spent_epochs
    ('b', 20.0)
    """
    fixed_set = _check_common(candidates, fixed)
    if unit not in UNITS:
        raise ConfigError(f"unknown budget unit '{unit}'", hint="use epochs or seconds")
    plan: list[tuple[str, int]] = []
    for candidate in candidates:
        r = epochs if isinstance(epochs, int) else epochs.get(candidate)
        if candidate in fixed_set:
            r = 0
        elif r is None or r < 1:
            raise ConfigError(
                f"uniform allocation: candidate '{candidate}' gets {r} epochs",
                hint="give every trained candidate 1 epoch or more",
            )
        plan.append((candidate, r))
    if prepare is not None:
        prepare(plan)
    outcomes = {c: evaluate(c, r) for c, r in plan}
    winner = _rank(candidates, outcomes)[0]
    evaluations = tuple(Evaluation(0, c, r, outcomes[c], True, c == winner) for c, r in plan)
    return Allocation(
        "uniform", unit, float(budget), evaluations, winner, "every candidate trained", fixed_set
    )
