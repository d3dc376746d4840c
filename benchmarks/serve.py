"""Latency and throughput of the support assistant over HTTP on loopback.

Starts ``polyculture serve RUN_DIR --app support`` in a child process on a free loopback port (the
assistant must be built: ``polyculture support RUN_DIR ...``), waits for ``GET /health``, then
sends real customer messages (the run's test split, in order, cycled) to ``POST /answer``:

1. one request at a time (after a warm-up): p50, p95 and p99 latency, client-side wall time of
   each request including the HTTP round trip;
2. ``--concurrency`` clients (threads, one keep-alive connection each) sending ``--requests``
   requests in all: throughput (requests per second of wall time) and the latency percentiles
   under load.

Any answer other than 200 counts as an error (the exit code is 1 when there is one). Prints the
figures, the routes the answers took, and the ratio of the sequential p95 to the goal (50 ms).

    python benchmarks/serve.py runs/banking77 [--requests 2000] [--concurrency 16]
        [--sequential 300] [--json out.json]

The server runs with ``--no-access-log`` and the environment of this process (set
``OMP_NUM_THREADS`` to bound torch's threads).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

GOAL_P95_MS = 50.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_messages(run_dir: Path) -> list[str]:
    """The raw test messages of the run's task."""
    from polyculture.data.builders import DataSpec, build_task
    from polyculture.run import load_run

    task = build_task(DataSpec.model_validate(load_run(run_dir).study["data"]))
    if task.test.texts is None:
        raise SystemExit(f"{run_dir} is not a text task")
    return list(task.test.texts)


def start_server(run_dir: Path, port: int, timeout: float) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "polyculture", "serve", str(run_dir), "--app", "support"]
    command += ["--port", str(port), "--no-access-log"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            error = server.stderr.read().decode() if server.stderr else ""
            raise SystemExit(f"the server exited with {server.returncode}:\n{error}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the server did not answer /health within {timeout:.0f} s")


def percentiles(latencies: list[float]) -> dict[str, float]:
    values = 1000 * np.asarray(latencies)  # ms
    return {f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 95, 99)}


def sequential(url: str, messages: list[str], count: int, warmup: int) -> dict[str, Any]:
    latencies: list[float] = []
    routes: Counter[str] = Counter()
    errors = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(warmup + count):
            started = time.perf_counter()
            response = client.post("/answer", json={"text": messages[i % len(messages)]})
            elapsed = time.perf_counter() - started
            if i < warmup:
                continue
            latencies.append(elapsed)
            if response.status_code == 200:
                routes[response.json()["route"]] += 1
            else:
                errors += 1
    return {"requests": count, "errors": errors, "routes": dict(routes), **percentiles(latencies)}


def concurrent(url: str, messages: list[str], total: int, clients: int) -> dict[str, Any]:
    lock = threading.Lock()
    next_index = [0]
    latencies: list[float] = []
    routes: Counter[str] = Counter()
    errors: list[str] = []

    def work() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while True:
                with lock:
                    index = next_index[0]
                    next_index[0] += 1
                if index >= total:
                    return
                started = time.perf_counter()
                try:
                    response = client.post(
                        "/answer", json={"text": messages[index % len(messages)]}
                    )
                    ok = response.status_code == 200
                    detail = f"HTTP {response.status_code}"
                except httpx.HTTPError as err:
                    ok, detail = False, type(err).__name__
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if ok:
                        routes[response.json()["route"]] += 1
                    else:
                        errors.append(detail)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "requests": total,
        "clients": clients,
        "errors": len(errors),
        "error_kinds": dict(Counter(errors)),
        "wall_s": wall,
        "throughput_per_s": total / wall,
        "routes": dict(routes),
        **percentiles(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="A run directory with a built assistant.")
    parser.add_argument("--requests", type=int, default=2000, help="Requests under load.")
    parser.add_argument("--concurrency", type=int, default=16, help="Concurrent clients.")
    parser.add_argument("--sequential", type=int, default=300, help="One-at-a-time requests.")
    parser.add_argument("--warmup", type=int, default=30, help="Untimed requests first.")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    config = json.loads((args.run_dir / "support" / "support.json").read_text())
    messages = load_messages(args.run_dir)
    port = free_port()
    started = time.perf_counter()
    server = start_server(args.run_dir, port, args.startup_timeout)
    startup = time.perf_counter() - started
    url = f"http://127.0.0.1:{port}"
    try:
        one = sequential(url, messages, args.sequential, args.warmup)
        load = concurrent(url, messages, args.requests, args.concurrency)
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {
        "run_dir": str(args.run_dir),
        "member": config["member"],
        "encoder": config["encoder"],
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "startup_s": startup,
        "sequential": one,
        "concurrent": load,
        "goal_p95_ms": GOAL_P95_MS,
        "p95_over_goal": one["p95_ms"] / GOAL_P95_MS,
    }
    print(f"member {config['member']}, retrieval encoder {config['encoder']}, ")
    print(f"server ready in {startup:.1f} s on {url} ({os.cpu_count()} CPUs)")
    print(
        f"one at a time ({one['requests']} requests): p50 {one['p50_ms']:.2f} ms, "
        f"p95 {one['p95_ms']:.2f} ms, p99 {one['p99_ms']:.2f} ms, errors {one['errors']}; "
        f"routes {one['routes']}"
    )
    print(
        f"{load['clients']} concurrent clients ({load['requests']} requests): "
        f"{load['throughput_per_s']:.0f} requests/s, p50 {load['p50_ms']:.1f} ms, "
        f"p95 {load['p95_ms']:.1f} ms, errors {load['errors']} {load['error_kinds'] or ''}"
    )
    verdict = "meets" if one["p95_ms"] <= GOAL_P95_MS else "misses"
    print(
        f"goal p95 <= {GOAL_P95_MS:g} ms one at a time: {verdict} it "
        f"(p95 / goal = {result['p95_over_goal']:.2f})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if one["errors"] or load["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
