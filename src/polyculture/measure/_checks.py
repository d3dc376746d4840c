"""Shared input checks for the agreement, homogenization, diversity and paired measures.

Every public measure takes NumPy arrays or torch tensors. The checks here turn either into a torch
tensor on the caller's device (so the big matrix products run where the data already lives) or into
a NumPy array, and raise :class:`~polyculture.errors.MeasureInputError` with a message that names
the argument, what is wrong with it and how to fix it.

Undefined values (0/0 in a measure's formula) are not errors: they come back as NaN, and scalar
measures also emit a :class:`DegenerateMeasureWarning` that says why.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from polyculture.errors import MeasureInputError

Array = Any
"""What the measures accept: a NumPy array, a torch tensor, or anything ``np.asarray`` takes."""

CORRECT_HINT = "pass a 0/1 (or boolean) matrix, e.g. (predictions == labels[:, None])"


class DegenerateMeasureWarning(RuntimeWarning):
    """A measure is undefined for this input (0/0 in its formula) and was returned as NaN."""


def undefined(reason: str) -> float:
    """Warn with ``reason`` and return NaN: the one way a scalar measure reports 0/0.

    Examples
    --------
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     undefined("no pairs")
    nan
    """
    warnings.warn(reason, DegenerateMeasureWarning, stacklevel=3)
    return float("nan")


def as_tensor(x: Array, name: str) -> torch.Tensor:
    """``x`` as a torch tensor, on its own device when it already is one (no copy for NumPy).

    Examples
    --------
    >>> as_tensor(np.array([1, 0]), "x").tolist()
    [1, 0]
    """
    if isinstance(x, torch.Tensor):
        return x.detach()
    array = np.asarray(x)
    if array.dtype == object or array.dtype.kind in "USV":
        raise MeasureInputError(
            f"{name} must be numeric; got an array of dtype {array.dtype}",
            hint="encode classes as integer indices (np.unique(..., return_inverse=True))",
        )
    # torch shares memory only with writeable, native-endian arrays with non-negative strides
    # (numpy calls a reversed length-1 array contiguous, so check the strides themselves).
    if (
        not array.flags.writeable
        or not array.dtype.isnative
        or not array.flags.c_contiguous
        or any(stride < 0 for stride in array.strides)
    ):
        array = np.array(array, dtype=array.dtype.newbyteorder("="), order="C", copy=True)
    return torch.from_numpy(array)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """A tensor as a NumPy array on the CPU (a view when it is already there)."""
    return x.detach().cpu().numpy()


def _finite(t: torch.Tensor, name: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise MeasureInputError(
            f"{name} holds NaN or infinite values",
            hint="drop or impute the instances with missing predictions before measuring",
        )


def _binary(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dtype == torch.bool:
        return t
    if t.is_complex():
        raise MeasureInputError(f"{name} must be real 0/1 values; got dtype {t.dtype}")
    _finite(t, name)
    bad = (t != 0) & (t != 1)
    if bool(bad.any()):
        raise MeasureInputError(
            f"{name} must hold only 0/1 (True/False) values; found {t[bad].flatten()[0].item()!r}",
            hint=CORRECT_HINT,
        )
    return t != 0


def binary_matrix(x: Array, name: str = "correct", *, min_members: int = 1) -> torch.Tensor:
    """Check a correctness matrix ``(n instances, m members)`` and return it as a bool tensor.

    Raises :class:`MeasureInputError` unless ``x`` is 2-D with at least one instance and
    ``min_members`` columns, free of NaN, and holds only 0/1 values.

    Examples
    --------
    >>> binary_matrix(np.array([[1, 0], [1, 1]])).tolist()
    [[True, False], [True, True]]
    """
    t = as_tensor(x, name)
    if t.ndim != 2:
        raise MeasureInputError(
            f"{name} must be a 2-D (instances, members) matrix; got shape {tuple(t.shape)}",
            hint="stack one column per member, e.g. np.column_stack([correct_a, correct_b])",
        )
    if t.shape[0] == 0:
        raise MeasureInputError(f"{name} has no instances (shape {tuple(t.shape)})")
    if t.shape[1] < min_members:
        raise MeasureInputError(
            f"{name} needs at least {min_members} member column(s); got {t.shape[1]}",
            hint="instances are rows and members are columns; transpose if you passed (m, n)",
        )
    return _binary(t, name)


def binary_pair(a: Array, b: Array, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Two 1-D 0/1 vectors over the same non-empty set of instances, as bool arrays.

    Examples
    --------
    >>> binary_pair([1, 0], [True, True], ("a", "b"))[0].tolist()
    [True, False]
    """
    ta, tb = (_binary(_vector(x, name), name) for x, name in zip((a, b), names, strict=True))
    _same_length(ta, tb, names)
    return to_numpy(ta), to_numpy(tb)


def label_vectors(*pairs: tuple[Array, str]) -> list[np.ndarray]:
    """1-D integer label vectors of one common non-zero length, each given as ``(array, name)``.

    Integral float arrays are accepted (and converted); NaN, fractions and negatives are not.

    Examples
    --------
    >>> [v.tolist() for v in label_vectors(([0, 2], "a"), (np.array([1.0, 2.0]), "b"))]
    [[0, 2], [1, 2]]
    """
    tensors = [_labels(_vector(x, name), name) for x, name in pairs]
    for t, (_, name) in zip(tensors[1:], pairs[1:], strict=True):
        _same_length(tensors[0], t, (pairs[0][1], name))
    return [to_numpy(t) for t in tensors]


def class_matrix(predictions: Array, labels: Array) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class indices ``(n, m)`` and true labels ``(n,)`` as int64 tensors on one device.

    Examples
    --------
    >>> pred, y = class_matrix(np.array([[0, 1], [1, 1]]), np.array([0, 1]))
    >>> tuple(pred.shape), y.tolist()
    ((2, 2), [0, 1])
    """
    pred = as_tensor(predictions, "predictions")
    if pred.ndim != 2 or pred.shape[0] == 0 or pred.shape[1] == 0:
        raise MeasureInputError(
            f"predictions must be a non-empty 2-D (instances, members) matrix of class indices; "
            f"got shape {tuple(pred.shape)}",
            hint="stack one column of predicted classes per member: np.column_stack([...])",
        )
    pred = _labels(pred, "predictions")
    y = _labels(_vector(labels, "labels"), "labels").to(pred.device)
    if len(y) != pred.shape[0]:
        raise MeasureInputError(
            f"labels has {len(y)} instances but predictions has {pred.shape[0]} rows",
            hint="instances are rows of predictions; pass labels for the same instances",
        )
    return pred, y


def check_bootstrap(n_resamples: int, confidence: float) -> int:
    """``n_resamples`` as an int; raise unless it is ``>= 1`` and ``0 < confidence < 1``.

    Examples
    --------
    >>> check_bootstrap(2000.0, 0.95)
    2000
    """
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise MeasureInputError(
            f"n_resamples must be a positive integer; got {n_resamples!r}",
            hint="use the default 2000, or at least a few hundred for a stable CI",
        )
    if not 0 < confidence < 1:
        raise MeasureInputError(
            f"confidence must lie strictly between 0 and 1; got {confidence!r}",
            hint="e.g. 0.95 for a 95% interval",
        )
    return int(n_resamples)


def _vector(x: Array, name: str) -> torch.Tensor:
    t = as_tensor(x, name)
    if t.ndim != 1:
        raise MeasureInputError(
            f"{name} must be a 1-D vector over instances; got shape {tuple(t.shape)}",
            hint="pass one member's column, e.g. correct[:, j]",
        )
    if len(t) == 0:
        raise MeasureInputError(f"{name} has no instances")
    return t


def _labels(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dtype == torch.bool:
        return t.long()
    if t.is_floating_point():
        _finite(t, name)
        if not bool((t == t.round()).all()):
            raise MeasureInputError(
                f"{name} must hold class indices; found fractional values",
                hint="pass predicted classes (proba.argmax(1)), not probabilities",
            )
    elif t.is_complex():
        raise MeasureInputError(f"{name} must hold class indices; got dtype {t.dtype}")
    t = t.long()
    if bool((t < 0).any()):
        raise MeasureInputError(
            f"{name} holds negative class indices (min {int(t.min())})",
            hint="encode classes as 0..K-1, e.g. with np.unique(..., return_inverse=True)",
        )
    return t


def _same_length(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if len(a) != len(b):
        raise MeasureInputError(
            f"{names[0]} has {len(a)} instances but {names[1]} has {len(b)}",
            hint="both members must be scored on the same instances, in the same order",
        )
