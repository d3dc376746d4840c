"""``lstm`` and ``gru``: recurrent networks over time steps, sharing one implementation.

A sequence ``(n, C, L)`` is read as ``L`` time steps of ``C`` features; an image ``(n, C, H, W)``
as ``H`` time steps (rows) of ``C * W`` features. Layers are kept as a list of single-layer
recurrent modules (rather than one ``num_layers=depth`` module) so that every layer's final
hidden state can be exposed as a representation.

With ``readout="all"`` the head reads the outputs at every time step, flattened, as the GRU of
the MNIST-1D paper does; with ``readout="last"`` it reads the final hidden state(s) only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from polyculture.data.task import Modality
from polyculture.zoo.base import Knobs, family
from polyculture.zoo.common import Depth, StagedModel, Width, check_input_shape

CellType = Literal["lstm", "gru"]


class RNNKnobs(Knobs):
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
        ``"all"``: the head reads every time step's output, flattened; ``"last"``: the head
        reads the last layer's final hidden state(s).
    """

    width: Width = Field(32, description="hidden size per direction")
    depth: Depth = Field(1, description="number of stacked recurrent layers")
    bidirectional: bool = Field(True, description="also read the sequence backwards")
    readout: Literal["all", "last"] = Field(
        "all", description="head reads all time steps ('all') or the final state ('last')"
    )


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


class RecurrentNet(StagedModel):
    """Stacked single-layer LSTMs or GRUs with a linear head.

    Parameters
    ----------
    cell
        ``"lstm"`` or ``"gru"``.
    steps
        Number of time steps ``T``.
    features
        Features per time step.
    num_classes
        Number of classes.
    knobs
        Width, depth, direction and readout.
    """

    def __init__(
        self, cell: CellType, steps: int, features: int, num_classes: int, knobs: RNNKnobs
    ) -> None:
        super().__init__()
        rnn_type = nn.LSTM if cell == "lstm" else nn.GRU
        dirs = 2 if knobs.bidirectional else 1
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
        head_in = knobs.width * dirs * (steps if knobs.readout == "all" else 1)
        self.head = nn.Linear(head_in, num_classes)

    def _run(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reps: dict[str, torch.Tensor] = {}
        h = to_time_major_features(x)  # (n, T, features)
        final = h  # overwritten by the first layer (depth >= 1)
        for i, layer in enumerate(self.layers, start=1):
            h, state = layer(h)  # (n, T, width*dirs)
            # LSTMs return (h_n, c_n); GRUs return h_n. h_n is (dirs, n, width).
            h_n = state[0] if self.cell == "lstm" else state
            final = h_n.transpose(0, 1).flatten(1)  # (n, dirs*width): forward then backward
            if collect:
                reps[f"block{i}"] = final
        hidden = h.flatten(1) if self.readout == "all" else final  # (n, head_in)
        if collect:
            reps["hidden"] = hidden
        return self.head(hidden), reps  # (n, classes)


def _build(
    cell: CellType,
    knobs: RNNKnobs,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: Modality,
) -> RecurrentNet:
    """Build a :class:`RecurrentNet` after checking the input layout."""
    check_input_shape(cell, input_shape, modality)
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
    modalities=("sequence", "image"),
    knobs=RNNKnobs,
    description="stacked (bidirectional) LSTM over time steps (image rows), linear head",
)
def build_lstm(
    knobs: RNNKnobs, input_shape: tuple[int, ...], num_classes: int, modality: Modality
) -> RecurrentNet:
    """Build an LSTM :class:`RecurrentNet`."""
    return _build("lstm", knobs, input_shape, num_classes, modality)


@family(
    "gru",
    kind="torch",
    modalities=("sequence", "image"),
    knobs=RNNKnobs,
    description="stacked (bidirectional) GRU over time steps (image rows), linear head",
)
def build_gru(
    knobs: RNNKnobs, input_shape: tuple[int, ...], num_classes: int, modality: Modality
) -> RecurrentNet:
    """Build a GRU :class:`RecurrentNet`."""
    return _build("gru", knobs, input_shape, num_classes, modality)
