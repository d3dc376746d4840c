"""``cnn``: a plain convolutional network, 1-D for sequences and 2-D for images.

The sequence design follows the CNN of the MNIST-1D paper (Greydanus & Kobak, 2020): strided
convolutions that halve the length at every layer, then a linear head on the flattened features
(about 92% test accuracy on MNIST-1D). The image design is the usual VGG-style stack of 3x3
convolutions with max pooling, then global average pooling and a linear head.
"""

from __future__ import annotations

from typing import Self

import torch
from pydantic import Field, model_validator
from torch import nn

from polyculture.data.task import Modality
from polyculture.zoo.base import Knobs, family
from polyculture.zoo.common import (
    Depth,
    DropoutP,
    StagedModel,
    Width,
    check_input_shape,
    pool_representation,
)


class CNNKnobs(Knobs):
    """Knobs of ``cnn``.

    Attributes
    ----------
    width
        Channels of every convolution.
    depth
        Number of convolutional blocks.
    kernel_size
        Kernel of the first 1-D convolution (odd, so that ``padding=k//2`` centres it). Image
        blocks always use 3x3 kernels.
    dropout
        Dropout probability after each block (0 adds no dropout layer).
    """

    width: Width = Field(32, description="channels of every convolution")
    depth: Depth = Field(3, description="number of convolutional blocks")
    kernel_size: int = Field(5, ge=1, description="first 1-D kernel size (odd)")
    dropout: DropoutP = Field(0.0, description="dropout after each block")

    @model_validator(mode="after")
    def _odd_kernel(self) -> Self:
        # An even kernel with padding k//2 would grow the sequence by one and shift it.
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        return self


def _conv_out(length: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a 1-D convolution (the formula in ``torch.nn.Conv1d``'s docs)."""
    return (length + 2 * padding - kernel) // stride + 1


class CNN(StagedModel):
    """Convolutional blocks, then a linear head on the flattened or globally pooled features.

    Parameters
    ----------
    blocks
        The convolutional blocks in order; each maps ``(n, C, ...)`` to ``(n, width, ...)``.
    head_in
        Size of the head input.
    num_classes
        Number of classes.
    global_pool
        Whether to average over all spatial positions before the head (images) instead of
        flattening them (sequences).
    """

    def __init__(
        self, blocks: list[nn.Module], head_in: int, num_classes: int, global_pool: bool
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.global_pool = global_pool
        self.head = nn.Linear(head_in, num_classes)

    def _run(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reps: dict[str, torch.Tensor] = {}
        h = x  # (n, C, L) or (n, C, H, W)
        for i, block in enumerate(self.blocks, start=1):
            h = block(h)  # (n, width, L') or (n, width, H', W')
            if collect:
                reps[f"block{i}"] = pool_representation(h)
        # Images: global average pool so the head does not depend on the input size.
        hidden = h.mean(dim=(-2, -1)) if self.global_pool else h.flatten(1)  # (n, head_in)
        if collect:
            reps["hidden"] = hidden
        return self.head(hidden), reps  # (n, classes)


def _sequence_cnn(input_shape: tuple[int, ...], num_classes: int, knobs: CNNKnobs) -> CNN:
    """MNIST-1D-paper CNN: stride-2 convolutions, then flatten and a linear head."""
    channels, length = input_shape
    blocks: list[nn.Module] = []
    for i in range(knobs.depth):
        # The first layer sees the raw signal with a wider kernel; later ones use 3.
        kernel = knobs.kernel_size if i == 0 else 3
        layers: list[nn.Module] = [
            nn.Conv1d(channels if i == 0 else knobs.width, knobs.width, kernel, 2, kernel // 2),
            nn.ReLU(),
        ]
        if knobs.dropout > 0:
            layers.append(nn.Dropout(knobs.dropout))
        blocks.append(nn.Sequential(*layers))
        length = _conv_out(length, kernel, 2, kernel // 2)
    return CNN(blocks, knobs.width * length, num_classes, global_pool=False)


def _image_cnn(input_shape: tuple[int, ...], num_classes: int, knobs: CNNKnobs) -> CNN:
    """3x3 conv + ReLU + 2x2 max-pool blocks, then global average pooling and a linear head."""
    channels, height, width = input_shape
    blocks: list[nn.Module] = []
    for i in range(knobs.depth):
        layers: list[nn.Module] = [
            nn.Conv2d(channels if i == 0 else knobs.width, knobs.width, 3, padding=1),
            nn.ReLU(),
        ]
        # Pool only while there is something to pool: a 1-pixel map would become empty.
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        if knobs.dropout > 0:
            layers.append(nn.Dropout(knobs.dropout))
        blocks.append(nn.Sequential(*layers))
    return CNN(blocks, knobs.width, num_classes, global_pool=True)


@family(
    "cnn",
    kind="torch",
    modalities=("sequence", "image"),
    knobs=CNNKnobs,
    description="convolutional network (1-D strided for sequences, 2-D VGG-style for images)",
)
def build_cnn(
    knobs: CNNKnobs, input_shape: tuple[int, ...], num_classes: int, modality: Modality
) -> CNN:
    """Build a :class:`CNN` for sequence or image inputs."""
    check_input_shape("cnn", input_shape, modality)
    if modality == "sequence":
        return _sequence_cnn(input_shape, num_classes, knobs)
    return _image_cnn(input_shape, num_classes, knobs)
