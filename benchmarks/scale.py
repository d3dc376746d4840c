"""Speed-up of the default study on N Dask workers against one worker, side by side.

Both runs train the same members from scratch (fresh run directories) and write the same tables;
the one-worker run trains in this process, the N-worker run on a local Dask cluster (one process
and one torch thread per worker). Prints wall seconds of the training phase and of the whole
run, their ratios, and checks that the prediction tables are identical. Goal on a 2-core
machine: >= 1.6x with 2 workers.

    python benchmarks/scale.py [--workers 2] [--study mnist1d] [--set seeds=[0]]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from polyculture.run.distributed import dask_available
from polyculture.run.runner import run_study


def timed_run(study: str, out: Path, overrides: list[str], workers: int) -> tuple[float, float]:
    """Wall seconds of the whole run and of its training phase (first to last member)."""
    marks: dict[str, float] = {}

    def on_start(*_: object) -> None:
        marks["start"] = time.perf_counter()

    def on_member(*_: object) -> None:
        marks["end"] = time.perf_counter()

    started = time.perf_counter()
    run_study(study, out, overrides, workers=workers, on_start=on_start, on_member=on_member)
    return time.perf_counter() - started, marks["end"] - marks["start"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="mnist1d")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if not dask_available():
        raise SystemExit("needs polyculture[dist]: pip install 'polyculture[dist]'")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        one = timed_run(args.study, root / "one", args.overrides, 1)
        many = timed_run(args.study, root / "many", args.overrides, args.workers)
        a = pd.read_parquet(next((root / "one").glob("*/tables/predictions.parquet")))
        b = pd.read_parquet(next((root / "many").glob("*/tables/predictions.parquet")))
        identical = a.equals(b)
    print(
        f"study {args.study}, training phase: 1 worker {one[1]:.1f} s, {args.workers} Dask "
        f"workers {many[1]:.1f} s -> speed-up {one[1] / many[1]:.2f}x (goal >= 1.6x on 2 cores)"
    )
    print(
        f"whole run (+ analysis and report, serial in both): {one[0]:.1f} s vs {many[0]:.1f} s "
        f"-> {one[0] / many[0]:.2f}x; identical predictions: {identical}"
    )


if __name__ == "__main__":
    main()
