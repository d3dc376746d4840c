"""TrainSpec: how one torch member is trained (a frozen value, part of the member id)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from polyculture.data.augment import Perturbation


class TrainSpec(BaseModel):
    """Training settings of the one training loop (classical families ignore most of them).

    Attributes
    ----------
    optimizer
        ``adamw``, ``adam`` or ``sgd`` (with momentum 0.9).
    lr
        Peak learning rate.
    weight_decay
        Decoupled (AdamW) or L2 (Adam, SGD) weight decay.
    batch_size
        Examples per step; the last incomplete batch of an epoch is dropped.
    epochs
        Passes over the training split; ``max_steps`` stops earlier when set.
    max_steps
        Hard cap on optimizer steps.
    schedule
        ``constant``, ``cosine`` (decay to 0) or ``onecycle`` (warm-up then cosine decay).
    patience
        Stop after this many evaluations without a lower validation loss, then restore the best
        weights; ``None`` trains for all epochs (the best weights are still restored).
    eval_every
        Evaluate on the validation split every this many epochs.
    grad_clip
        Clip the gradient norm to this value; ``None`` disables clipping.
    augment
        Perturbations applied to each training batch (noise, translate, rotate).

    Examples
    --------
    >>> TrainSpec(lr=3e-3, epochs=5).batch_size
    128
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(128, ge=1)
    epochs: int = Field(20, ge=1)
    max_steps: int | None = Field(None, ge=1)
    schedule: Literal["constant", "cosine", "onecycle"] = "cosine"
    patience: int | None = Field(None, ge=1)
    eval_every: int = Field(1, ge=1)
    grad_clip: float | None = Field(None, gt=0.0)
    augment: Perturbation = Perturbation()

    @model_validator(mode="after")
    def _steps_fit(self) -> TrainSpec:
        if self.patience is not None and self.patience * self.eval_every > self.epochs:
            raise ValueError("patience x eval_every exceeds epochs, so early stopping never acts")
        return self
