"""Pieces shared by the torch families: knob types, input-shape checks and a two-path base class.

Every torch family computes its logits and its representations with one private method,
:meth:`StagedModel._run`, so that ``forward`` (which skips collecting) and ``representations``
cannot drift apart: both run the very same modules in the very same order.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from polyculture.data.task import Modality
from polyculture.errors import ConfigError
from polyculture.zoo.base import ZooModel

#: A width (units, channels, d_model): a positive integer.
Width = Annotated[int, Field(gt=0, description="units / channels / model dimension per layer")]
#: A depth (number of layers or blocks): at least one.
Depth = Annotated[int, Field(ge=1, description="number of hidden layers / blocks")]
#: A dropout probability in [0, 1); 1 would zero every activation.
DropoutP = Annotated[float, Field(ge=0.0, lt=1.0, description="dropout probability")]

#: Number of dimensions of one example, by modality (see ``polyculture.data.task``).
_RANKS: dict[str, int] = {"sequence": 2, "image": 3, "tabular": 1, "text": 1}

#: Representations are kept small so that probes and similarity measures stay cheap.
MAX_SEQUENCE_POSITIONS = 64
MAX_IMAGE_SIDE = 4


def check_input_shape(name: str, input_shape: tuple[int, ...], modality: Modality) -> None:
    """Raise :class:`ConfigError` unless ``input_shape`` is a valid layout for ``modality``.

    Parameters
    ----------
    name
        Family name, for the message.
    input_shape
        Shape of one example, without the batch dimension.
    modality
        ``sequence`` ``(C, L)``, ``image`` ``(C, H, W)`` or ``tabular`` ``(F,)``.

    Examples
    --------
    >>> check_input_shape("mlp", (1, 40), "sequence")
    >>> check_input_shape("mlp", (40,), "sequence")
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: model 'mlp' got sequence input shape (40,); ...
    """
    rank = _RANKS[modality]
    if len(input_shape) != rank or any(int(s) < 1 for s in input_shape):
        layout = {
            "sequence": "(channels, length)",
            "image": "(channels, height, width)",
            "text": "(max_length,)",
        }
        raise ConfigError(
            f"model '{name}' got {modality} input shape {tuple(input_shape)}",
            hint=f"{modality} inputs must be {layout.get(modality, '(features,)')} "
            "with every size >= 1",
        )


def flat_dim(input_shape: tuple[int, ...]) -> int:
    """Number of values in one example (the input size of a flattening model)."""
    return math.prod(input_shape)


def pool_representation(h: torch.Tensor) -> torch.Tensor:
    """Flatten a convolutional feature map to ``(n, d)``, average-pooling large ones first.

    Sequences longer than :data:`MAX_SEQUENCE_POSITIONS` and images larger than
    :data:`MAX_IMAGE_SIDE` per side are adaptive-average-pooled so that a representation has at
    most ``channels * 64`` or ``channels * 16`` dimensions.

    Parameters
    ----------
    h
        Feature map ``(n, C, L)`` or ``(n, C, H, W)``.

    Returns
    -------
    torch.Tensor
        ``(n, d)``.
    """
    if h.dim() == 3 and h.shape[-1] > MAX_SEQUENCE_POSITIONS:
        h = F.adaptive_avg_pool1d(h, MAX_SEQUENCE_POSITIONS)  # (n, C, 64)
    elif h.dim() == 4 and (h.shape[-2] > MAX_IMAGE_SIDE or h.shape[-1] > MAX_IMAGE_SIDE):
        side = (min(h.shape[-2], MAX_IMAGE_SIDE), min(h.shape[-1], MAX_IMAGE_SIDE))
        h = F.adaptive_avg_pool2d(h, side)  # (n, C, <=4, <=4)
    return h.flatten(1)  # (n, d)


class StagedModel(ZooModel):
    """A :class:`ZooModel` whose logits and representations come from one method, ``_run``."""

    @abstractmethod
    def _run(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Compute logits ``(n, classes)`` and, when ``collect``, the representations before them.

        Parameters
        ----------
        x
            Inputs ``(n, *input_shape)``.
        collect
            Whether to fill the returned dict; ``False`` skips the (pooling) work.

        Returns
        -------
        tuple
            Logits and a dict of ``(n, d)`` representations in network order (without
            ``"logits"``; empty when ``collect`` is false).
        """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, classes)`` for inputs ``(n, *input_shape)``."""
        return self._run(x, collect=False)[0]

    def representations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named representations of ``x``, each ``(n, d)``, in network order, ending with logits."""
        logits, reps = self._run(x, collect=True)
        reps["logits"] = logits  # inserted last, so "logits" is always the final key
        return reps
