"""``lstm`` and ``gru``: recurrent networks over time steps, sharing one implementation.

A sequence ``(n, C, L)`` is read as ``L`` time steps of ``C`` features; an image ``(n, C, H, W)``
as ``H`` time steps (rows) of ``C * W`` features; text ids ``(n, L)`` as their token embeddings,
packed (``pack_padded_sequence``) so that every direction stops at, or starts from, the last
token and never reads padding. Layers are kept as a list of single-layer recurrent modules
(rather than one ``num_layers=depth`` module) so that every layer's final hidden state can be
exposed as a representation.

Readouts (the ``readout`` knob):

* ``"all"``: the head reads the outputs at every time step, flattened, as the GRU of the MNIST-1D
  paper does. Texts have different lengths, so for text ``"all"`` reads the *mean* of the
  outputs over the non-padding positions instead.
* ``"last"``: the head reads the last layer's final hidden state(s) (for text, the forward state
  at the last token and the backward state at the first).
* ``"attention"``: learned attention pooling over the outputs of every time step (non-padding
  ones for text); :meth:`RecurrentNet.attention_weights` gives the weights.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from polyculture.data.task import Modality
from polyculture.errors import ConfigError
from polyculture.zoo.base import family
from polyculture.zoo.common import (
    AttentionPool,
    Depth,
    EmbedDim,
    EmbeddingStagedModel,
    StableKnobs,
    TokenEmbedding,
    Width,
    check_input_shape,
    check_vocab_size,
    inspecting,
    masked_mean,
)

CellType = Literal["lstm", "gru"]


class RNNKnobs(StableKnobs):
    """Knobs of ``lstm`` and ``gru``.

    Attributes
    ----------
    width
        Hidden size per direction.
    depth
        Number of stacked recurrent layers.
    bidirectional
        Whether each layer also reads the sequence backwards.
    readout
        ``"all"``: the head reads every time step's output, flattened (text: their mean over
        the tokens); ``"last"``: the last layer's final hidden state(s); ``"attention"``:
        attention pooling over every time step's output.
    embed_dim
        Token embedding size; used for text inputs only, ignored otherwise.
    """

    # Left out of the dump at their defaults: member ids from before they existed hold.
    added_knobs: ClassVar[tuple[str, ...]] = ("embed_dim",)

    width: Width = Field(32, description="hidden size per direction")
    depth: Depth = Field(1, description="number of stacked recurrent layers")
    bidirectional: bool = Field(True, description="also read the sequence backwards")
    readout: Literal["all", "last", "attention"] = Field(
        "all",
        description="head reads all time steps ('all'; text: their mean), the final state "
        "('last') or an attention-pooled mix of the steps ('attention')",
    )
    embed_dim: EmbedDim = Field(64, description="token embedding size (text only)")


def to_time_major_features(x: torch.Tensor) -> torch.Tensor:
    """Lay out inputs as ``(n, T, features)`` time steps.

    Parameters
    ----------
    x
        Sequence ``(n, C, L)`` or image ``(n, C, H, W)``.

    Returns
    -------
    torch.Tensor
        ``(n, L, C)`` or ``(n, H, C * W)``.
    """
    if x.dim() == 3:
        return x.transpose(1, 2)  # (n, L, C)
    n, c, h, w = x.shape
    return x.permute(0, 2, 1, 3).reshape(n, h, c * w)  # (n, H, C*W): one row per step


class RecurrentNet(EmbeddingStagedModel):
    """Stacked single-layer LSTMs or GRUs with a linear head.

    Parameters
    ----------
    cell
        ``"lstm"`` or ``"gru"``.
    steps
        Number of time steps ``T`` (text: ``max_length``).
    features
        Features per time step (text: ``embed_dim``).
    num_classes
        Number of classes.
    knobs
        Width, depth, direction and readout.
    embedding
        Token embedding for text inputs (``None`` for sequences and images).
    """

    def __init__(
        self,
        cell: CellType,
        steps: int,
        features: int,
        num_classes: int,
        knobs: RNNKnobs,
        embedding: TokenEmbedding | None = None,
    ) -> None:
        super().__init__()
        rnn_type = nn.LSTM if cell == "lstm" else nn.GRU
        dirs = 2 if knobs.bidirectional else 1
        self.embedding = embedding
        self.cell = cell
        self.readout = knobs.readout
        self.layers = nn.ModuleList(
            rnn_type(
                features if i == 0 else knobs.width * dirs,
                knobs.width,
                batch_first=True,
                bidirectional=knobs.bidirectional,
            )
            for i in range(knobs.depth)
        )
        # Text "all" averages the steps (texts differ in length), so it reads one step's size.
        flat_steps = knobs.readout == "all" and embedding is None
        head_in = knobs.width * dirs * (steps if flat_steps else 1)
        self.head = nn.Linear(head_in, num_classes)
        # Created after the head so that models without it initialise exactly as before.
        self.attention = AttentionPool(knobs.width * dirs) if knobs.readout == "attention" else None

    def _final_state(self, state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``(n, dirs*width)`` final hidden state, forward then backward."""
        # LSTMs return (h_n, c_n); GRUs return h_n. h_n is (dirs, n, width).
        h_n = state[0] if isinstance(state, tuple) else state
        return h_n.transpose(0, 1).flatten(1)  # (n, dirs*width)

    def _recur(
        self, h: torch.Tensor, x: torch.Tensor, reps: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run the layers: outputs ``(n, T, dirs*width)``, final state, text padding mask."""
        mask = self.text_mask(x)  # (n, L) or None
        final = h  # overwritten by the first layer (depth >= 1)
        if mask is None:
            h = to_time_major_features(h)  # (n, T, features)
            for i, layer in enumerate(self.layers, start=1):
                h, state = layer(h)  # (n, T, width*dirs)
                final = self._final_state(state)
                if reps is not None:
                    reps[f"block{i}"] = final
            return h, final, mask
        if reps is not None:
            reps["embedding"] = masked_mean(h, mask)  # (n, embed_dim)
        lengths = mask.sum(dim=1).cpu()  # (n,) pack_padded_sequence wants them on the CPU
        packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        for i, layer in enumerate(self.layers, start=1):
            packed, state = layer(packed)  # states come back in the batch's own order
            final = self._final_state(state)
            if reps is not None:
                reps[f"block{i}"] = final
        # Zeros at padded positions; total_length keeps T even when every row is short.
        out, _ = pad_packed_sequence(packed, batch_first=True, total_length=x.shape[1])
        return out, final, mask  # (n, L, width*dirs)

    def _read(
        self, out: torch.Tensor, final: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Head input ``(n, head_in)``, and the attention weights ``(n, T)`` when pooled so."""
        if self.readout == "last":
            return final, None
        if self.readout == "all":
            return (out.flatten(1) if mask is None else masked_mean(out, mask)), None
        assert self.attention is not None  # readout == "attention"
        return self.attention(out, mask)  # (n, dirs*width), (n, T)

    def _run_embedded(
        self, h: torch.Tensor, x: torch.Tensor, collect: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reps: dict[str, torch.Tensor] = {}
        out, final, mask = self._recur(h, x, reps if collect else None)
        hidden, _ = self._read(out, final, mask)  # (n, head_in)
        if collect:
            reps["attention_pool" if self.readout == "attention" else "hidden"] = hidden
        return self.head(hidden), reps  # (n, classes)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention-readout weights ``(n, T)`` over time steps (eval mode; 0 on padding).

        Raises
        ------
        ConfigError
            When the model's readout is not ``"attention"``.

        Examples
        --------
        >>> model = build_gru(RNNKnobs(readout="attention"), (1, 5), 2, "sequence")
        >>> model.attention_weights(torch.zeros(3, 1, 5)).shape
        torch.Size([3, 5])
        """
        if self.attention is None:
            raise ConfigError(
                f"this {self.cell} reads out '{self.readout}', so it has no attention weights",
                hint="build it with readout='attention'",
            )
        with inspecting(self):
            out, final, mask = self._recur(self.embed_inputs(x), x, None)
            _, weights = self._read(out, final, mask)
        assert weights is not None
        return weights  # (n, T)


def _build(
    cell: CellType,
    knobs: RNNKnobs,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: Modality,
    vocab_size: int,
) -> RecurrentNet:
    """Build a :class:`RecurrentNet` after checking the input layout."""
    check_input_shape(cell, input_shape, modality)
    if modality == "text":
        check_vocab_size(cell, vocab_size)
        embedding = TokenEmbedding(vocab_size, knobs.embed_dim)
        (steps,) = input_shape
        return RecurrentNet(cell, steps, knobs.embed_dim, num_classes, knobs, embedding)
    if modality == "sequence":
        channels, steps = input_shape
        features = channels
    else:
        channels, steps, width = input_shape
        features = channels * width
    return RecurrentNet(cell, steps, features, num_classes, knobs)


@family(
    "lstm",
    kind="torch",
    modalities=("sequence", "image", "text"),
    knobs=RNNKnobs,
    description="stacked (bidirectional) LSTM over time steps (image rows, tokens), linear head",
)
def build_lstm(
    knobs: RNNKnobs,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: Modality,
    *,
    vocab_size: int = 0,
) -> RecurrentNet:
    """Build an LSTM :class:`RecurrentNet` (``vocab_size``: text only)."""
    return _build("lstm", knobs, input_shape, num_classes, modality, vocab_size)


@family(
    "gru",
    kind="torch",
    modalities=("sequence", "image", "text"),
    knobs=RNNKnobs,
    description="stacked (bidirectional) GRU over time steps (image rows, tokens), linear head",
)
def build_gru(
    knobs: RNNKnobs,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: Modality,
    *,
    vocab_size: int = 0,
) -> RecurrentNet:
    """Build a GRU :class:`RecurrentNet` (``vocab_size``: text only)."""
    return _build("gru", knobs, input_shape, num_classes, modality, vocab_size)
