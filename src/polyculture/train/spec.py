"""TrainSpec: how one torch member is trained (a frozen value, part of the member id)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from polyculture.data.augment import Perturbation


class AdversarialSpec(BaseModel):
    """Adversarial training: each training batch is replaced (in part) by worst-case inputs.

    Inputs are perturbed in the space of :meth:`~polyculture.zoo.base.ZooModel.embed_inputs`:
    the standardized inputs themselves for sequences, images and tabular data, the token
    embeddings for text. Radii are *relative*: in units of the standard deviation of the embedded
    training inputs (measured once, before training), so one ``epsilon`` means a comparable
    perturbation for MNIST-1D, images and text embeddings. ``epsilon=0.1`` lets every input value
    move by at most a tenth of the inputs' typical spread (an L-infinity ball).

    Attributes
    ----------
    method
        ``pgd`` (projected gradient descent from a random start, Madry et al. 2018) or ``fgsm``
        (one signed-gradient step, Goodfellow et al. 2015).
    epsilon
        Radius of the L-infinity ball, relative to the embedded inputs' standard deviation.
    steps
        PGD iterations (ignored by ``fgsm``).
    step_size
        PGD step, relative like ``epsilon``; ``None`` takes ``2.5 * epsilon / steps`` (Madry et
        al.), enough to cross the ball from a random start.
    weight
        Share of the loss taken by adversarial examples, in (0, 1]: 1 trains on adversarial
        examples only (Madry-style), 0.5 averages the clean and the adversarial loss.

    Examples
    --------
    >>> AdversarialSpec(epsilon=0.35).resolved_step_size()  # 2.5 * 0.35 / 7
    0.125
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["fgsm", "pgd"] = "pgd"
    epsilon: float = Field(gt=0.0)
    steps: int = Field(7, ge=1)
    step_size: float | None = Field(None, gt=0.0)
    weight: float = Field(1.0, gt=0.0, le=1.0)

    def resolved_step_size(self) -> float:
        """The relative PGD step: ``step_size``, or ``2.5 * epsilon / steps`` when unset."""
        if self.step_size is not None:
            return self.step_size
        return 2.5 * self.epsilon / self.steps


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
    adversarial
        Adversarial training (FGSM or PGD examples built from each augmented batch); ``None``
        trains on clean inputs only.

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
    adversarial: AdversarialSpec | None = None

    @model_validator(mode="after")
    def _steps_fit(self) -> TrainSpec:
        if self.patience is not None and self.patience * self.eval_every > self.epochs:
            raise ValueError("patience x eval_every exceeds epochs, so early stopping never acts")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_adversarial(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Member ids hash this dump: leaving the new key out while it is off keeps the ids of
        # members planned before adversarial training existed.
        dumped: dict[str, Any] = handler(self)
        if dumped.get("adversarial", 0) is None:
            del dumped["adversarial"]
        return dumped
