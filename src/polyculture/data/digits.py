"""scikit-learn's bundled 8x8 handwritten digits (1797 images), split 75/25 with a fixed seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.datasets import load_digits

from polyculture.data.builders import RawData, dataset, seeded_split


class DigitsOptions(BaseModel):
    """Share of the 1797 images used for testing, and the seed of that split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0, lt=2**32)


@dataset(
    "digits",
    description="scikit-learn's bundled 8x8 digits (1797 images, 10 classes), no files needed",
    modality="image",
    options=DigitsOptions,
)
def build_digits(path: Path | None, options: DigitsOptions) -> RawData:
    """Load the bundled digits as images ``(n, 1, 8, 8)`` scaled to about unit variance.

    Examples
    --------
    >>> build_digits(None, DigitsOptions()).x_train.shape
    (1347, 1, 8, 8)
    """
    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None]  # (n, 1, 8, 8) in [0, 1]
    labels = bunch.target.astype(np.int64)
    train_rows, test_rows = seeded_split(labels, options.test_fraction, options.split_seed)
    mean, std = images[train_rows].mean(), images[train_rows].std()
    images = (images - mean) / std
    return RawData(
        modality="image",
        class_names=tuple(str(d) for d in range(10)),
        x_train=images[train_rows],
        y_train=labels[train_rows],
        x_test=images[test_rows],
        y_test=labels[test_rows],
        index_train=train_rows,
        index_test=test_rows,
    )
