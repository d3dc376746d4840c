"""Perturbations of input batches: augmentation while training, and shifted test sets.

The same functions serve both uses, so a model trained with ``translate=3`` augmentation and a test
set shifted by ``translate=6`` see the same kind of change. Every function takes an explicit
``torch.Generator`` so results depend only on the seed.

Layouts follow :mod:`polyculture.data.task`: sequences ``(n, C, L)``, images ``(n, C, H, W)``,
tabular ``(n, d)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from polyculture.data.task import Modality


class Perturbation(BaseModel):
    """Strengths of the perturbations applied to a batch (0 disables one).

    Attributes
    ----------
    noise
        Standard deviation of added Gaussian noise, in units of the (standardized) inputs.
    translate
        Largest shift, in positions (sequences) or pixels (images), in each direction; zero fill.
    rotate
        Largest rotation in degrees (images only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    noise: float = Field(0.0, ge=0.0)
    translate: int = Field(0, ge=0)
    rotate: float = Field(0.0, ge=0.0, le=180.0)

    def is_identity(self) -> bool:
        """True when every strength is zero."""
        return self.noise == 0 and self.translate == 0 and self.rotate == 0


def perturb(
    x: torch.Tensor, modality: Modality, strength: Perturbation, generator: torch.Generator
) -> torch.Tensor:
    """Apply ``strength`` to the batch ``x`` (a new tensor; ``x`` is not changed).

    Translation and rotation apply to sequences and images only; noise to every modality but
    text, whose token ids have no metric to perturb in (adversarial training perturbs text in
    embedding space instead, see :mod:`polyculture.train.adversarial`).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.zeros(4, 1, 10)
    >>> perturb(x, "sequence", Perturbation(noise=1.0), g).std() > 0
    tensor(True)
    """
    if modality == "text":
        return x
    if strength.translate and modality in ("sequence", "image"):
        x = translate(x, strength.translate, generator)
    if strength.rotate and modality == "image":
        x = rotate(x, strength.rotate, generator)
    if strength.noise:
        x = x + strength.noise * torch.randn(x.shape, generator=generator, device="cpu").to(x)
    return x


def _shift_last_dim(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift each example's last axis by ``shifts[i]`` positions with zero fill."""
    length = x.shape[-1]
    positions = torch.arange(length, device=x.device)  # (L,)
    source = positions.unsqueeze(0) - shifts.unsqueeze(1)  # (n, L): where each output reads from
    valid = (source >= 0) & (source < length)
    source = source.clamp(0, length - 1)
    view = [x.shape[0]] + [1] * (x.dim() - 2) + [length]
    gathered = torch.gather(x, -1, source.view(view).expand_as(x))
    return gathered * valid.view(view).to(x.dtype)


def translate(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each example by a random integer in ``[-max_shift, max_shift]`` per spatial axis.

    Sequences ``(n, C, L)`` shift along ``L``; images ``(n, C, H, W)`` along ``H`` and ``W``.
    """
    n = x.shape[0]
    out = x
    spatial_axes = 1 if x.dim() == 3 else 2
    for axis in range(spatial_axes):
        shifts = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator).to(x.device)
        if axis == 0:
            out = _shift_last_dim(out, shifts)
        else:  # shift rows: move H to the last axis, shift, move back
            out = _shift_last_dim(out.transpose(-1, -2), shifts).transpose(-1, -2)
    return out


def rotate(x: torch.Tensor, max_degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each image ``(n, C, H, W)`` by a random angle in ``[-max_degrees, max_degrees]``."""
    n = x.shape[0]
    angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)  # (n, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


DEFAULT_SHIFTS: dict[Modality, dict[str, Perturbation]] = {
    "sequence": {
        "test_noise": Perturbation(noise=0.5),
        "test_translate": Perturbation(translate=6),
    },
    "image": {
        "test_noise": Perturbation(noise=0.5),
        "test_translate": Perturbation(translate=3),
        "test_rotate": Perturbation(rotate=20.0),
    },
    "tabular": {"test_noise": Perturbation(noise=0.5)},
    "text": {},
}
"""Shifted test sets built for each modality unless the study names its own."""
