"""What a model costs to serve: latency, throughput, memory, FLOPs, parameters, size on disk.

:func:`cost_profile` measures one trained model on example inputs, for a torch module (run in
eval mode under ``torch.no_grad``) or for any ``predict(x)`` callable (a scikit-learn
``predict_proba``, a :class:`~polyculture.zoo.base.ClassicalModel`):

- **latency** p50/p95 (ms) of one call at batch 1, over repeated calls after a warm-up;
- **throughput** (examples/s) at a large batch (256): batch size / median time of one call;
- **peak memory** (MB = 10^6 bytes) of one call at that batch, *above* what was allocated before
  it (the weights and the inputs are not counted, the output is). How it is measured depends on
  what runs (``memory_method`` says which):

  * ``cuda_max_memory_allocated``: CUDA models, ``torch.cuda.max_memory_allocated`` after a reset;
  * ``torch_live_tensors``: torch models on the CPU, the largest total size of the tensors the
    forward pass creates that are alive at one time, tracked at torch's dispatcher
    (``TorchDispatchMode``): activations and outputs. Scratch buffers a kernel allocates and
    frees inside one operator (e.g. a convolution's workspace) are not seen, so this is a lower
    bound, but it is deterministic (same model and batch, same bytes);
  * ``tracemalloc``: callables (scikit-learn), the peak of :mod:`tracemalloc` during the call:
    Python objects and NumPy arrays (NumPy reports its buffers to tracemalloc); native buffers
    allocated outside NumPy (some Cython scratch space) are not seen.

- **FLOPs** per example of one forward pass, counted by torch's own flop counter
  (:func:`polyculture.zoo.base.forward_flops`); NaN for callables;
- **parameters**: trainable parameters of a torch module, learned values of a classical model;
- **size on disk** (bytes): a torch module's state dict as safetensors (exactly the bytes of the
  run directory's ``weights.safetensors``), a classical model's fitted estimator pickled.

Timing uses :func:`time.perf_counter` with a CUDA synchronize after each call on the GPU, and
runs with a stated number of threads (torch's intra-op threads and the BLAS/OpenMP pools of
NumPy and scikit-learn are all limited to it). The default budget is about one second per model
(half for latency, half for throughput), so it can run for every member of a study; a very slow
model still gets a few timed calls. Wall-clock numbers vary between runs and machines: compare
them within one run.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import time
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from threadpoolctl import threadpool_limits
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from polyculture.errors import MeasureInputError
from polyculture.zoo.base import ClassicalModel, count_parameters, forward_flops

__all__ = [
    "MB",
    "VARYING_COLUMNS",
    "CostProfile",
    "cost_profile",
    "member_cost",
    "profile_parameters",
    "stored_size",
]

MB = 1e6
"""Bytes per MB (SI): sizes and memory are reported in 10^6 bytes."""

VARYING_COLUMNS = ("latency_p50_ms", "latency_p95_ms", "throughput_per_s", "peak_memory_mb")
"""Cost columns that differ between two runs of the same member: the clock readings, and peak
memory (tracemalloc's count for scikit-learn members moves by a few hundred bytes). Leave them
out when comparing runs; ``size_bytes``, ``n_parameters`` and FLOPs are deterministic."""


@dataclass(frozen=True)
class CostProfile:
    """The serving cost of one model (see the module docstring for how each is measured).

    Attributes
    ----------
    latency_p50_ms, latency_p95_ms
        Median and 95th percentile of the time of one call at batch 1, in milliseconds.
    throughput_per_s
        Examples per second at ``batch_size``: ``batch_size`` / median time of one call.
    peak_memory_mb
        Peak memory of one call at ``batch_size`` above what was allocated before it, in MB.
    memory_method
        How ``peak_memory_mb`` was measured: ``cuda_max_memory_allocated``,
        ``torch_live_tensors`` or ``tracemalloc``.
    flops_per_example
        Forward-pass FLOPs per example (torch's flop counter); NaN for callables.
    n_parameters
        Trainable parameters (torch) or learned values (classical); NaN when unknown.
    size_bytes
        Bytes of the stored weights (safetensors) or of the pickled estimator; NaN when unknown.
    threads
        Threads the timing ran with (torch intra-op and BLAS/OpenMP pools).
    device
        Where the model ran: ``cpu``, ``cuda:0``, ...
    batch_size
        The throughput and memory batch.
    latency_calls, throughput_calls
        Timed calls behind the latency percentiles and the throughput.
    """

    latency_p50_ms: float
    latency_p95_ms: float
    throughput_per_s: float
    peak_memory_mb: float
    memory_method: str
    flops_per_example: float
    n_parameters: float
    size_bytes: float
    threads: int
    device: str
    batch_size: int
    latency_calls: int
    throughput_calls: int

    def record(self) -> dict[str, Any]:
        """The cost columns of a members-table row (``n_parameters`` and FLOPs are already there).

        Examples
        --------
        >>> profile = cost_profile(nn.Linear(4, 2), torch.zeros(8, 4), max_seconds=0.05)
        >>> sorted(profile.record())[:3]
        ['cost_batch_size', 'cost_device', 'latency_p50_ms']
        """
        values = asdict(self)
        return {
            "latency_p50_ms": values["latency_p50_ms"],
            "latency_p95_ms": values["latency_p95_ms"],
            "throughput_per_s": values["throughput_per_s"],
            "peak_memory_mb": values["peak_memory_mb"],
            "memory_method": values["memory_method"],
            "size_bytes": values["size_bytes"],
            "threads": values["threads"],
            "cost_device": values["device"],
            "cost_batch_size": values["batch_size"],
        }


Model = nn.Module | ClassicalModel | Callable[[np.ndarray], Any]
"""What :func:`cost_profile` measures: a torch module, a classical model or a predict callable."""


def cost_profile(
    model: Model,
    inputs: torch.Tensor | np.ndarray,
    *,
    batch_size: int = 256,
    repeats: int = 200,
    batch_repeats: int = 20,
    warmup: int = 5,
    max_seconds: float = 1.0,
    threads: int | None = None,
    device: str | torch.device | None = None,
    n_parameters: float | None = None,
    size_bytes: float | None = None,
) -> CostProfile:
    """Measure the serving cost of one model on example inputs.

    Parameters
    ----------
    model
        A torch module (run in eval mode under ``no_grad``, its training mode restored after),
        a :class:`~polyculture.zoo.base.ClassicalModel` (its ``predict_proba`` is timed), or any
        callable taking a NumPy batch ``(b, ...)``, e.g. a scikit-learn ``predict_proba``.
    inputs
        Example inputs ``(n, *input_shape)``. Batch-1 calls cycle through the rows; the large
        batch is the first ``batch_size`` rows, repeated when there are fewer.
    batch_size
        The throughput and memory batch.
    repeats, batch_repeats
        The most timed calls at batch 1 and at ``batch_size``.
    warmup
        Untimed calls at batch 1 before timing (one untimed call precedes the large-batch timing).
    max_seconds
        Time budget of the timed calls: half for batch 1, half for ``batch_size``. Timing stops at
        ``repeats`` calls or when the budget is spent, after at least 5 (batch 1) and 2 (batch
        ``batch_size``) calls.
    threads
        Threads to time with (default: ``torch.get_num_threads()``); restored afterwards.
    device
        Where a torch module runs (default: where its parameters are, else the CPU); the module
        is moved there and stays there.
    n_parameters, size_bytes
        Override the counted parameters or stored size (e.g. for a callable that hides them).

    Returns
    -------
    CostProfile

    Raises
    ------
    MeasureInputError
        No input rows, or a non-positive batch size, repeat count or budget.

    Examples
    --------
    >>> profile = cost_profile(nn.Linear(8, 4), torch.zeros(16, 8), max_seconds=0.05)
    >>> profile.flops_per_example, profile.n_parameters, profile.memory_method
    (64.0, 36.0, 'torch_live_tensors')
    >>> profile.latency_p50_ms <= profile.latency_p95_ms
    True
    >>> profile.peak_memory_mb  # the (256, 4) float32 output
    0.004096
    """
    _check(inputs, batch_size, repeats, batch_repeats, warmup, max_seconds)
    threads = torch.get_num_threads() if threads is None else threads
    with _limited_threads(threads):
        if isinstance(model, nn.Module):
            profile = _profile_torch(
                model, inputs, batch_size, repeats, batch_repeats, warmup, max_seconds, device
            )
        else:
            profile = _profile_callable(
                model, inputs, batch_size, repeats, batch_repeats, warmup, max_seconds
            )
    return CostProfile(
        **profile,
        n_parameters=float(profile_parameters(model) if n_parameters is None else n_parameters),
        size_bytes=float(stored_size(model) if size_bytes is None else size_bytes),
        threads=threads,
        batch_size=batch_size,
    )


def _check(
    inputs: torch.Tensor | np.ndarray,
    batch_size: int,
    repeats: int,
    batch_repeats: int,
    warmup: int,
    max_seconds: float,
) -> None:
    if len(inputs) == 0:
        raise MeasureInputError(
            "cost_profile needs at least one example input", hint="pass a few rows of the task"
        )
    if min(batch_size, repeats, batch_repeats) < 1 or warmup < 0 or not max_seconds > 0:
        raise MeasureInputError(
            f"batch_size={batch_size}, repeats={repeats}, batch_repeats={batch_repeats}, "
            f"warmup={warmup}, max_seconds={max_seconds}: sizes and counts must be positive",
            hint="use batch_size >= 1, repeats >= 1, warmup >= 0 and max_seconds > 0",
        )


@contextlib.contextmanager
def _limited_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def profile_parameters(model: Model) -> float:
    """Trainable parameters of a torch module, learned values of a classical model, else NaN.

    Examples
    --------
    >>> profile_parameters(nn.Linear(3, 2)), profile_parameters(print)
    (8.0, nan)
    """
    if isinstance(model, nn.Module):
        return float(count_parameters(model))
    owner = _owner(model)
    if isinstance(owner, ClassicalModel):
        return float(owner.n_parameters)
    return math.nan


def stored_size(model: Model) -> float:
    """Bytes of a model's stored weights: safetensors for torch, a pickle for scikit-learn.

    A torch module's state dict is serialized as safetensors (the format of the run directory's
    ``weights.safetensors``, so this is that file's size); a classical model's fitted estimator
    (or a bound method's object) is pickled in memory. NaN when neither applies.

    Examples
    --------
    >>> stored_size(nn.Linear(3, 2)) > 8 * 4  # 8 float32 values plus the header
    True
    """
    if isinstance(model, nn.Module):
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        return float(len(safetensors_bytes(state)))
    owner = _owner(model)
    target = getattr(owner, "estimator", owner)
    try:
        return float(len(pickle.dumps(target)))
    except (pickle.PicklingError, TypeError, AttributeError):  # lambdas, open handles, ...
        return math.nan


def _owner(model: Model) -> Any:
    """The object behind a bound method (``estimator.predict_proba`` -> ``estimator``)."""
    if isinstance(model, ClassicalModel):
        return model
    return getattr(model, "__self__", model)


# ---------------------------------------------------------------------------------------------
# Timing


def _time_calls(
    call: Callable[[int], Any],
    warmup: int,
    most: int,
    least: int,
    seconds: float,
    synchronize: Callable[[], None],
) -> np.ndarray:
    """Seconds of each timed ``call(i)`` after ``warmup`` untimed ones ``(calls,)``."""
    for i in range(warmup):
        call(i)
    synchronize()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < most and (len(times) < least or time.perf_counter() < deadline):
        start = time.perf_counter()
        call(len(times))
        synchronize()
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def _batch(inputs: Any, batch_size: int) -> Any:
    """The first ``batch_size`` rows, repeated when there are fewer ``(batch_size, ...)``."""
    n = len(inputs)
    if n >= batch_size:
        return inputs[:batch_size]
    copies = [inputs] * -(-batch_size // n)
    if isinstance(inputs, torch.Tensor):
        return torch.cat(copies)[:batch_size]
    return np.concatenate(copies)[:batch_size]


def _timings(
    predict: Callable[[Any], Any],
    inputs: Any,
    batch: Any,
    repeats: int,
    batch_repeats: int,
    warmup: int,
    max_seconds: float,
    synchronize: Callable[[], None],
) -> dict[str, Any]:
    n = len(inputs)
    single = _time_calls(
        lambda i: predict(inputs[i % n : i % n + 1]),
        warmup,
        repeats,
        min(5, repeats),
        max_seconds / 2,
        synchronize,
    )
    many = _time_calls(
        lambda i: predict(batch),
        1,
        batch_repeats,
        min(2, batch_repeats),
        max_seconds / 2,
        synchronize,
    )
    p50, p95 = np.percentile(single, [50, 95]) * 1e3
    return {
        "latency_p50_ms": float(p50),
        "latency_p95_ms": float(p95),
        "throughput_per_s": float(len(batch) / np.median(many)),
        "latency_calls": len(single),
        "throughput_calls": len(many),
    }


def _profile_torch(
    model: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    batch_size: int,
    repeats: int,
    batch_repeats: int,
    warmup: int,
    max_seconds: float,
    device: str | torch.device | None,
) -> dict[str, Any]:
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    x = torch.as_tensor(inputs).to(device)  # (n, *input_shape)
    batch = _batch(x, batch_size)  # (batch_size, *input_shape)
    was_training = model.training
    model.to(device).eval()
    cuda = device.type == "cuda"

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    try:
        with torch.no_grad():
            measured = _timings(
                model, x, batch, repeats, batch_repeats, warmup, max_seconds, synchronize
            )
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                model(batch)
                peak = torch.cuda.max_memory_allocated(device) - before
                method = "cuda_max_memory_allocated"
            else:
                tracker = _LiveTensorBytes()
                with tracker:
                    model(batch)
                peak, method = tracker.peak, "torch_live_tensors"
        flops = forward_flops(model, x[:2])
    finally:
        model.train(was_training)
    return measured | {
        "peak_memory_mb": peak / MB,
        "memory_method": method,
        "flops_per_example": flops,
        "device": str(device),
    }


def _profile_callable(
    model: ClassicalModel | Callable[[np.ndarray], Any],
    inputs: torch.Tensor | np.ndarray,
    batch_size: int,
    repeats: int,
    batch_repeats: int,
    warmup: int,
    max_seconds: float,
) -> dict[str, Any]:
    predict = model.predict_proba if isinstance(model, ClassicalModel) else model
    x = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
    batch = _batch(x, batch_size)
    measured = _timings(
        predict, x, batch, repeats, batch_repeats, warmup, max_seconds, lambda: None
    )
    already = tracemalloc.is_tracing()
    if not already:
        tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        predict(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not already:
            tracemalloc.stop()
    return measured | {
        "peak_memory_mb": max(0, peak - start) / MB,
        "memory_method": "tracemalloc",
        "flops_per_example": math.nan,
        "device": "cpu",
    }


class _LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensors created inside the block that are alive at one time.

    Every operator's outputs pass through ``__torch_dispatch__``. An output whose storage is new
    (not one of the operator's inputs' storages, e.g. a view of a weight) adds its storage's
    bytes; each tensor on a tracked storage holds a reference, and when the last one is
    garbage-collected the bytes are released. Weights and inputs are never counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # data pointer -> [bytes, tensors on it]
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        flat_inputs = tree_flatten((args, kwargs))[0]
        seen = {t.untyped_storage().data_ptr() for t in flat_inputs if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key == 0:  # empty tensor: nothing allocated
                continue
            if key in self.live:
                self.live[key][1] += 1
            elif key in seen:  # a view of a weight or an input: not new memory
                continue
            else:
                self.live[key] = [storage.nbytes(), 1]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            weakref.finalize(tensor, self._release, key)
        return out


def member_cost(model: Model, inputs: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """The cost columns of one trained member's record, measured on the CPU with one thread.

    What the study runner hands to ``train_member`` (one thread: the same conditions for every
    member and every execution engine; the CPU: comparable between machines with and without a
    GPU).

    Examples
    --------
    >>> member_cost(nn.Linear(4, 2), torch.zeros(8, 4))["threads"]
    1
    """
    return cost_profile(model, inputs, threads=1, device="cpu").record()
