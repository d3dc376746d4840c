"""``mlp``: flatten the input, then ``depth`` fully connected ReLU layers and a linear head."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from polyculture.data.task import Modality
from polyculture.zoo.base import Knobs, family
from polyculture.zoo.common import Depth, DropoutP, StagedModel, Width, check_input_shape, flat_dim


class MLPKnobs(Knobs):
    """Knobs of ``mlp``.

    Attributes
    ----------
    width
        Units per hidden layer.
    depth
        Number of hidden layers.
    dropout
        Dropout probability after each hidden activation (0 adds no dropout layer).
    """

    width: Width = Field(100, description="units per hidden layer")
    depth: Depth = Field(2, description="number of hidden layers")
    dropout: DropoutP = Field(0.0, description="dropout after each hidden activation")


class MLP(StagedModel):
    """Flatten -> ``depth`` x [Linear(width), ReLU, Dropout?] -> Linear head.

    Parameters
    ----------
    in_features
        Size of one flattened example.
    num_classes
        Number of classes.
    knobs
        Width, depth and dropout.
    """

    def __init__(self, in_features: int, num_classes: int, knobs: MLPKnobs) -> None:
        super().__init__()
        blocks = []
        for i in range(knobs.depth):
            layers: list[nn.Module] = [
                nn.Linear(in_features if i == 0 else knobs.width, knobs.width),
                nn.ReLU(),
            ]
            if knobs.dropout > 0:
                layers.append(nn.Dropout(knobs.dropout))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(knobs.width, num_classes)

    def _run(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reps: dict[str, torch.Tensor] = {}
        h = x.flatten(1)  # (n, d)
        for i, block in enumerate(self.blocks, start=1):
            h = block(h)  # (n, width)
            if collect:
                reps[f"block{i}"] = h
        return self.head(h), reps  # (n, classes)


@family(
    "mlp",
    kind="torch",
    modalities=("sequence", "image", "tabular"),
    knobs=MLPKnobs,
    description="flatten, then depth x [linear, ReLU, dropout] and a linear head",
)
def build_mlp(
    knobs: MLPKnobs, input_shape: tuple[int, ...], num_classes: int, modality: Modality
) -> MLP:
    """Build an :class:`MLP`."""
    check_input_shape("mlp", input_shape, modality)
    return MLP(flat_dim(input_shape), num_classes, knobs)
