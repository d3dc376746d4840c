"""``seed_cnn``: the fixed small CNN used to study seed-to-seed variation on images.

Exactly ``Conv2d(C, 32, 3) -> ReLU -> MaxPool2d(2) -> Flatten -> Linear(.., 64) -> ReLU ->
Linear(64, classes)``, with no knobs, so that runs differ only in their random seed.
"""

from __future__ import annotations

import torch
from torch import nn

from polyculture.data.task import Modality
from polyculture.errors import ConfigError
from polyculture.zoo.base import Knobs, family
from polyculture.zoo.common import StagedModel, check_input_shape, pool_representation

CONV_CHANNELS = 32
HIDDEN_UNITS = 64


class SeedCNNKnobs(Knobs):
    """``seed_cnn`` has no knobs: its architecture is fixed on purpose."""


class SeedCNN(StagedModel):
    """The fixed seed-study CNN; its layers are ``self.net`` in order.

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` with ``H, W >= 4`` (the 3x3 valid convolution and 2x2 pool need them).
    num_classes
        Number of classes.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        flat = CONV_CHANNELS * ((height - 2) // 2) * ((width - 2) // 2)
        self.net = nn.Sequential(
            nn.Conv2d(channels, CONV_CHANNELS, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(flat, HIDDEN_UNITS),
            nn.ReLU(),
            nn.Linear(HIDDEN_UNITS, num_classes),
        )

    def _run(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reps: dict[str, torch.Tensor] = {}
        conv = self.net[2](self.net[1](self.net[0](x)))  # (n, 32, (H-2)//2, (W-2)//2)
        hidden = self.net[5](self.net[4](self.net[3](conv)))  # (n, 64)
        if collect:
            reps["block1"] = pool_representation(conv)  # (n, <=512): pooled to at most 4x4
            reps["hidden"] = hidden
        return self.net[6](hidden), reps  # (n, classes)


@family(
    "seed_cnn",
    kind="torch",
    modalities=("image",),
    knobs=SeedCNNKnobs,
    description="fixed conv(32,3x3)-pool-dense(64) CNN for seed-variation studies",
)
def build_seed_cnn(
    knobs: SeedCNNKnobs, input_shape: tuple[int, ...], num_classes: int, modality: Modality
) -> SeedCNN:
    """Build a :class:`SeedCNN`."""
    check_input_shape("seed_cnn", input_shape, modality)
    if min(input_shape[1:]) < 4:
        raise ConfigError(
            f"model 'seed_cnn' needs images of at least 4x4 pixels, got {input_shape[1:]}",
            hint="use a larger image dataset or another model family",
        )
    return SeedCNN(input_shape, num_classes)
