"""MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST, ...) from a folder, gzipped or raw.

The folder holds the four files of the original distribution::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

Each file is checked before use: magic number (2051 for images, 2049 for labels), the header's
dimensions against the file size, and image/label counts against each other. A truncated or corrupt
gzip stream is reported with the file's name.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from polyculture.data.builders import RawData, dataset
from polyculture.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


class IdxOptions(BaseModel):
    """Options of the IDX reader.

    Attributes
    ----------
    class_names
        Names of the classes in label order; default ``"0".."9"`` (digits).
    train_limit
        Use only the first ``train_limit`` training images (quick studies); ``None`` uses all.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    class_names: list[str] | None = None
    train_limit: int | None = Field(None, gt=0)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes, checking its magic number and size.

    Parameters
    ----------
    path
        The ``.gz`` or raw file.
    magic
        Expected magic number: 2051 for images, 2049 for labels.

    Returns
    -------
    numpy.ndarray
        uint8 array shaped by the header, e.g. ``(n, 28, 28)`` or ``(n,)``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> _ = f.write_bytes(struct.pack(">II", 2049, 3) + bytes([1, 2, 3]))
    >>> read_idx(f, 2049)
    array([1, 2, 3], dtype=uint8)
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                payload = stream.read()
        else:
            payload = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
        raise DataError(
            f"cannot read '{path}': {err}",
            hint="the file is truncated or corrupt; download it again",
        ) from None
    if len(payload) < 8:
        raise DataError(f"'{path}' is too short to be an IDX file", hint="download it again")
    found_magic = struct.unpack(">I", payload[:4])[0]
    if found_magic != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise DataError(
            f"'{path}' has magic number {found_magic}, expected {magic} for IDX {kind}",
            hint="check that the file is an uncorrupted MNIST-style IDX file of that kind",
        )
    ndim = payload[3]
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DataError(f"'{path}' is too short for its IDX header", hint="download it again")
    dims = struct.unpack(f">{ndim}I", payload[4:header])
    expected = header + int(np.prod(dims))
    if len(payload) != expected:
        raise DataError(
            f"'{path}' holds {len(payload)} bytes but its header {tuple(dims)} needs {expected}",
            hint="the file is truncated or corrupt; download it again",
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"'{folder}' has no {stem}[.gz]",
        hint="point data.path at a folder with the four MNIST-style IDX files",
    )


def _read_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"), IMAGES_MAGIC)
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"), LABELS_MAGIC)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{prefix} files in '{folder}' have unexpected dimensions")
    if len(images) != len(labels):
        raise DataError(
            f"'{folder}': {len(images)} {prefix} images but {len(labels)} {prefix} labels",
            hint="the image and label files must come from the same release",
        )
    return images, labels


@dataset(
    "idx",
    description="MNIST / Fashion-MNIST IDX files (gz or raw) from a folder given as data.path",
    modality="image",
    options=IdxOptions,
    needs_path=True,
)
def build_idx(path: Path | None, options: IdxOptions) -> RawData:
    """Read the four IDX files of ``path`` as images ``(n, 1, H, W)``, standardized on train.

    Examples
    --------
    >>> build_idx(Path("/nonexistent"), IdxOptions())
    Traceback (most recent call last):
    ...
    polyculture.errors.DataError: '/nonexistent' is not a folder; ...
    """
    if path is None or not path.is_dir():
        raise DataError(f"'{path}' is not a folder", hint="data.path must be the IDX folder")
    train_images, train_labels = _read_pair(path, "train")
    test_images, test_labels = _read_pair(path, "t10k")
    if options.train_limit is not None:
        train_images = train_images[: options.train_limit]
        train_labels = train_labels[: options.train_limit]
    highest = int(max(train_labels.max(initial=0), test_labels.max(initial=0)))
    names = tuple(options.class_names or [str(c) for c in range(max(10, highest + 1))])
    if highest >= len(names):
        raise DataError(
            f"'{path}' has label {highest} but only {len(names)} class names are given",
            hint="list every class in data.options.class_names",
        )
    scaled_train = train_images.astype(np.float32) / 255.0
    mean, std = float(scaled_train.mean()), float(scaled_train.std()) or 1.0
    return RawData(
        modality="image",
        class_names=names,
        x_train=((scaled_train - mean) / std)[:, None],  # (n, 1, H, W)
        y_train=train_labels.astype(np.int64),
        x_test=((test_images.astype(np.float32) / 255.0 - mean) / std)[:, None],
        y_test=test_labels.astype(np.int64),
    )
