"""Adversarial attacks (FGSM, PGD) in a model's input space, and robust accuracy.

Attacks perturb the output of :meth:`~polyculture.zoo.base.ZooModel.embed_inputs` and score it with
:meth:`~polyculture.zoo.base.ZooModel.forward_embedded`: the inputs themselves for sequences,
images and tabular data, the token embeddings for text. Every family is attacked the same way.

Two conventions hold throughout:

* Radii are L-infinity. The attack functions take *absolute* radii; :func:`robust_accuracy` and
  :class:`~polyculture.train.spec.AdversarialSpec` take *relative* ones, multiplied by
  :func:`input_scale` (the standard deviation of the embedded training inputs), so that one number
  means a comparable perturbation for every modality.
* No clamping to a data range: inputs are standardized features (or embeddings), not pixels in
  [0, 1], so the only constraint is the ball around the clean embedding.

Attacks take gradients with respect to the perturbation only (:func:`torch.autograd.grad`): the
parameters' ``.grad`` is never touched, and the model's train/eval mode is the caller's choice.
For text, padding positions (token id ``0``) are never perturbed; the models mask them anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from polyculture.data.task import PAD_ID, Split
from polyculture.zoo.base import ZooModel


def _device(model: ZooModel) -> torch.device:
    parameter = next(model.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def _token_mask(x: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor | None:
    """``(n, L, 1)`` float mask of the real (non-padding) tokens of text inputs, else ``None``.

    Text is recognised by its integer token ids ``(n, L)`` embedded as ``(n, L, dim)``.
    """
    if x.dtype.is_floating_point or embedded.shape[: x.dim()] != x.shape:
        return None
    return (x != PAD_ID).unsqueeze(-1).to(embedded.dtype)  # (n, L, 1)


@torch.no_grad()
def input_scale(model: ZooModel, x: torch.Tensor, batch_size: int = 1024) -> float:
    """Standard deviation of ``model.embed_inputs(x)`` over all values (relative radii unit).

    Computed in float64 over batches; for text, over the real tokens only (padding would pull
    it towards the padding embedding). Call it on training inputs.

    Parameters
    ----------
    model
        The model whose input space is attacked.
    x
        Inputs ``(n, *input_shape)`` (token ids for text).
    batch_size
        Rows embedded at a time.

    Returns
    -------
    float
        The standard deviation; ``1.0`` when it is zero (constant inputs), so radii stay usable.

    Examples
    --------
    >>> import polyculture.zoo as zoo
    >>> model = zoo.create_model(zoo.ModelSpec(family="mlp"), (1, 8), 2, "sequence")
    >>> x = 3.0 * torch.randn(4000, 1, 8, generator=torch.Generator().manual_seed(0))
    >>> round(input_scale(model, x), 1)
    3.0
    """
    device = _device(model)
    count, total, squares = 0.0, 0.0, 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        embedded = model.embed_inputs(xb).double()  # (b, ...)
        mask = _token_mask(xb, embedded)
        weight = torch.ones_like(embedded) if mask is None else mask.expand_as(embedded)
        count += float(weight.sum())
        total += float((embedded * weight).sum())
        squares += float((embedded.square() * weight).sum())
    if count < 2:
        return 1.0
    mean = total / count
    variance = max(0.0, (squares - count * mean * mean) / (count - 1))
    return variance**0.5 if variance > 0 else 1.0


def _loss_gradient(
    model: ZooModel, embedded: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Gradient of the summed cross-entropy with respect to ``embedded`` only."""
    # Attacks also work when called under torch.no_grad() (e.g. inside an evaluation).
    with torch.enable_grad():
        embedded = embedded.detach().requires_grad_(True)
        # Summed, not averaged: the sign is the same, and small batches do not underflow.
        loss = F.cross_entropy(model.forward_embedded(embedded, x), y, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, embedded)
    return gradient


def fgsm(model: ZooModel, x: torch.Tensor, y: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Fast gradient sign method: adversarial embedded inputs ``embed + epsilon * sign(grad)``.

    Parameters
    ----------
    model
        The attacked model, in whichever train/eval mode the caller set.
    x, y
        Inputs and class indices ``(n,)``, on the model's device.
    epsilon
        Absolute L-infinity radius (multiply a relative one by :func:`input_scale`).

    Returns
    -------
    torch.Tensor
        Adversarial embedded inputs, shaped like ``model.embed_inputs(x)``, detached.

    Examples
    --------
    >>> import polyculture.zoo as zoo
    >>> model = zoo.create_model(zoo.ModelSpec(family="mlp"), (1, 8), 2, "sequence")
    >>> x, y = torch.zeros(3, 1, 8), torch.tensor([0, 1, 0])
    >>> float((fgsm(model, x, y, 0.5) - x).abs().max())
    0.5
    """
    with torch.no_grad():
        clean = model.embed_inputs(x)  # (n, ...)
    step = epsilon * _loss_gradient(model, clean, x, y).sign()
    mask = _token_mask(x, clean)
    if mask is not None:
        step = step * mask
    return (clean + step).detach()


def pgd(
    model: ZooModel,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    steps: int,
    step_size: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """L-infinity projected gradient descent (Madry et al., 2018) from a random start.

    The start is uniform in the ball (drawn on the CPU from ``generator``, so a seed gives the
    same examples on every device); each step moves by ``step_size * sign(grad)`` and projects
    back onto the ball. The last iterate is returned.

    Parameters
    ----------
    model
        The attacked model, in whichever train/eval mode the caller set.
    x, y
        Inputs and class indices ``(n,)``, on the model's device.
    epsilon
        Absolute L-infinity radius.
    steps
        Number of gradient steps.
    step_size
        Absolute size of one step.
    generator
        Source of the random start.

    Returns
    -------
    torch.Tensor
        Adversarial embedded inputs, shaped like ``model.embed_inputs(x)``, detached.

    Examples
    --------
    >>> import polyculture.zoo as zoo
    >>> model = zoo.create_model(zoo.ModelSpec(family="mlp"), (1, 8), 2, "sequence")
    >>> x, y = torch.zeros(3, 1, 8), torch.tensor([0, 1, 0])
    >>> adv = pgd(model, x, y, 0.5, 5, 0.2, torch.Generator().manual_seed(0))
    >>> bool((adv - x).abs().max() <= 0.5)
    True
    """
    with torch.no_grad():
        clean = model.embed_inputs(x)  # (n, ...)
    mask = _token_mask(x, clean)
    start = torch.rand(clean.shape, generator=generator, dtype=torch.float64)
    delta = ((2 * start - 1) * epsilon).to(device=clean.device, dtype=clean.dtype)  # (n, ...)
    for _ in range(steps):
        if mask is not None:
            delta = delta * mask
        gradient = _loss_gradient(model, clean + delta, x, y)
        delta = (delta + step_size * gradient.sign()).clamp(-epsilon, epsilon)
    if mask is not None:
        delta = delta * mask
    return (clean + delta).detach()


def robust_accuracy(
    model: ZooModel,
    split: Split,
    epsilon: float,
    steps: int = 10,
    step_size: float | None = None,
    *,
    device: torch.device,
    seed: int = 0,
    batch_size: int = 512,
    scale: float | None = None,
) -> tuple[float, float]:
    """Clean accuracy and accuracy under an L-infinity PGD attack, in eval mode.

    An instance counts as robust when it is classified correctly both clean and after the attack
    (the clean input lies in the ball too), so robust accuracy never exceeds clean accuracy.

    Parameters
    ----------
    model
        A trained model; it is moved to ``device`` and left in its original train/eval mode.
    split
        Evaluation split.
    epsilon
        Relative L-infinity radius, in units of ``scale``.
    steps
        PGD iterations.
    step_size
        Relative step; ``None`` takes ``2.5 * epsilon / steps``.
    device
        Where to run.
    seed
        Seeds the random starts: the same seed gives the same numbers.
    batch_size
        Instances attacked at a time.
    scale
        Absolute size of one relative unit; ``None`` measures :func:`input_scale` on ``split``.
        Pass the training inputs' scale to compare with adversarial training.

    Returns
    -------
    tuple[float, float]
        ``(clean_accuracy, robust_accuracy)``.

    Examples
    --------
    >>> import polyculture.zoo as zoo
    >>> model = zoo.create_model(zoo.ModelSpec(family="mlp"), (1, 8), 2, "sequence")
    >>> x = torch.randn(32, 1, 8, generator=torch.Generator().manual_seed(0))
    >>> clean, robust = robust_accuracy(model, Split(x, (x.sum((1, 2)) > 0).long()), 0.1,
    ...                                 device=torch.device("cpu"))
    >>> robust <= clean
    True
    """
    was_training = model.training
    model.to(device).eval()
    if scale is None:
        scale = input_scale(model, split.x)
    relative_step = 2.5 * epsilon / steps if step_size is None else step_size
    generator = torch.Generator().manual_seed(seed)
    clean_correct, robust_correct = 0, 0
    try:
        for start in range(0, len(split), batch_size):
            x = split.x[start : start + batch_size].to(device)
            y = split.y[start : start + batch_size].to(device)
            adversarial = pgd(model, x, y, epsilon * scale, steps, relative_step * scale, generator)
            with torch.no_grad():
                clean_right = model(x).argmax(1) == y  # (b,)
                adversarial_right = model.forward_embedded(adversarial, x).argmax(1) == y
            clean_correct += int(clean_right.sum())
            robust_correct += int((clean_right & adversarial_right).sum())
    finally:
        model.train(was_training)
    return clean_correct / len(split), robust_correct / len(split)
