"""Successive halving against uniform allocation on the default study's candidates, side by side.

The candidates are the 8 models of the built-in ``mnist1d`` study (linear, MLP, CNN, GRU,
Transformer, logistic regression, random forest, k-NN), one seed each. Uniform allocation trains
every candidate for the study's own epochs (linear 30, the other torch models 60; 270
member-epochs) and picks the best on validation. Successive halving gets half of that as its
budget (135 member-epochs) with eta = 3 and no member trained longer than the study's 60 epochs.
Both run in one budget run directory (members shared by both are trained once, each allocation is
charged its own cost). Prints each allocation's winner, its validation and test accuracy, the
member-epochs and measured seconds spent, and their ratio; the check is that successive halving
reaches at least uniform's test accuracy while spending <= 50% of its epochs. With
``--same-budget`` it also shows uniform allocation at successive halving's budget (135 / 5 = 27
epochs per torch candidate).

Compute is judged in epochs (exact); seconds are measured on a shared machine and only reported.

    python benchmarks/budget.py [--out DIR] [--workers 2] [--eta 3] [--fraction 0.5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from polyculture.run.budget import BudgetResult, budget_candidates, run_budget
from polyculture.run.study import load_study


def _row(name: str, result: BudgetResult, which: str) -> str:
    allocation = result.halving if which == "halving" else result.uniform
    final = allocation.final
    return (
        f"{name:<34} {allocation.winner:<24} {final.epochs:>6} "
        f"{final.outcome.val_accuracy:>8.4f} {final.outcome.test_accuracy:>8.4f} "
        f"{allocation.spent_epochs:>8g} {allocation.spent_seconds:>9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="Parent folder (default: temp).")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.5, help="Budget / uniform's epochs.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--same-budget", action="store_true", help="Also uniform at SH's budget.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="budget-bench-"))

    study = load_study("mnist1d")
    candidates = budget_candidates(study)
    uniform_epochs = sum(c.epochs for c in candidates)  # one seed
    budget = args.fraction * uniform_epochs
    max_epochs = study.train.epochs
    print(
        f"candidates: {len(candidates)} ({sum(c.fixed for c in candidates)} scikit-learn), "
        f"seed {args.seed}; uniform: the study's own epochs ({uniform_epochs} member-epochs); "
        f"successive halving: budget {budget:g} epochs, eta {args.eta}, max_epochs {max_epochs}, "
        f"workers {args.workers}, 1 torch thread each"
    )
    started = time.perf_counter()
    settings = {
        "unit": "epochs",
        "eta": args.eta,
        "max_epochs": max_epochs,
        "seed": args.seed,
        "workers": args.workers,
    }
    result = run_budget(study, budget, out, uniform="study", **settings)
    header = (
        f"{'allocation':<34} {'winner':<24} {'epochs':>6} {'val acc':>8} {'test acc':>8} "
        f"{'epochs':>8} {'seconds':>9}"
    )
    print(header)
    print(_row("successive halving", result, "halving"))
    print(_row("uniform (study's epochs)", result, "uniform"))
    same = None
    if args.same_budget:
        same = run_budget(study, budget, out, uniform="budget", **settings)
        print(_row(f"uniform (same budget, {budget:g} epochs)", same, "uniform"))
    halving = result.halving
    for rung in range(halving.rungs):
        rows = [e for e in halving.evaluations if e.rung == rung]
        kept = ", ".join(e.candidate for e in rows if e.kept)
        shown = ", ".join(
            f"{e.candidate}@{e.epochs}: {e.outcome.val_accuracy:.3f}"
            + ("" if e.charged else " (reused)")
            for e in rows
        )
        print(f"  rung {rung}: {shown}\n    kept: {kept}")
    uniform_tests = [e.outcome.test_accuracy for e in result.uniform.evaluations]
    ratio_epochs, ratio_seconds = result.ratio("epochs"), result.ratio("seconds")
    print(
        f"ratio successive halving / uniform: epochs {ratio_epochs:.2f}, "
        f"seconds {ratio_seconds:.2f}; best test accuracy of any uniform member "
        f"{max(uniform_tests):.4f}"
    )
    reached = halving.final.outcome.test_accuracy >= result.uniform.final.outcome.test_accuracy
    cheap = ratio_epochs <= 0.5
    verdict = "PASS" if reached and cheap else "FAIL"
    print(
        f"{verdict}: successive halving test accuracy {halving.final.outcome.test_accuracy:.4f} "
        f"{'>=' if reached else '<'} uniform's {result.uniform.final.outcome.test_accuracy:.4f}, "
        f"spending {ratio_epochs:.0%} of its epochs (goal <= 50%)"
    )
    print(f"wall time {time.perf_counter() - started:.0f} s; run directory {result.root}")


if __name__ == "__main__":
    main()
