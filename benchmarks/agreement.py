"""Wall time of ``pairwise_agreement`` against a plain NumPy loop over pairs, side by side.

Both compute the same eight ``(m, m)`` matrices (disagreement, Cohen's kappa, error consistency,
same-wrong rate and its chance level, double fault, Q statistic, correlation) for random
predictions; the loop visits each of the ``m (m + 1) / 2`` pairs and computes its cells with
vectorised NumPy over the instances, which is how one would write it without matrix products.
Prints both times, their ratio, the largest difference between the two results, and whether
``pairwise_agreement`` meets the goal of < 1 s for 200 members x 10,000 instances.

    python benchmarks/agreement.py [--members 200] [--instances 10000] [--classes 10] [--threads N]

The load average is printed too: torch's thread pool slows down several-fold when other
processes hold the cores, and ``--threads 1`` is then the faster setting.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from polyculture.measure.agreement import pairwise_agreement

GOAL_SECONDS = 1.0


def loop_over_pairs(pred: np.ndarray, labels: np.ndarray, classes: int) -> dict[str, np.ndarray]:
    n, m = pred.shape
    right = pred == labels[:, None]
    per_class = np.bincount(labels, minlength=classes).astype(float)
    weight = np.repeat(1.0 / np.maximum(per_class, 1), classes)  # 1 / n_y per (y, c) cell
    keys = ["disagreement", "cohen_kappa", "error_consistency", "same_wrong"]
    keys += ["same_wrong_chance", "double_fault", "q_statistic", "correlation"]
    out = {key: np.empty((m, m)) for key in keys}
    for i in range(m):
        for j in range(i, m):
            a, b, ra, rb = pred[:, i], pred[:, j], right[:, i], right[:, j]
            n11 = np.count_nonzero(ra & rb)
            n00 = np.count_nonzero(~ra & ~rb)
            n10 = np.count_nonzero(ra & ~rb)
            n01 = n - n11 - n00 - n10
            agree = np.count_nonzero(a == b)
            p_e = np.bincount(a, minlength=classes) @ np.bincount(b, minlength=classes) / n**2
            pa, pb = ra.mean(), rb.mean()
            c_exp = pa * pb + (1 - pa) * (1 - pb)
            conf_a = np.bincount(labels[~ra] * classes + a[~ra], minlength=classes**2)
            conf_b = np.bincount(labels[~rb] * classes + b[~rb], minlength=classes**2)
            spread = np.sqrt(float((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)))
            q_den = n11 * n00 + n01 * n10
            cells = {
                "disagreement": 1 - agree / n,
                "cohen_kappa": (agree / n - p_e) / (1 - p_e) if p_e < 1 else np.nan,
                "error_consistency": (
                    ((n11 + n00) / n - c_exp) / (1 - c_exp) if c_exp < 1 else np.nan
                ),
                "same_wrong": np.count_nonzero(~ra & (a == b)) / n,
                "same_wrong_chance": float((conf_a * conf_b * weight).sum() / n),
                "double_fault": n00 / n,
                "q_statistic": (n11 * n00 - n01 * n10) / q_den if q_den else np.nan,
                "correlation": (n11 * n00 - n01 * n10) / spread if spread else np.nan,
            }
            for key, value in cells.items():
                out[key][i, j] = out[key][j, i] = value
    for key in ("cohen_kappa", "error_consistency", "q_statistic", "correlation"):
        np.fill_diagonal(out[key], 1.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    labels = rng.integers(0, args.classes, args.instances)
    pred = rng.integers(0, args.classes, (args.instances, args.members))

    pairwise_agreement(pred[:100, :4], labels[:100])  # warm-up: imports, thread pools
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fast = pairwise_agreement(pred, labels)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    slow = loop_over_pairs(pred, labels, args.classes)
    loop_time = time.perf_counter() - start

    worst = max(float(np.nanmax(np.abs(fast[key] - slow[key]))) for key in slow)
    fast_time = min(times)
    print(
        f"{args.members} members x {args.instances} instances x {args.classes} classes, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print(f"{'implementation':<28}{'wall time (s)':>14}")
    print(f"{'pairwise_agreement (best)':<28}{fast_time:>14.3f}")
    print(f"{'pairwise_agreement (median)':<28}{float(np.median(times)):>14.3f}")
    print(f"{'loop over pairs':<28}{loop_time:>14.3f}")
    print(f"speed-up: {loop_time / fast_time:.0f}x; largest difference: {worst:.1e}")
    verdict = "met" if fast_time < GOAL_SECONDS else "NOT met"
    print(f"goal < {GOAL_SECONDS:.0f} s: {verdict}")


if __name__ == "__main__":
    main()
