"""Train one member of a zoo and collect everything later stages need.

A member is (task, model spec, train spec, seed). :func:`train_member` builds the model, trains it
(the torch loop or a scikit-learn fit), predicts class probabilities on every evaluation split and
extracts the named representations of the probe set. A member that diverges comes back with
``status="failed"`` and the reason instead of raising, so a study goes on.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from polyculture.data.builders import nested_fraction, stratified_shards
from polyculture.data.task import Task
from polyculture.errors import ConfigError
from polyculture.train.adversarial import input_scale, robust_accuracy
from polyculture.train.backbone import AdaptedModel
from polyculture.train.loop import DivergenceError, EpochCallback, fit
from polyculture.train.spec import TrainSpec
from polyculture.zoo.base import (
    FAMILIES,
    ClassicalModel,
    ModelSpec,
    ZooModel,
    count_parameters,
    create_model,
    forward_flops,
)


@dataclass
class MemberResult:
    """Everything one trained member produced (kept in memory until the run store writes it).

    Attributes
    ----------
    status
        ``ok`` or ``failed``.
    reason
        Why it failed (empty when ok).
    probabilities
        Class probabilities ``(n, classes)`` float32 per evaluation split name.
    representations
        Named probe-set representations ``(probe, d)`` float32 (empty when failed).
    weights
        The trained torch state dict, or ``None`` for classical or failed members.
    history
        One row per evaluated epoch (empty for classical members).
    """

    status: str
    reason: str = ""
    n_parameters: int = 0
    train_seconds: float = 0.0
    steps: int = 0
    best_epoch: int = 0
    stopped_early: bool = False
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    representations: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] | None = None
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    error_detail: str = ""
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    robust_accuracy: float = float("nan")
    robust_clean_accuracy: float = float("nan")
    robust_note: str = ""
    train_rows: int = 0
    flops_per_example: float = float("nan")
    """Forward-pass FLOPs per example (torch members; NaN for scikit-learn ones)."""
    cost: dict[str, Any] = field(default_factory=dict)
    """Serving-cost columns (latency, throughput, peak memory, size, threads) from the ``cost``
    callback of :func:`train_member`; empty when not measured or failed."""


COST_EXAMPLES = 256
"""Test inputs handed to the ``cost`` callback (its large batch is 256)."""

CostCallback = Callable[[ZooModel | ClassicalModel, torch.Tensor], dict[str, Any]]
"""``cost(model, inputs) -> record columns``, see :func:`train_member`."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def predict_probabilities(
    model: ZooModel, x: torch.Tensor, device: torch.device, batch_size: int = 2048
) -> np.ndarray:
    """Softmax probabilities ``(n, classes)`` of a torch model, batched, in eval mode."""
    model.eval()
    chunks = []
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size].to(device))  # (b, classes)
        chunks.append(torch.softmax(logits.double(), dim=1).float().cpu())
    return torch.cat(chunks).numpy()


@torch.no_grad()
def extract_representations(
    model: ZooModel, x: torch.Tensor, device: torch.device, batch_size: int = 1024
) -> dict[str, np.ndarray]:
    """Named representations ``(n, d)`` of a torch model on ``x``, batched, in eval mode."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(x), batch_size):
        for name, value in model.representations(x[start : start + batch_size].to(device)).items():
            parts.setdefault(name, []).append(value.float().cpu())
    return {name: torch.cat(chunks).numpy() for name, chunks in parts.items()}


def _flat(x: torch.Tensor) -> np.ndarray:
    return x.reshape(len(x), -1).numpy()


@dataclass(frozen=True)
class RobustnessCheck:
    """PGD robust accuracy measured for a member on the first ``size`` test instances.

    ``epsilon`` is relative to the standard deviation of the (embedded) training inputs, as in
    :func:`polyculture.train.adversarial.robust_accuracy`.
    """

    epsilon: float
    steps: int = 10
    size: int = 500


@dataclass(frozen=True)
class Adaptation:
    """How a member adapts a pretrained backbone by fine-tuning (see :mod:`.backbone`).

    ``backbone`` is the loaded pretrained network (each member fine-tunes its own copy), ``layer``
    its feature layer, ``finetune_layers`` how many of its last blocks train (``None``: all).
    """

    backbone: ZooModel
    layer: str
    finetune_layers: int | None = None


def shard_task(task: Task, shard: tuple[int, int]) -> Task:
    """The task with its training split cut to shard ``index`` of ``count`` (stratified).

    Examples
    --------
    >>> from polyculture.data import DataSpec, build_task
    >>> task = build_task(DataSpec(name="digits"))
    >>> len(shard_task(task, (0, 4)).train) * 4 - len(task.train) in range(0, 4)
    True
    """
    index, count = shard
    rows = stratified_shards(task.train.y.numpy(), count)[index]
    return dataclasses.replace(task, train=task.train.subset(torch.from_numpy(rows)))


@functools.cache
def _warm_up_torch() -> None:
    """Pay torch's one-off lazy imports (``torch._dynamo``, on the first optimizer built in a
    process) before a member's clock starts, so ``train_seconds`` compares across members."""
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


def fraction_task(task: Task, fraction: float) -> Task:
    """The task with its training split cut to a seeded, stratified, nested ``fraction``.

    Whole problems are kept when answers span several rows. The subset depends on the data
    only (not on the member's seed), so every member of a data sweep sees nested subsets.

    Examples
    --------
    >>> from polyculture.data import DataSpec, build_task
    >>> task = build_task(DataSpec(name="digits"))
    >>> len(fraction_task(task, 0.5).train) == -(-len(task.train) // 2)
    True
    """
    if fraction == 1.0:
        return task
    problems = None
    if task.answer_length > 1:
        problems = task.train.instance_ids().numpy() // task.answer_length
    rows = nested_fraction(task.train.y.numpy(), fraction, problems=problems)
    return dataclasses.replace(task, train=task.train.subset(torch.from_numpy(rows)))


def train_member(
    task: Task,
    model_spec: ModelSpec,
    train_spec: TrainSpec,
    seed: int,
    *,
    probe_size: int = 1000,
    device: str = "auto",
    on_epoch: EpochCallback | None = None,
    shard: tuple[int, int] | None = None,
    data_fraction: float = 1.0,
    input_representation: str | None = None,
    adaptation: Adaptation | None = None,
    robustness: RobustnessCheck | None = None,
    cost: CostCallback | None = None,
) -> MemberResult:
    """Train and evaluate one member.

    Parameters
    ----------
    task
        The task (all splits).
    model_spec, train_spec, seed
        What to train and how; together with the task they identify the member.
    probe_size
        Representations are extracted for the first ``probe_size`` test instances.
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
    on_epoch
        Called with each history row of a torch member.
    shard
        ``(index, count)``: train on one disjoint stratified shard of the training split.
    data_fraction
        Train on this share of the training split (see :func:`fraction_task`).
    input_representation
        When the inputs are a frozen backbone's features (a probe), the name under which they
        lead the member's representations (e.g. ``backbone.hidden``).
    adaptation
        Fine-tune this backbone with ``model_spec`` as the head on its features.
    robustness
        Measure PGD robust accuracy of torch members that read the task's own inputs (not
        frozen-feature probes, whose attack would skip the backbone, and not fine-tuned text
        members); others get ``robust_note`` saying why not.
    cost
        Called after training as ``cost(model, inputs)`` with the trained model (on the CPU) and
        the first :data:`COST_EXAMPLES` test inputs; its dict becomes ``MemberResult.cost`` (the
        runner passes :func:`polyculture.measure.cost.member_cost`). Not counted in
        ``train_seconds``.

    Returns
    -------
    MemberResult
        ``status="failed"`` with a reason when training diverged or raised.

    Examples
    --------
    >>> from polyculture.data import DataSpec, build_task
    >>> task = build_task(DataSpec(name="digits"))
    >>> result = train_member(task, ModelSpec(family="logreg"), TrainSpec(), seed=0)
    >>> result.status, result.probabilities["test"].shape
    ('ok', (450, 10))
    """
    _warm_up_torch()
    started = time.perf_counter()
    if adaptation is None:
        prepare = FAMILIES.get(model_spec.family).prepare
        task = task if prepare is None else prepare(task)
    if shard is not None:
        task = shard_task(task, shard)
    task = fraction_task(task, data_fraction)
    torch.manual_seed(seed)
    model = _member_model(task, model_spec, adaptation)
    probe = task.test.x[:probe_size]
    try:
        if isinstance(model, ClassicalModel):
            result = _train_classical(model, task, seed, probe)
        else:
            result = _train_torch(model, task, train_spec, seed, probe, device, on_epoch)
        if input_representation is not None:
            result.representations = {input_representation: _flat(probe)} | result.representations
        if robustness is not None and result.status == "ok":
            _check_robustness(result, model, task, robustness, seed, device, input_representation)
    except DivergenceError as err:
        result = MemberResult(status="failed", reason=str(err), history=err.history)
    except (RuntimeError, ValueError, FloatingPointError) as err:
        # Numerical or resource failures of one member must not stop the study.
        result = MemberResult(
            status="failed",
            reason=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
            error_detail=traceback.format_exc(),
        )
    if result.status == "ok":
        for split, probabilities in result.probabilities.items():
            if not np.isfinite(probabilities).all():
                result = MemberResult(status="failed", reason=f"non-finite predictions on {split}")
                break
    if not result.n_parameters and isinstance(model, torch.nn.Module):
        result.n_parameters = count_parameters(model)
    result.train_rows = len(task.train)
    if result.status == "ok" and isinstance(model, torch.nn.Module):
        result.flops_per_example = forward_flops(model.cpu(), task.train.x[:2])
    result.train_seconds = time.perf_counter() - started
    if cost is not None and result.status == "ok":
        result.cost = cost(model, task.test.x[:COST_EXAMPLES])
    return result


def _check_robustness(
    result: MemberResult,
    model: ZooModel | ClassicalModel,
    task: Task,
    check: RobustnessCheck,
    seed: int,
    device_name: str,
    input_representation: str | None,
) -> None:
    """Fill ``result.robust_*``: PGD accuracy, or the reason the member is not attacked."""
    if isinstance(model, ClassicalModel):
        result.robust_note = "not differentiable (scikit-learn)"
    elif input_representation is not None:
        result.robust_note = "frozen-feature probe: an attack on its inputs skips the backbone"
    elif isinstance(model, AdaptedModel) and task.modality == "text":
        result.robust_note = "fine-tuned text backbone: no embedding-space attack path"
    else:
        device = resolve_device(device_name)
        scale = input_scale(model.to(device), task.train.x[:2048].to(device))
        rows = torch.arange(min(check.size, len(task.test)))
        clean, robust = robust_accuracy(
            model,
            task.test.subset(rows),
            check.epsilon,
            check.steps,
            device=device,
            seed=seed,
            scale=scale,
        )
        result.robust_clean_accuracy, result.robust_accuracy = clean, robust


def _member_model(
    task: Task, model_spec: ModelSpec, adaptation: Adaptation | None
) -> ZooModel | ClassicalModel:
    vocab_size = len(task.vocabulary)
    if adaptation is None:
        return create_model(
            model_spec, task.input_shape, task.num_classes, task.modality, vocab_size=vocab_size
        )
    backbone = copy.deepcopy(adaptation.backbone)
    with torch.no_grad():
        backbone.eval()
        width = backbone.representations(task.train.x[:2])[adaptation.layer].shape[1]
    head = create_model(model_spec, (width,), task.num_classes, "tabular")
    if not isinstance(head, ZooModel):
        raise ConfigError(
            f"fine-tuning needs a torch head, '{model_spec.family}' is a scikit-learn family",
            hint="use adapt = 'probe' for it",
        )
    return AdaptedModel(backbone, adaptation.layer, head, adaptation.finetune_layers)


ATTENTION_PROBES = 8
"""Probe inputs whose attention maps are stored (the maps grow with tokens squared)."""


@torch.no_grad()
def attention_of(model: ZooModel, x: torch.Tensor, device: torch.device) -> dict[str, np.ndarray]:
    """Attention of a trained model on ``x``: transformer maps, attention-pooling weights.

    ``maps``: ``(n, depth, heads, tokens, tokens)`` for models with ``attention_maps``;
    ``pooling``: ``(n, positions)`` for models that pool with attention. Empty otherwise.
    """
    found: dict[str, np.ndarray] = {}
    x = x.to(device)
    maps = getattr(model, "attention_maps", None)
    if callable(maps):
        found["maps"] = maps(x).float().cpu().numpy()
    weights = getattr(model, "attention_weights", None)
    if callable(weights):
        with contextlib.suppress(ConfigError):  # raised when the model pools another way
            found["pooling"] = weights(x).float().cpu().numpy()
    return found


def _train_torch(
    model: ZooModel,
    task: Task,
    spec: TrainSpec,
    seed: int,
    probe: torch.Tensor,
    device_name: str,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> MemberResult:
    device = resolve_device(device_name)
    outcome = fit(model, task.train, task.val, task.modality, spec, seed, device, on_epoch)
    probabilities = {
        name: predict_probabilities(model, split.x, device) for name, split in task.eval_splits()
    }
    return MemberResult(
        status="ok",
        attention=attention_of(model, probe[:ATTENTION_PROBES], device),
        n_parameters=count_parameters(model),
        steps=outcome.steps,
        best_epoch=outcome.best_epoch,
        stopped_early=outcome.stopped_early,
        probabilities=probabilities,
        representations=extract_representations(model, probe, device),
        weights={k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        history=outcome.history,
    )


def _train_classical(
    model: ClassicalModel, task: Task, seed: int, probe: torch.Tensor
) -> MemberResult:
    # One BLAS/OpenMP thread, as torch members use one thread: a solver's sums then do not
    # depend on how many threads the process (here, a worker, a Dask worker) happens to have.
    with threadpool_limits(limits=1):
        return _fit_classical(model, task, seed, probe)


def _fit_classical(
    model: ClassicalModel, task: Task, seed: int, probe: torch.Tensor
) -> MemberResult:
    model.fit(_flat(task.train.x), task.train.y.numpy(), seed)
    probabilities = {
        name: model.predict_proba(_flat(split.x)).astype(np.float32)
        for name, split in task.eval_splits()
    }
    representations = {
        name: np.asarray(value, dtype=np.float32)
        for name, value in model.representations(_flat(probe)).items()
    }
    return MemberResult(
        status="ok",
        n_parameters=model.n_parameters,
        probabilities=probabilities,
        representations=representations,
    )
