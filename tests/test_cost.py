"""Cost profiles: planted latencies, exact activation memory, FLOPs, parameters, stored sizes."""

from __future__ import annotations

import math
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression
from torch import nn

import polyculture.zoo  # noqa: F401  (registers the families)
from polyculture.errors import MeasureInputError
from polyculture.measure.cost import (
    MB,
    VARYING_COLUMNS,
    CostProfile,
    cost_profile,
    member_cost,
    profile_parameters,
    stored_size,
)
from polyculture.zoo.base import ModelSpec, count_parameters, create_model, forward_flops

QUICK = {"max_seconds": 0.05, "repeats": 20, "batch_repeats": 3, "warmup": 1}


def wide_net(inplace: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(40, 4096), nn.ReLU(inplace=inplace), nn.Linear(4096, 10))


def test_torch_profile_counts_match_independent_references(tmp_path: Path) -> None:
    model = wide_net()
    x = torch.randn(300, 40)
    profile = cost_profile(model, x, **QUICK)
    assert profile.flops_per_example == forward_flops(model, x[:2]) == 2 * (40 * 4096 + 4096 * 10)
    assert profile.n_parameters == count_parameters(model) == 40 * 4096 + 4096 + 4096 * 10 + 10
    path = tmp_path / "weights.safetensors"  # the file the run store writes
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert profile.size_bytes == path.stat().st_size
    assert profile.device == "cpu" and profile.batch_size == 256
    assert profile.memory_method == "torch_live_tensors"


@pytest.mark.parametrize(
    ("inplace", "expected"),
    [
        # first Linear's output and ReLU's output are alive together: 2 x (256, 4096) float32
        (False, 2 * 256 * 4096 * 4),
        # an in-place ReLU reuses the storage; then the (256, 10) output joins the hidden layer
        (True, 256 * 4096 * 4 + 256 * 10 * 4),
    ],
)
def test_peak_memory_is_the_planted_activation_size(inplace: bool, expected: int) -> None:
    profile = cost_profile(wide_net(inplace), torch.randn(256, 40), **QUICK)
    assert profile.peak_memory_mb * MB == pytest.approx(expected)


def test_peak_memory_tiles_few_inputs_up_to_the_batch() -> None:
    profile = cost_profile(nn.Linear(8, 4), torch.zeros(3, 8), batch_size=100, **QUICK)
    assert profile.peak_memory_mb * MB == pytest.approx(100 * 4 * 4)  # the (100, 4) output


def test_latency_and_throughput_of_a_planted_slow_callable() -> None:
    def predict(x: np.ndarray) -> np.ndarray:
        time.sleep(0.002 if len(x) == 1 else 0.01)
        return np.zeros((len(x), 2))

    profile = cost_profile(predict, np.zeros((10, 3)), repeats=7, batch_repeats=3, warmup=1)
    assert profile.latency_calls == 7 and profile.throughput_calls == 3
    # sleep() sleeps at least as long as asked: lower bounds are exact, upper ones generous
    assert 2.0 <= profile.latency_p50_ms <= profile.latency_p95_ms < 200
    assert 256 / 1.0 < profile.throughput_per_s <= 256 / 0.01
    assert math.isnan(profile.flops_per_example) and math.isnan(profile.n_parameters)
    assert profile.memory_method == "tracemalloc"


def test_time_budget_stops_timing_after_the_minimum_calls() -> None:
    def predict(x: np.ndarray) -> np.ndarray:
        time.sleep(0.02)
        return x

    started = time.perf_counter()
    profile = cost_profile(predict, np.zeros((4, 2)), max_seconds=0.01, warmup=0)
    assert profile.latency_calls == 5 and profile.throughput_calls == 2  # the floors
    assert time.perf_counter() - started < 2.0


def test_scikit_learn_callable_and_classical_model() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 6)), rng.integers(0, 3, 200)
    estimator = LogisticRegression().fit(x, y)
    profile = cost_profile(estimator.predict_proba, x, **QUICK)
    assert profile.size_bytes == len(pickle.dumps(estimator))
    # predict_proba returns a (256, 3) float64 array: the peak holds at least that
    assert profile.peak_memory_mb * MB >= 256 * 3 * 8
    assert math.isnan(profile.n_parameters)

    classical = create_model(ModelSpec(family="logreg"), (6,), 3, "tabular")
    classical.fit(x, y, seed=0)
    profile = cost_profile(classical, torch.from_numpy(x).float(), **QUICK)
    assert profile.n_parameters == classical.n_parameters == 6 * 3 + 3
    assert profile.size_bytes == len(pickle.dumps(classical.estimator))  # type: ignore[attr-defined]


def test_every_torch_family_of_the_default_study_is_profiled() -> None:
    x = torch.randn(8, 1, 40)
    for family, params in [
        ("cnn", {"width": 8, "depth": 2}),
        ("gru", {"width": 6}),
        ("transformer", {"width": 16, "depth": 1, "heads": 2, "patch": 4}),
        ("mlp", {"width": 16}),
    ]:
        model = create_model(ModelSpec(family=family, params=params), (1, 40), 10, "sequence")
        model.train()
        profile = cost_profile(model, x, batch_size=16, **QUICK)
        assert model.training, "the training mode is restored"
        assert profile.flops_per_example > 0 and profile.peak_memory_mb > 0, family
        assert profile.latency_p50_ms > 0 and profile.throughput_per_s > 0, family


def test_threads_are_stated_and_restored() -> None:
    before = torch.get_num_threads()
    profile = cost_profile(nn.Linear(2, 2), torch.zeros(4, 2), threads=1, **QUICK)
    assert profile.threads == 1 and torch.get_num_threads() == before


def test_member_cost_record_columns() -> None:
    record = member_cost(nn.Linear(3, 2), torch.zeros(5, 3))
    assert set(VARYING_COLUMNS) <= set(record)
    assert record["threads"] == 1 and record["cost_device"] == "cpu"
    assert record["size_bytes"] == stored_size(nn.Linear(3, 2))
    assert isinstance(cost_profile(nn.Linear(3, 2), torch.zeros(5, 3), **QUICK), CostProfile)


def test_unknown_owner_has_no_parameters_or_size() -> None:
    assert math.isnan(profile_parameters(lambda x: x)) and math.isnan(stored_size(lambda x: x))


@pytest.mark.parametrize(
    ("inputs", "options", "needle"),
    [
        (torch.zeros(0, 3), {}, "at least one example"),
        (torch.zeros(4, 3), {"batch_size": 0}, "must be positive"),
        (torch.zeros(4, 3), {"max_seconds": 0}, "must be positive"),
    ],
)
def test_bad_arguments_are_clear_errors(inputs: torch.Tensor, options: dict, needle: str) -> None:
    with pytest.raises(MeasureInputError, match=needle):
        cost_profile(nn.Linear(3, 2), inputs, **options)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_memory_uses_the_allocator() -> None:
    profile = cost_profile(wide_net().cuda(), torch.randn(256, 40), **QUICK)
    assert profile.memory_method == "cuda_max_memory_allocated"
    assert profile.device.startswith("cuda")
    assert profile.peak_memory_mb * MB >= 2 * 256 * 4096 * 4  # both activations, at least
