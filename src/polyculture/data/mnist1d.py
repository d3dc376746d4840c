"""MNIST-1D (Greydanus & Kobak 2020), generated offline with the ``mnist1d`` package.

We call ``make_dataset(get_dataset_args())`` directly: the package's download helper tries the
network and writes a pickle into the working directory. ``make_dataset`` reseeds Python's and
NumPy's global random generators, so we restore the caller's state afterwards.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from polyculture.data.builders import RawData, dataset

PUBLISHED_ACCURACY = {
    # MNIST-1D README, default 4000/1000 split; classical baselines share the linear/forest rows.
    "linear": 0.32,
    "logreg": 0.32,
    "mlp": 0.68,
    "cnn": 0.94,
    "gru": 0.91,
    "random_forest": 0.80,
}


class Mnist1dOptions(BaseModel):
    """Options of the generator (defaults reproduce the published dataset).

    ``num_samples`` examples are split ``train_split`` / rest into train and test.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_samples: int = Field(5000, ge=20)
    train_split: float = Field(0.8, gt=0.0, lt=1.0)
    seed: int = 42
    corr_noise_scale: float = Field(0.25, ge=0.0)
    iid_noise_scale: float = Field(0.02, ge=0.0)
    max_translation: int = Field(48, ge=0)
    shuffle_seq: bool = False


@dataset(
    "mnist1d",
    description="MNIST-1D: 10-class 1-D signals of length 40, generated offline (4000/1000 split)",
    modality="sequence",
    options=Mnist1dOptions,
)
def build_mnist1d(path: Path | None, options: Mnist1dOptions) -> RawData:
    """Generate MNIST-1D with ``options``; the caller's global RNG state is left unchanged.

    Examples
    --------
    >>> raw = build_mnist1d(None, Mnist1dOptions(num_samples=100))
    >>> raw.x_train.shape, raw.x_test.shape
    ((80, 1, 40), (20, 1, 40))
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for key, value in options.model_dump().items():
        setattr(args, key, value)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        generated = make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    is_default = options == Mnist1dOptions()
    return RawData(
        modality="sequence",
        class_names=tuple(str(digit) for digit in range(10)),
        x_train=generated["x"][:, None, :].astype(np.float32),  # (n, 1, 40)
        y_train=generated["y"].astype(np.int64),
        x_test=generated["x_test"][:, None, :].astype(np.float32),
        y_test=generated["y_test"].astype(np.int64),
        reference_accuracy=PUBLISHED_ACCURACY if is_default else {},
        reference_source="MNIST-1D README (Greydanus & Kobak 2020)" if is_default else "",
    )
