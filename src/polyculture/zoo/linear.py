"""``linear``: flatten the input, then one linear layer (multinomial logistic regression in torch).

The simplest torch member of the zoo, and the baseline every other family must beat. Text inputs
are read as the mean of their token embeddings (a bag of embeddings, learned jointly), so the
text member is a linear classifier on averaged word vectors.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from polyculture.data.task import Modality
from polyculture.zoo.base import family
from polyculture.zoo.common import (
    EmbedDim,
    EmbeddingStagedModel,
    StableKnobs,
    TokenEmbedding,
    check_input_shape,
    check_vocab_size,
    flat_dim,
    masked_mean,
)


class LinearKnobs(StableKnobs):
    """Knobs of ``linear``: only ``embed_dim``, the token embedding size for text inputs.

    Attributes
    ----------
    embed_dim
        Token embedding size; used for text inputs only, ignored otherwise.
    """

    # Left out of the dump at their defaults: member ids from before they existed hold.
    added_knobs: ClassVar[tuple[str, ...]] = ("embed_dim",)

    embed_dim: EmbedDim = Field(64, description="token embedding size (text only)")


class LinearModel(EmbeddingStagedModel):
    """Flatten (text: mean token embedding), then ``Linear(d, num_classes)``.

    Parameters
    ----------
    in_features
        Size of one flattened example (text: ``embed_dim``).
    num_classes
        Number of classes.
    embedding
        Token embedding for text inputs (``None`` otherwise).
    """

    def __init__(
        self, in_features: int, num_classes: int, embedding: TokenEmbedding | None = None
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.head = nn.Linear(in_features, num_classes)

    def _run_embedded(
        self, h: torch.Tensor, x: torch.Tensor, collect: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask = self.text_mask(x)
        if mask is None:
            return self.head(h.flatten(1)), {}  # (n, classes)
        bag = masked_mean(h, mask)  # (n, embed_dim)
        return self.head(bag), ({"embedding": bag} if collect else {})  # (n, classes)


@family(
    "linear",
    kind="torch",
    modalities=("sequence", "image", "tabular", "text"),
    knobs=LinearKnobs,
    description="flatten (text: mean token embedding), then one linear layer (softmax regression)",
)
def build_linear(
    knobs: LinearKnobs,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: Modality,
    *,
    vocab_size: int = 0,
) -> LinearModel:
    """Build a :class:`LinearModel` (``vocab_size``: text only)."""
    check_input_shape("linear", input_shape, modality)
    if modality == "text":
        check_vocab_size("linear", vocab_size)
        embedding = TokenEmbedding(vocab_size, knobs.embed_dim)
        return LinearModel(knobs.embed_dim, num_classes, embedding)
    return LinearModel(flat_dim(input_shape), num_classes)
