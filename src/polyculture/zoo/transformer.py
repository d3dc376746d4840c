"""``transformer``: a small BERT-style (pre-norm) encoder with a [CLS] token.

Tokens by modality:

* sequence ``(n, C, L)``: non-overlapping patches of ``patch`` steps (right-padded with zeros to a
  multiple of ``patch``), each flattened to ``C * patch`` values and projected to ``width``;
* image ``(n, C, H, W)``: ``patch x patch`` patches as in ViT (``H`` and ``W`` right/bottom-padded
  with zeros), each flattened to ``C * patch * patch`` values and projected to ``width``;
* tabular ``(n, F)``: one token per feature as in the FT-Transformer (Gorishniy et al., 2021),
  ``x_j * W_j + b_j`` with a learned ``W_j, b_j`` per feature.

A learned [CLS] token is prepended and learned position embeddings are added; ``depth`` pre-norm
blocks follow (``x + Attn(LN(x))`` then ``x + MLP(LN(x))``), then a final LayerNorm and a linear
head on the [CLS] token.
"""

from __future__ import annotations

import math
from typing import Self

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from polyculture.data.task import Modality
from polyculture.zoo.base import Knobs, family
from polyculture.zoo.common import Depth, DropoutP, StagedModel, Width, check_input_shape


class TransformerKnobs(Knobs):
    """Knobs of ``transformer``.

    Attributes
    ----------
    width
        Model dimension ``d_model``; must be divisible by ``heads``.
    depth
        Number of encoder blocks.
    heads
        Attention heads per block.
    patch
        Patch length (sequences) or side (images); unused for tabular inputs.
    mlp_ratio
        Hidden size of each block's MLP, as a multiple of ``width``.
    dropout
        Dropout on attention weights and in the MLPs.
    """

    width: Width = Field(64, description="model dimension (divisible by heads)")
    depth: Depth = Field(2, description="number of encoder blocks")
    heads: int = Field(4, ge=1, description="attention heads per block")
    patch: int = Field(4, ge=1, description="patch length (sequence) or side (image)")
    mlp_ratio: float = Field(2.0, gt=0.0, description="MLP hidden size as a multiple of width")
    dropout: DropoutP = Field(0.0, description="dropout on attention and in the MLPs")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        # Each head gets width // heads dimensions; a remainder has nowhere to go.
        if self.width % self.heads:
            raise ValueError(
                f"width {self.width} is not divisible by heads {self.heads}; "
                f"pick a width that is a multiple of {self.heads}"
            )
        return self


class PatchTokens(nn.Module):
    """Cut sequences or images into zero-padded patches and project each to ``width``.

    Parameters
    ----------
    channels
        Input channels ``C``.
    patch
        Patch length (sequence) or side (image).
    spatial_dims
        1 for sequences, 2 for images.
    width
        Token dimension.
    """

    def __init__(self, channels: int, patch: int, spatial_dims: int, width: int) -> None:
        super().__init__()
        self.patch = patch
        self.spatial_dims = spatial_dims
        self.proj = nn.Linear(channels * patch**spatial_dims, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(n, T, width)`` for ``(n, C, L)`` or ``(n, C, H, W)`` inputs."""
        p = self.patch
        if self.spatial_dims == 1:
            n, c, length = x.shape
            x = F.pad(x, (0, -length % p))  # (n, C, L'), L' a multiple of p
            t = x.shape[-1] // p
            x = x.reshape(n, c, t, p).permute(0, 2, 1, 3)  # (n, T, C, p)
            return self.proj(x.reshape(n, t, c * p))  # (n, T, width)
        n, c, h, w = x.shape
        x = F.pad(x, (0, -w % p, 0, -h % p))  # (n, C, H', W'), both multiples of p
        th, tw = x.shape[-2] // p, x.shape[-1] // p
        x = x.reshape(n, c, th, p, tw, p).permute(0, 2, 4, 1, 3, 5)  # (n, th, tw, C, p, p)
        return self.proj(x.reshape(n, th * tw, c * p * p))  # (n, T, width)


class FeatureTokens(nn.Module):
    """FT-Transformer feature tokenizer: scalar feature ``j`` becomes ``x_j * W_j + b_j``.

    Parameters
    ----------
    features
        Number of input features ``F``.
    width
        Token dimension.
    """

    def __init__(self, features: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(features, width))
        self.bias = nn.Parameter(torch.empty(features, width))
        # The FT-Transformer's initialisation: uniform in +-1/sqrt(width).
        bound = 1.0 / math.sqrt(width)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(n, F, width)`` for ``(n, F)`` inputs."""
        return x.unsqueeze(-1) * self.weight + self.bias  # (n, F, width)


class SelfAttention(nn.Module):
    """Multi-head self-attention over ``(n, T, width)`` with ``scaled_dot_product_attention``.

    Parameters
    ----------
    width
        Model dimension.
    heads
        Number of heads (divides ``width``).
    dropout
        Dropout on the attention weights while training.
    """

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend every token to every token: ``(n, T, width)`` -> ``(n, T, width)``."""
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads)  # (n, T, 3, h, d/h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (n, h, T, d/h)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (n, h, T, d/h)
        return self.out(y.transpose(1, 2).reshape(n, t, d))  # (n, T, width)


class EncoderBlock(nn.Module):
    """Pre-norm encoder block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))`` with GELU.

    Parameters
    ----------
    width
        Model dimension.
    heads
        Attention heads.
    mlp_hidden
        Hidden size of the MLP.
    dropout
        Dropout on attention weights and in the MLP.
    """

    def __init__(self, width: int, heads: int, mlp_hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_hidden, width),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, T, width)`` -> ``(n, T, width)``."""
        x = x + self.attn(self.norm1(x))  # (n, T, width)
        return x + self.mlp(self.norm2(x))  # (n, T, width)


class Transformer(StagedModel):
    """Tokenizer, [CLS] and positions, pre-norm encoder blocks, final LayerNorm, linear head.

    Parameters
    ----------
    tokens
        Module mapping inputs to tokens ``(n, T, width)``.
    n_tokens
        Number of tokens ``T`` it produces (without [CLS]).
    num_classes
        Number of classes.
    knobs
        Width, depth, heads, MLP ratio and dropout.
    """

    def __init__(
        self, tokens: nn.Module, n_tokens: int, num_classes: int, knobs: TransformerKnobs
    ) -> None:
        super().__init__()
        width = knobs.width
        self.tokens = tokens
        self.cls = nn.Parameter(torch.empty(1, 1, width))
        self.pos = nn.Parameter(torch.empty(1, n_tokens + 1, width))  # one per token incl. CLS
        # BERT/ViT initialisation: small normal values, so no token dominates at the start.
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        mlp_hidden = max(1, round(width * knobs.mlp_ratio))
        self.blocks = nn.ModuleList(
            EncoderBlock(width, knobs.heads, mlp_hidden, knobs.dropout) for _ in range(knobs.depth)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def _run(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reps: dict[str, torch.Tensor] = {}
        tok = self.tokens(x)  # (n, T, width)
        cls = self.cls.expand(tok.shape[0], -1, -1)  # (n, 1, width)
        h = torch.cat([cls, tok], dim=1) + self.pos  # (n, T+1, width)
        for i, block in enumerate(self.blocks, start=1):
            h = block(h)  # (n, T+1, width)
            if collect:
                reps[f"block{i}"] = h[:, 0]  # (n, width): the [CLS] token
        hidden = self.norm(h[:, 0])  # (n, width); LayerNorm is per token, so norm CLS alone
        if collect:
            reps["hidden"] = hidden
        return self.head(hidden), reps  # (n, classes)


@family(
    "transformer",
    kind="torch",
    modalities=("sequence", "image", "tabular"),
    knobs=TransformerKnobs,
    description="pre-norm encoder with [CLS]: patch tokens (sequence, image), feature tokens",
)
def build_transformer(
    knobs: TransformerKnobs, input_shape: tuple[int, ...], num_classes: int, modality: Modality
) -> Transformer:
    """Build a :class:`Transformer` with the tokenizer that fits ``modality``."""
    check_input_shape("transformer", input_shape, modality)
    p = knobs.patch
    tokens: nn.Module
    if modality == "sequence":
        channels, length = input_shape
        tokens, n_tokens = PatchTokens(channels, p, 1, knobs.width), math.ceil(length / p)
    elif modality == "image":
        channels, height, width = input_shape
        tokens = PatchTokens(channels, p, 2, knobs.width)
        n_tokens = math.ceil(height / p) * math.ceil(width / p)  # padded patches count too
    else:
        (features,) = input_shape
        tokens, n_tokens = FeatureTokens(features, knobs.width), features
    return Transformer(tokens, n_tokens, num_classes, knobs)
