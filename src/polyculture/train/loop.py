"""The one training loop for every torch family.

Seeded and deterministic on CPU: model initialisation uses ``torch.manual_seed(seed)``; batch order,
augmentation and the random starts of PGD adversarial training draw from one ``torch.Generator``
seeded the same way. The loss is checked once per epoch (no per-step host sync); a non-finite loss
marks the member as failed with the reason.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from polyculture.data.augment import perturb
from polyculture.data.task import Modality, Split
from polyculture.errors import ConfigError
from polyculture.train.adversarial import fgsm, input_scale, pgd
from polyculture.train.spec import AdversarialSpec, TrainSpec
from polyculture.zoo.base import ZooModel

SCALE_ROWS = 2048
"""Training rows (evenly spaced) on which adversarial training measures the input scale."""

TRAIN_ACCURACY_ROWS = 2048
"""Training rows (evenly spaced) on which each evaluation measures the training accuracy."""


class DivergenceError(Exception):
    """Training produced a non-finite loss; the member is recorded as failed.

    ``history`` holds the epochs evaluated before the loss diverged.
    """

    def __init__(self, message: str, history: pd.DataFrame) -> None:
        super().__init__(message)
        self.history = history


@dataclass
class TrainOutcome:
    """What the loop returns: the history table and when it stopped."""

    history: pd.DataFrame
    steps: int
    best_epoch: int
    stopped_early: bool
    seconds: float


EpochCallback = Callable[[dict[str, float]], None]


def _optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)


def _schedule(
    optimizer: torch.optim.Optimizer, spec: TrainSpec, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if spec.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, spec.lr, total_steps=total_steps)
    if spec.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, split: Split, device: torch.device, batch_size: int = 2048
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split`` (eval mode, no gradients)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device)
        y = split.y[start : start + batch_size].to(device)
        logits = model(x)  # (b, classes)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum().item())
    return total_loss / len(split), correct / len(split)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last incomplete batch is dropped)."""
    return max(1, n_train // batch_size)


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    modality: Modality,
    spec: TrainSpec,
    seed: int,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
) -> TrainOutcome:
    """Train ``model`` in place on ``train``, selecting the best epoch on ``val``.

    Parameters
    ----------
    model
        A freshly initialised model (seed it before building it).
    train, val
        Training and validation splits.
    modality
        Decides which augmentations apply.
    spec
        Training settings. With ``spec.adversarial`` each (augmented) batch is attacked (FGSM or
        PGD, see :mod:`polyculture.train.adversarial`) with radii scaled by the input scale of the
        training split, measured once before training, and the loss mixes clean and adversarial
        cross-entropy by ``spec.adversarial.weight``.
    seed
        Seeds batch order, augmentation and PGD random starts.
    device
        Where to train; the model is moved there.
    on_epoch
        Called with each history row (for progress bars and TensorBoard).

    Returns
    -------
    TrainOutcome
        History (one row per evaluated epoch), steps taken, best epoch, timing.

    Raises
    ------
    DivergenceError
        When the training loss becomes NaN or infinite.
    ConfigError
        Adversarial training of a model that is not a :class:`~polyculture.zoo.base.ZooModel`.

    Examples
    --------
    >>> import polyculture.zoo as zoo
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(64, 1, 8, generator=g); y = (x.sum((1, 2)) > 0).long()
    >>> split = Split(x, y)
    >>> model = zoo.create_model(zoo.ModelSpec(family="mlp"), (1, 8), 2, "sequence")
    >>> out = fit(model, split, split, "sequence", TrainSpec(epochs=2, batch_size=16), 0,
    ...           torch.device("cpu"))
    >>> len(out.history)
    2
    """
    started = time.perf_counter()
    model.to(device)
    x_train, y_train = train.x.to(device), train.y.to(device)
    n = len(train)
    batch_size = min(spec.batch_size, n)
    per_epoch = steps_per_epoch(n, batch_size)
    total_steps = per_epoch * spec.epochs
    if spec.max_steps is not None:
        total_steps = min(total_steps, spec.max_steps)
    optimizer = _optimizer(model, spec)
    scheduler = _schedule(optimizer, spec, total_steps)
    generator = torch.Generator().manual_seed(seed)
    augment = not spec.augment.is_identity()
    adversarial_loss = None
    if spec.adversarial is not None:
        adversarial_loss = _adversarial_objective(model, x_train, spec.adversarial, generator)

    # Clean (unaugmented) accuracy on a fixed sample of training rows: with the validation
    # accuracy it shows when a model memorizes and when it generalizes (grokking).
    train_probe = train.subset(
        torch.linspace(0, n - 1, min(n, TRAIN_ACCURACY_ROWS)).round().long().unique()
    )
    rows: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    stale, step, stopped_early = 0, 0, False
    for epoch in range(1, spec.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        epoch_steps = min(per_epoch, total_steps - step)
        for batch in range(epoch_steps):
            rows_idx = order[batch * batch_size : (batch + 1) * batch_size]
            xb, yb = x_train[rows_idx], y_train[rows_idx]  # (b, *input_shape), (b,)
            if augment:
                xb = perturb(xb, modality, spec.augment, generator)
            if adversarial_loss is None:
                loss = F.cross_entropy(model(xb), yb)
            else:
                loss = adversarial_loss(xb, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if spec.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach()
        step += epoch_steps
        train_loss = loss_sum.item() / max(1, epoch_steps)
        if not math.isfinite(train_loss):
            raise DivergenceError(
                f"training loss became {train_loss} in epoch {epoch} (step <= {step}); "
                f"lower train.lr (now {spec.lr}) or set train.grad_clip",
                _history(rows),
            )
        last = step >= total_steps or epoch == spec.epochs
        if epoch % spec.eval_every and not last:
            continue
        val_loss, val_accuracy = evaluate_loss(model, val, device)
        _, train_accuracy = evaluate_loss(model, train_probe, device)
        row = {
            "epoch": float(epoch),
            "step": float(step),
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if val_loss < best_loss:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if spec.patience is not None and stale >= spec.patience:
            stopped_early = True
            break
        if last:
            break
    model.load_state_dict(best_state)
    return TrainOutcome(
        _history(rows), step, best_epoch, stopped_early, time.perf_counter() - started
    )


def _adversarial_objective(
    model: nn.Module, x_train: torch.Tensor, spec: AdversarialSpec, generator: torch.Generator
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss of one batch under adversarial training: ``(xb, yb) -> loss``.

    The absolute radius unit is measured once, on evenly spaced training rows, before training.
    The loss is ``(1 - w) * clean CE + w * adversarial CE``, without a clean pass when ``w`` is 1.
    """
    if not isinstance(model, ZooModel):
        raise ConfigError(
            f"adversarial training needs a zoo model, got {type(model).__name__}",
            hint="build the model with polyculture.zoo.create_model or drop train.adversarial",
        )
    rows = torch.linspace(0, len(x_train) - 1, min(len(x_train), SCALE_ROWS)).long()
    scale = input_scale(model, x_train[rows.to(x_train.device)])
    epsilon, step_size = spec.epsilon * scale, spec.resolved_step_size() * scale

    def loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if spec.method == "fgsm":
            embedded = fgsm(model, xb, yb, epsilon)
        else:
            embedded = pgd(model, xb, yb, epsilon, spec.steps, step_size, generator)
        value = spec.weight * F.cross_entropy(model.forward_embedded(embedded, xb), yb)
        if spec.weight < 1.0:
            value = value + (1.0 - spec.weight) * F.cross_entropy(model(xb), yb)
        return value

    return loss


HISTORY_COLUMNS = [
    "epoch",
    "step",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
]


def _history(rows: list[dict[str, float]]) -> pd.DataFrame:
    history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    return history.astype({"epoch": "int64", "step": "int64"})
