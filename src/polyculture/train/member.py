"""Train one member of a zoo and collect everything later stages need.

A member is (task, model spec, train spec, seed). :func:`train_member` builds the model, trains it
(the torch loop or a scikit-learn fit), predicts class probabilities on every evaluation split and
extracts the named representations of the probe set. A member that diverges comes back with
``status="failed"`` and the reason instead of raising, so a study goes on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from polyculture.data.task import Task
from polyculture.train.loop import DivergenceError, EpochCallback, fit
from polyculture.train.spec import TrainSpec
from polyculture.zoo.base import (
    ClassicalModel,
    ModelSpec,
    ZooModel,
    count_parameters,
    create_model,
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


def train_member(
    task: Task,
    model_spec: ModelSpec,
    train_spec: TrainSpec,
    seed: int,
    *,
    probe_size: int = 1000,
    device: str = "auto",
    on_epoch: EpochCallback | None = None,
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
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = create_model(model_spec, task.input_shape, task.num_classes, task.modality)
    probe = task.test.x[:probe_size]
    try:
        if isinstance(model, ClassicalModel):
            result = _train_classical(model, task, seed, probe)
        else:
            result = _train_torch(model, task, train_spec, seed, probe, device, on_epoch)
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
    result.train_seconds = time.perf_counter() - started
    return result


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
