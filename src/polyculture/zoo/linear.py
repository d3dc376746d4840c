"""``linear``: flatten the input, then one linear layer (multinomial logistic regression in torch).

The simplest torch member of the zoo, and the baseline every other family must beat.
"""

from __future__ import annotations

import torch
from torch import nn

from polyculture.data.task import Modality
from polyculture.zoo.base import Knobs, family
from polyculture.zoo.common import StagedModel, check_input_shape, flat_dim


class LinearKnobs(Knobs):
    """The linear model has no knobs."""


class LinearModel(StagedModel):
    """Flatten, then ``Linear(d, num_classes)``.

    Parameters
    ----------
    input_shape
        Shape of one example.
    num_classes
        Number of classes.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(flat_dim(input_shape), num_classes)

    def _run(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.head(x.flatten(1)), {}  # (n, classes)


@family(
    "linear",
    kind="torch",
    modalities=("sequence", "image", "tabular"),
    knobs=LinearKnobs,
    description="flatten, then one linear layer (softmax regression)",
)
def build_linear(
    knobs: LinearKnobs, input_shape: tuple[int, ...], num_classes: int, modality: Modality
) -> LinearModel:
    """Build a :class:`LinearModel`."""
    check_input_shape("linear", input_shape, modality)
    return LinearModel(input_shape, num_classes)
