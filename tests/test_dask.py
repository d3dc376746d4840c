"""Members on Dask: the same numbers as a serial run, worker deaths survived, bad addresses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conftest import tiny_study
from polyculture.errors import ExecutionError
from polyculture.measure.cost import VARYING_COLUMNS
from polyculture.run.runner import run_study
from polyculture.run.study import expand, load_study

distributed = pytest.importorskip("distributed", reason="needs polyculture[dist]")

STUDY = tiny_study(
    "dasky",
    seeds=[0, 1],
    train={"epochs": 4, "batch_size": 32, "lr": 0.01},
    zoo=[
        {"family": "linear"},
        {"family": "mlp", "params": {"width": 32, "depth": 1}},
        {"family": "cnn", "params": {"width": 8, "depth": 2}},
        {"family": "logreg", "params": {"max_iter": 200}},
    ],
    execution={"workers": 1},
)


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    members = pd.read_parquet(root / "tables" / "members.parquet")
    predictions = pd.read_parquet(root / "tables" / "predictions.parquet")
    numbers = members.drop(columns=["train_seconds", *VARYING_COLUMNS]).sort_values("member_id")
    return {"members": numbers.reset_index(drop=True), "predictions": predictions}


def test_local_cluster_gives_the_serial_numbers(tmp_path: Path) -> None:
    run_study(STUDY, tmp_path / "serial", workers=1)
    lines: list[str] = []
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        run_study(
            STUDY,
            tmp_path / "dask",
            scheduler=cluster.scheduler_address,
            on_cluster=lines.append,
        )
    assert lines and "Dask: 2 worker(s)" in lines[0]
    serial, dask = _tables(tmp_path / "serial" / "dasky"), _tables(tmp_path / "dask" / "dasky")
    pd.testing.assert_frame_equal(serial["members"], dask["members"])
    pd.testing.assert_frame_equal(serial["predictions"], dask["predictions"])


def test_workers_option_starts_a_local_dask_cluster(tmp_path: Path) -> None:
    lines: list[str] = []
    results = run_study(STUDY, tmp_path, workers=2, on_cluster=lines.append)
    assert lines and "local cluster" in lines[0]
    assert (results.members["status"] == "ok").all()


def test_a_killed_worker_does_not_lose_or_repeat_members(tmp_path: Path) -> None:
    study = tiny_study(
        "killy",
        seeds=[0, 1, 2],
        train={"epochs": 15, "batch_size": 16, "lr": 0.01},
        zoo=[{"family": "cnn", "params": {"width": 16, "depth": 2}}, {"family": "mlp"}],
    )
    killed: list[int] = []
    # No client of the test's own: a second client in this process (beside the run's) can leave
    # a rescheduled future bound to the other client's event loop (a flaky RuntimeError).
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:

        def kill_one(*_: Any) -> None:
            if not killed:  # after the first member: a worker dies in the middle of its next
                pid = next(iter(cluster.workers.values())).process.pid
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        results = run_study(
            study, tmp_path, scheduler=cluster.scheduler_address, on_member=kill_one
        )
    assert killed
    plans = expand(load_study(study))
    members = results.members
    assert len(members) == len(plans) and members["member_id"].is_unique, members["member_id"]
    assert (members["status"] == "ok").all(), members["reason"].tolist()
    folders = [p for p in (tmp_path / "killy" / "members").iterdir() if not p.name.startswith(".")]
    # every member exactly once, no stray copies
    assert len(folders) == len(plans), sorted(p.name for p in folders)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_scheduler_fails_fast_with_one_line(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    started = time.perf_counter()
    with pytest.raises(ExecutionError, match="could not reach a Dask scheduler"):
        run_study(STUDY, tmp_path, scheduler=address)
    assert time.perf_counter() - started < 30
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "polyculture", "run", "mnist1d", "--scheduler", address,
         "--out", str(tmp_path / "cli"), "--set", "seeds=[0]"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "could not reach a Dask scheduler" in lines[0] and "Traceback" not in result.stderr
    assert seconds < 30, f"took {seconds:.0f} s"


def test_a_diverging_member_is_recorded_failed_once(tmp_path: Path) -> None:
    study = tiny_study(
        "diverge",
        seeds=[0],
        zoo=[
            {
                "family": "mlp",
                "params": {"width": 256, "depth": 3},
                "train": {"optimizer": "sgd", "lr": 10.0, "schedule": "constant", "batch_size": 16},
            },
            {"family": "logreg", "params": {"max_iter": 200}},
            {"family": "linear"},
        ],
    )
    attempts: list[str] = []
    results = run_study(
        study, tmp_path, workers=2, on_member=lambda plan, *_: attempts.append(plan.member_id)
    )
    members = results.members.set_index("family")
    assert members.loc["mlp", "status"] == "failed" and "loss" in members.loc["mlp", "reason"]
    assert (members.loc[["logreg", "linear"], "status"] == "ok").all()
    assert sorted(attempts) == sorted(results.members["member_id"])  # each reported once
