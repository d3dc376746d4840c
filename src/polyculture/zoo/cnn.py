"""``cnn``: a plain convolutional network, 1-D for sequences and text, 2-D for images.

The sequence design follows the CNN of the MNIST-1D paper (Greydanus & Kobak, 2020): strided
convolutions that halve the length at every layer, then a linear head on the flattened features
(about 92% test accuracy on MNIST-1D). The image design is the usual VGG-style stack of 3x3
convolutions with max pooling, then global average pooling and a linear head. The text design
follows Kim (2014): token embeddings, stride-1 'same' convolutions over positions, then global
max pooling over the (non-padding) positions and a linear head.

The ``pool`` knob chooses how the last feature map becomes the head input: ``"auto"`` keeps the
designs above (flatten for sequences, mean for images, max for text); ``"attention"`` learns
which positions matter (:class:`~polyculture.zoo.common.AttentionPool`) and exposes the weights
through :meth:`CNN.attention_weights`.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

import torch
from pydantic import Field, model_validator
from torch import nn

from polyculture.data.task import Modality
from polyculture.errors import ConfigError
from polyculture.zoo.base import family
from polyculture.zoo.common import (
    AttentionPool,
    Depth,
    DropoutP,
    EmbedDim,
    EmbeddingStagedModel,
    StableKnobs,
    TokenEmbedding,
    Width,
    check_input_shape,
    check_vocab_size,
    inspecting,
    masked_max,
    masked_mean,
    pool_representation,
)

PoolKind = Literal["flatten", "mean", "max", "attention"]


class CNNKnobs(StableKnobs):
    """Knobs of ``cnn``.

    Attributes
    ----------
    width
        Channels of every convolution.
    depth
        Number of convolutional blocks.
    kernel_size
        Kernel of the first 1-D convolution for sequences (odd, so that ``padding=k//2`` centres
        it) and of every convolution for text. Image blocks always use 3x3 kernels.
    dropout
        Dropout probability after each block (0 adds no dropout layer).
    pool
        How the last feature map becomes the head input: ``"auto"`` (flatten for sequences,
        global mean for images, global max for text), ``"flatten"`` (not for text),
        ``"mean"``, ``"max"`` or ``"attention"`` (learned attention pooling over positions).
    embed_dim
        Token embedding size; used for text inputs only, ignored otherwise.
    """

    # Left out of the dump at their defaults: member ids from before they existed hold.
    added_knobs: ClassVar[tuple[str, ...]] = ("pool", "embed_dim")

    width: Width = Field(32, description="channels of every convolution")
    depth: Depth = Field(3, description="number of convolutional blocks")
    kernel_size: int = Field(5, ge=1, description="first 1-D kernel size (every one for text; odd)")
    dropout: DropoutP = Field(0.0, description="dropout after each block")
    pool: Literal["auto", "flatten", "mean", "max", "attention"] = Field(
        "auto",
        description="head input: auto (flatten sequences, mean images, max text), flatten, "
        "mean, max or attention pooling over positions",
    )
    embed_dim: EmbedDim = Field(64, description="token embedding size (text only)")

    @model_validator(mode="after")
    def _odd_kernel(self) -> Self:
        # An even kernel with padding k//2 would grow the sequence by one and shift it.
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        return self


def _conv_out(length: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a 1-D convolution (the formula in ``torch.nn.Conv1d``'s docs)."""
    return (length + 2 * padding - kernel) // stride + 1


class CNN(EmbeddingStagedModel):
    """Convolutional blocks, then a linear head on the flattened or pooled features.

    Parameters
    ----------
    blocks
        The convolutional blocks in order; each maps ``(n, C, ...)`` to ``(n, width, ...)``.
    head_in
        Size of the head input.
    num_classes
        Number of classes.
    pool
        ``"flatten"``, ``"mean"``, ``"max"`` or ``"attention"`` over the last map's positions.
    embedding
        Token embedding for text inputs (``None`` for sequences and images).
    """

    def __init__(
        self,
        blocks: list[nn.Module],
        head_in: int,
        num_classes: int,
        pool: PoolKind,
        embedding: TokenEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.blocks = nn.ModuleList(blocks)
        self.pool = pool
        self.head = nn.Linear(head_in, num_classes)
        # Created after the head so that models without it initialise exactly as before.
        self.attention = AttentionPool(head_in) if pool == "attention" else None

    def _features(
        self, h: torch.Tensor, x: torch.Tensor, reps: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the blocks; the last map ``(n, width, ...)`` and the text padding mask ``(n, L)``."""
        mask = self.text_mask(x)  # (n, L) or None
        if mask is not None:
            if reps is not None:
                reps["embedding"] = masked_mean(h, mask)  # (n, embed_dim)
            # Zero padded positions: a perturbed padding vector must not leak into the convolution.
            h = (h * mask.unsqueeze(-1).to(h.dtype)).transpose(1, 2)  # (n, embed_dim, L)
        for i, block in enumerate(self.blocks, start=1):
            h = block(h)  # (n, width, L') or (n, width, H', W')
            if mask is not None:
                # Zero the padded positions so the next block sees what 'same' padding would
                # give a shorter input: more right padding cannot change any output.
                h = h * mask.unsqueeze(1).to(h.dtype)  # (n, width, L)
            if reps is not None:
                if mask is None:
                    reps[f"block{i}"] = pool_representation(h)
                else:
                    reps[f"block{i}"] = masked_mean(h.transpose(1, 2), mask)  # (n, width)
        return h, mask

    def _pool(
        self, h: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Head input ``(n, head_in)`` from the last map, and attention weights when pooled so."""
        if self.pool == "flatten":
            return h.flatten(1), None  # (n, width * positions)
        if self.pool == "mean" and mask is None:
            # Images keep their original global average pool (same numbers as before).
            return h.mean(dim=tuple(range(2, h.dim()))), None  # (n, width)
        positions = h.flatten(2).transpose(1, 2)  # (n, P, width): sequence, image or text
        if self.pool == "mean":
            return masked_mean(positions, mask), None  # (n, width)
        if self.pool == "max":
            return masked_max(positions, mask), None  # (n, width)
        assert self.attention is not None  # pool == "attention"
        return self.attention(positions, mask)  # (n, width), (n, P)

    def _run_embedded(
        self, h: torch.Tensor, x: torch.Tensor, collect: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reps: dict[str, torch.Tensor] = {}
        h, mask = self._features(h, x, reps if collect else None)
        hidden, _ = self._pool(h, mask)  # (n, head_in)
        if collect:
            reps["attention_pool" if self.pool == "attention" else "hidden"] = hidden
        return self.head(hidden), reps  # (n, classes)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention-pooling weights ``(n, positions)`` of the last feature map (eval mode).

        Positions are the last map's length (sequences: after the strided blocks; text: the
        token positions, 0 on padding) or its ``H' * W'`` pixels in row-major order (images).
        Rows sum to 1.

        Raises
        ------
        ConfigError
            When the model does not pool with attention.

        Examples
        --------
        >>> knobs = CNNKnobs(pool="attention", depth=1)
        >>> model = build_cnn(knobs, (6,), 2, "text", vocab_size=10)
        >>> model.attention_weights(torch.tensor([[4, 5, 6, 0, 0, 0]])).tolist()
        [[0.3333333432674408, 0.3333333432674408, 0.3333333432674408, 0.0, 0.0, 0.0]]
        """
        if self.attention is None:
            raise ConfigError(
                f"this cnn pools with '{self.pool}', so it has no attention weights",
                hint="build it with pool='attention'",
            )
        with inspecting(self):
            h, mask = self._features(self.embed_inputs(x), x, None)
            _, weights = self._pool(h, mask)
        assert weights is not None
        return weights  # (n, positions)


def _resolve_pool(knobs: CNNKnobs, modality: Modality) -> PoolKind:
    """The pooling the knob means for ``modality`` (``auto`` keeps each design's own)."""
    if knobs.pool == "auto":
        return {"sequence": "flatten", "image": "mean", "text": "max"}[modality]  # type: ignore[return-value]
    if knobs.pool == "flatten" and modality == "text":
        raise ConfigError(
            "model 'cnn' cannot flatten text features: texts have different lengths",
            hint="use pool='max' (the default for text), 'mean' or 'attention'",
        )
    return knobs.pool


def _sequence_cnn(input_shape: tuple[int, ...], num_classes: int, knobs: CNNKnobs) -> CNN:
    """MNIST-1D-paper CNN: stride-2 convolutions, then (by default) flatten and a linear head."""
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
    pool = _resolve_pool(knobs, "sequence")
    head_in = knobs.width * length if pool == "flatten" else knobs.width
    return CNN(blocks, head_in, num_classes, pool)


def _image_cnn(input_shape: tuple[int, ...], num_classes: int, knobs: CNNKnobs) -> CNN:
    """3x3 conv + ReLU + 2x2 max-pool blocks, then (by default) global average pool and head."""
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
    pool = _resolve_pool(knobs, "image")
    head_in = knobs.width * height * width if pool == "flatten" else knobs.width
    return CNN(blocks, head_in, num_classes, pool)


def _text_cnn(num_classes: int, knobs: CNNKnobs, vocab_size: int) -> CNN:
    """Kim (2014)-style CNN: embedding, stride-1 'same' convolutions, pooling over positions."""
    pool = _resolve_pool(knobs, "text")
    embedding = TokenEmbedding(vocab_size, knobs.embed_dim)
    k = knobs.kernel_size
    blocks: list[nn.Module] = []
    for i in range(knobs.depth):
        layers: list[nn.Module] = [
            nn.Conv1d(knobs.embed_dim if i == 0 else knobs.width, knobs.width, k, 1, k // 2),
            nn.ReLU(),
        ]
        if knobs.dropout > 0:
            layers.append(nn.Dropout(knobs.dropout))
        blocks.append(nn.Sequential(*layers))
    return CNN(blocks, knobs.width, num_classes, pool, embedding)


@family(
    "cnn",
    kind="torch",
    modalities=("sequence", "image", "text"),
    knobs=CNNKnobs,
    description="convolutional network (1-D strided for sequences, 2-D VGG-style for images, "
    "Kim-style over token embeddings for text)",
)
def build_cnn(
    knobs: CNNKnobs,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: Modality,
    *,
    vocab_size: int = 0,
) -> CNN:
    """Build a :class:`CNN` for sequence, image or text inputs (``vocab_size``: text only)."""
    check_input_shape("cnn", input_shape, modality)
    if modality == "sequence":
        return _sequence_cnn(input_shape, num_classes, knobs)
    if modality == "text":
        check_vocab_size("cnn", vocab_size)
        return _text_cnn(num_classes, knobs, vocab_size)
    return _image_cnn(input_shape, num_classes, knobs)
