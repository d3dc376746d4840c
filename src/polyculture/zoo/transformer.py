"""``transformer``: a small BERT-style (pre-norm) encoder with a [CLS] token.

Tokens by modality:

* sequence ``(n, C, L)``: non-overlapping patches of ``patch`` steps (right-padded with zeros to a
  multiple of ``patch``), each flattened to ``C * patch`` values and projected to ``width``;
* image ``(n, C, H, W)``: ``patch x patch`` patches as in ViT (``H`` and ``W`` right/bottom-padded
  with zeros), each flattened to ``C * patch * patch`` values and projected to ``width``;
* tabular ``(n, F)``: one token per feature as in the FT-Transformer (Gorishniy et al., 2021),
  ``x_j * W_j + b_j`` with a learned ``W_j, b_j`` per feature;
* text ``(n, L)`` token ids: one token per id, a learned ``width``-sized embedding (padding is the
  zero vector; ``patch`` is unused). Every block gets a key padding mask, so no token attends to
  padding, and inputs may be shorter than ``max_length``.

A learned [CLS] token is prepended and learned position embeddings are added; ``depth`` pre-norm
blocks follow (``x + Attn(LN(x))`` then ``x + MLP(LN(x))``), then a final LayerNorm and a linear
head on the [CLS] token. :meth:`Transformer.attention_maps` returns every block's attention
weights, computed by the very modules of the forward pass.
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
from polyculture.zoo.common import (
    Depth,
    DropoutP,
    EmbeddingStagedModel,
    TokenEmbedding,
    Width,
    check_input_shape,
    check_vocab_size,
    inspecting,
    masked_mean,
)


class TransformerKnobs(Knobs):
    """Knobs of ``transformer``.

    Attributes
    ----------
    width
        Model dimension ``d_model``; must be divisible by ``heads``. Text token embeddings have
        this size too (there is no separate ``embed_dim``).
    depth
        Number of encoder blocks.
    heads
        Attention heads per block.
    patch
        Patch length (sequences) or side (images); unused for tabular and text inputs.
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

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        maps: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend every token to every (unmasked) token: ``(n, T, width)`` -> ``(n, T, width)``.

        Parameters
        ----------
        x
            Tokens ``(n, T, width)``.
        key_mask
            Bool ``(n, T)``: which tokens may be attended to (``None``: all).
        maps
            When given, the attention weights ``(n, heads, T, T)`` are computed explicitly,
            appended to it and used for the output (instead of the fused kernel).
        """
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads)  # (n, T, 3, h, d/h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (n, h, T, d/h)
        allowed = None if key_mask is None else key_mask[:, None, None, :]  # (n, 1, 1, T)
        p = self.dropout if self.training else 0.0
        if maps is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        else:
            # The same attention as the fused kernel, spelled out so the weights can be kept.
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (n, h, T, T)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, -math.inf)
            weights = torch.softmax(scores, dim=-1)  # (n, h, T, T)
            maps.append(weights)
            y = F.dropout(weights, p) @ v
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

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        maps: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``(n, T, width)`` -> ``(n, T, width)``; ``key_mask`` and ``maps`` as in attention."""
        x = x + self.attn(self.norm1(x), key_mask, maps)  # (n, T, width)
        return x + self.mlp(self.norm2(x))  # (n, T, width)


class Transformer(EmbeddingStagedModel):
    """Tokenizer, [CLS] and positions, pre-norm encoder blocks, final LayerNorm, linear head.

    Parameters
    ----------
    tokens
        Module mapping inputs to tokens ``(n, T, width)`` (a :class:`TokenEmbedding` for text).
    n_tokens
        Number of tokens ``T`` it produces (without [CLS]); for text, the most it accepts.
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
        # Text ids go through ``embedding`` (the attack protocol's embedding space) and mask
        # padding; other tokenizers read the numbers themselves.
        self.embedding = tokens if isinstance(tokens, TokenEmbedding) else None
        self.tokens = nn.Identity() if self.embedding is not None else tokens
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

    def _run_embedded(
        self, h: torch.Tensor, x: torch.Tensor, collect: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self._encode(h, x, collect, None)

    def _encode(
        self,
        h: torch.Tensor,
        x: torch.Tensor,
        collect: bool,
        maps: list[torch.Tensor] | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The forward pass from ``h = embed_inputs(x)``; ``maps`` collects attention weights."""
        reps: dict[str, torch.Tensor] = {}
        mask = self.text_mask(x)  # (n, L) or None
        key_mask = None
        pos: torch.Tensor = self.pos  # (1, T+1, width)
        tok = self.tokens(h)  # (n, T, width); text: the embeddings as they are
        if mask is not None:
            if tok.shape[1] + 1 > self.pos.shape[1]:
                raise ValueError(
                    f"text of {tok.shape[1]} tokens is longer than this model's "
                    f"{self.pos.shape[1] - 1} positions"
                )
            pos = self.pos[:, : tok.shape[1] + 1]  # shorter inputs use the first positions
            if collect:
                reps["embedding"] = masked_mean(tok, mask)  # (n, width)
            cls_visible = torch.ones_like(mask[:, :1])  # (n, 1)
            key_mask = torch.cat([cls_visible, mask], dim=1)  # (n, L+1)
        cls = self.cls.expand(tok.shape[0], -1, -1)  # (n, 1, width)
        h = torch.cat([cls, tok], dim=1) + pos  # (n, T+1, width)
        for i, block in enumerate(self.blocks, start=1):
            h = block(h, key_mask, maps)  # (n, T+1, width)
            if collect:
                reps[f"block{i}"] = h[:, 0]  # (n, width): the [CLS] token
        hidden = self.norm(h[:, 0])  # (n, width); LayerNorm is per token, so norm CLS alone
        if collect:
            reps["hidden"] = hidden
        return self.head(hidden), reps  # (n, classes)

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights of every block: ``(n, depth, heads, tokens, tokens)``.

        Computed in eval mode without gradients by the forward pass's own modules. Tokens are
        [CLS] first, then the input's tokens in order; row ``i`` of a map holds how much token
        ``i`` attends to each token, so every row sums to 1. For text, padded tokens get weight 0.

        Examples
        --------
        >>> model = build_transformer(TransformerKnobs(depth=1, heads=2), (3,), 2, "tabular")
        >>> model.attention_maps(torch.zeros(5, 3)).shape
        torch.Size([5, 1, 2, 4, 4])
        """
        maps: list[torch.Tensor] = []
        with inspecting(self):
            self._encode(self.embed_inputs(x), x, False, maps)
        return torch.stack(maps, dim=1)  # (n, depth, heads, T+1, T+1)


@family(
    "transformer",
    kind="torch",
    modalities=("sequence", "image", "tabular", "text"),
    knobs=TransformerKnobs,
    description="pre-norm encoder with [CLS]: patch tokens (sequence, image), feature tokens "
    "(tabular), token embeddings with a padding mask (text)",
)
def build_transformer(
    knobs: TransformerKnobs,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: Modality,
    *,
    vocab_size: int = 0,
) -> Transformer:
    """Build a :class:`Transformer` with the tokenizer that fits ``modality``."""
    check_input_shape("transformer", input_shape, modality)
    p = knobs.patch
    tokens: nn.Module
    if modality == "text":
        check_vocab_size("transformer", vocab_size)
        (max_length,) = input_shape
        tokens, n_tokens = TokenEmbedding(vocab_size, knobs.width), max_length
    elif modality == "sequence":
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
