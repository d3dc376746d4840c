"""onnxruntime against eager PyTorch at batch 1: the default study's CNN and Transformer.

Trains the two entries of the built-in ``mnist1d`` study (their own knobs and training settings,
one seed, few epochs) or reads them from an existing run directory, exports each with
``polyculture.run.export.export_member`` (parity checked, int8 copy with its test accuracy), then
times one test input per call, side by side: eager PyTorch (``torch.inference_mode``) and
onnxruntime on the float32 file, plus the int8 file. Both run on one thread
(``torch.set_num_threads(1)``; onnxruntime ``intra_op_num_threads=1``, ``inter_op_num_threads=1``).
After a warm-up the runtimes take turns in rounds, so background load hits all of them alike.
Prints p50/p95 latency of each, the speed-up (eager p50 / onnxruntime p50; goal >= 1.5x), and
the int8 size against the float32 size.

    python benchmarks/export.py [--run-dir runs/mnist1d] [--epochs 10] [--rounds 5] [--calls 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tomllib
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from polyculture.run import load_run, run_study
from polyculture.run.export import export_member
from polyculture.run.members import load_member

FAMILIES = ("cnn", "transformer")


def train_default_entries(out: Path, epochs: int) -> Path:
    """Train the default study's CNN and Transformer entries (one seed) into ``out``."""
    study: dict[str, Any] = tomllib.loads(
        (resources.files("polyculture") / "studies" / "mnist1d.toml").read_text()
    )
    study["zoo"] = [entry for entry in study["zoo"] if entry["family"] in FAMILIES]
    study["seeds"] = [0]
    study["train"]["epochs"] = epochs
    for entry in study["zoo"]:
        entry.get("train", {}).pop("epochs", None)
    with warnings.catch_warnings():  # the run's report figures are not what is measured here
        warnings.simplefilter("ignore", UserWarning)
        return run_study(study, out, workers=1).root


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_calls(call: Any, inputs: list[Any], calls: int) -> list[float]:
    """Seconds of each of ``calls`` calls, cycling through ``inputs``."""
    seconds = []
    for i in range(calls):
        x = inputs[i % len(inputs)]
        start = time.perf_counter()
        call(x)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="existing run with cnn and transformer")
    parser.add_argument("--epochs", type=int, default=10, help="epochs when training here")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up calls per runtime")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of interleaved timing")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    scratch = Path(tempfile.mkdtemp(prefix="polyculture-export-bench-"))
    run_dir = args.run_dir or train_default_entries(scratch / "runs", args.epochs)
    results = load_run(run_dir)
    print(f"run: {run_dir}")
    print(
        "threads: torch 1 (set_num_threads), onnxruntime intra-op 1, inter-op 1; batch 1; "
        f"{args.warmup} warm-up calls, then {args.rounds} rounds x {args.calls} calls per runtime, "
        "interleaved"
    )
    print(
        f"{'model':<46} {'runtime':<12} {'p50 µs':>9} {'p95 µs':>9} {'speed-up':>9} "
        f"{'size':>10} {'test acc':>9}"
    )
    for family in FAMILIES:
        rows = results.members[(results.members["family"] == family)]
        rows = rows[rows["status"] == "ok"].sort_values("seed")
        if rows.empty:
            raise SystemExit(f"{run_dir} has no trained {family} member")
        member_id = str(rows.iloc[0]["member_id"])
        name = str(rows.iloc[0]["name"])
        trained = load_member(results, member_id)
        exported = export_member(results, member_id, out=scratch / "exports", quantize="int8")
        assert exported.quantization is not None
        model = trained.model.eval()
        inputs = [trained.task.test.x[i : i + 1] for i in range(256)]  # (1, 1, 40) each
        arrays = [x.numpy() for x in inputs]
        float_session = session(exported.export.path)
        int8_session = session(exported.quantization.path)
        input_name = float_session.get_inputs()[0].name

        def eager(x: torch.Tensor, model: torch.nn.Module = model) -> None:
            with torch.inference_mode():
                model(x)

        def onnx_float(
            x: np.ndarray, s: ort.InferenceSession = float_session, name: str = input_name
        ) -> None:
            s.run(None, {name: x})

        def onnx_int8(
            x: np.ndarray, s: ort.InferenceSession = int8_session, name: str = input_name
        ) -> None:
            s.run(None, {name: x})

        runtimes = {
            "pytorch": (eager, inputs),
            "onnxruntime": (onnx_float, arrays),
            "ort int8": (onnx_int8, arrays),
        }
        seconds: dict[str, list[float]] = {key: [] for key in runtimes}
        for call, data in runtimes.values():
            time_calls(call, data, args.warmup)
        for _ in range(args.rounds):
            for key, (call, data) in runtimes.items():
                seconds[key] += time_calls(call, data, args.calls)
        p50 = {key: float(np.percentile(s, 50)) * 1e6 for key, s in seconds.items()}
        p95 = {key: float(np.percentile(s, 95)) * 1e6 for key, s in seconds.items()}
        quantized = exported.quantization
        sizes = {
            "pytorch": sum(p.numel() * p.element_size() for p in model.state_dict().values()),
            "onnxruntime": exported.export.size_bytes,
            "ort int8": quantized.size_bytes,
        }
        accuracy = {
            "pytorch": float(rows.iloc[0]["test_accuracy"]),
            "onnxruntime": quantized.float32_accuracy,
            "ort int8": quantized.int8_accuracy,
        }
        for key in runtimes:
            label = name if key == "pytorch" else ""
            speedup = p50["pytorch"] / p50[key]
            print(
                f"{label:<46} {key:<12} {p50[key]:>9.1f} {p95[key]:>9.1f} {speedup:>8.2f}x "
                f"{sizes[key] / 1e3:>8.1f}kB {accuracy[key]:>9.4f}"
            )
        print(
            f"{'':<46} onnxruntime vs eager PyTorch at batch 1: "
            f"{p50['pytorch'] / p50['onnxruntime']:.2f}x faster (p50; goal >= 1.5x), "
            f"parity max |diff| {exported.export.max_abs_diff:.1g}; int8 file "
            f"{quantized.size_ratio:.2f} x float32, test accuracy change "
            f"{quantized.accuracy_change:+.4f}"
        )
    print("(size of pytorch: its state dict in memory; speed-up: eager p50 / runtime p50)")


if __name__ == "__main__":
    main()
