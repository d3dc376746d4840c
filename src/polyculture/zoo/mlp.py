"""``mlp``: flatten the input, then ``depth`` fully connected ReLU layers and a linear head.

Text inputs are read as a bag of embeddings (fastText-like, Joulin et al. 2017): the mean of the
token embeddings over the non-padding positions replaces the flattened input.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from polyculture.data.task import Modality
from polyculture.zoo.base import family
from polyculture.zoo.common import (
    Depth,
    DropoutP,
    EmbedDim,
    EmbeddingStagedModel,
    StableKnobs,
    TokenEmbedding,
    Width,
    check_input_shape,
    check_vocab_size,
    flat_dim,
    masked_mean,
)


class MLPKnobs(StableKnobs):
    """Knobs of ``mlp``.

    Attributes
    ----------
    width
        Units per hidden layer.
    depth
        Number of hidden layers.
    dropout
        Dropout probability after each hidden activation (0 adds no dropout layer).
    embed_dim
        Token embedding size; used for text inputs only, ignored otherwise.
    """

    # Left out of the dump at their defaults: member ids from before they existed hold.
    added_knobs: ClassVar[tuple[str, ...]] = ("embed_dim",)

    width: Width = Field(100, description="units per hidden layer")
    depth: Depth = Field(2, description="number of hidden layers")
    dropout: DropoutP = Field(0.0, description="dropout after each hidden activation")
    embed_dim: EmbedDim = Field(64, description="token embedding size (text only)")


class MLP(EmbeddingStagedModel):
    """Flatten (text: mean token embedding) -> ``depth`` x [Linear, ReLU, Dropout?] -> head.

    Parameters
    ----------
    in_features
        Size of one flattened example (text: ``embed_dim``).
    num_classes
        Number of classes.
    knobs
        Width, depth and dropout.
    embedding
        Token embedding for text inputs (``None`` otherwise).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        knobs: MLPKnobs,
        embedding: TokenEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.embedding = embedding
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

    def _run_embedded(
        self, h: torch.Tensor, x: torch.Tensor, collect: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reps: dict[str, torch.Tensor] = {}
        mask = self.text_mask(x)
        if mask is None:
            h = h.flatten(1)  # (n, d)
        else:
            h = masked_mean(h, mask)  # (n, embed_dim): bag of embeddings
            if collect:
                reps["embedding"] = h
        for i, block in enumerate(self.blocks, start=1):
            h = block(h)  # (n, width)
            if collect:
                reps[f"block{i}"] = h
        return self.head(h), reps  # (n, classes)


@family(
    "mlp",
    kind="torch",
    modalities=("sequence", "image", "tabular", "text"),
    knobs=MLPKnobs,
    description="flatten (text: mean token embedding), then depth x [linear, ReLU, dropout] "
    "and a linear head",
)
def build_mlp(
    knobs: MLPKnobs,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: Modality,
    *,
    vocab_size: int = 0,
) -> MLP:
    """Build an :class:`MLP` (``vocab_size``: text only)."""
    check_input_shape("mlp", input_shape, modality)
    if modality == "text":
        check_vocab_size("mlp", vocab_size)
        embedding = TokenEmbedding(vocab_size, knobs.embed_dim)
        return MLP(knobs.embed_dim, num_classes, knobs, embedding)
    return MLP(flat_dim(input_shape), num_classes, knobs)
