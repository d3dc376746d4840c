"""The Task: what every dataset builder produces and every later stage consumes.

A task holds its splits as tensors (``x`` float32 with shape ``(n, *input_shape)``, ``y`` int64
class indices with shape ``(n,)``), optional per-instance group attributes, the modality, class
names and a cleaning log that says what was removed and why.

Input layout by modality (``input_shape`` excludes the batch dimension):

* ``sequence``: ``(channels, length)``, e.g. MNIST-1D is ``(1, 40)``
* ``image``: ``(channels, height, width)``, e.g. Fashion-MNIST is ``(1, 28, 28)``
* ``tabular``: ``(features,)``
* ``text``: ``(max_length,)`` int64 token ids of the task's vocabulary (``0`` pads, ``1`` is an
  unknown word); the raw strings stay in ``Split.texts`` for encoders with their own tokenizer
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch

Modality = Literal["sequence", "image", "tabular", "text"]
MODALITIES: tuple[Modality, ...] = ("sequence", "image", "tabular", "text")

PAD_ID = 0
"""Token id of padding in text tasks."""
UNKNOWN_ID = 1
"""Token id of words outside the vocabulary in text tasks."""


def join_groups(groups: pd.DataFrame) -> pd.Series:
    """Each row's group attributes as one label (intersectional groups), joined by ``" x "``."""
    return groups.astype(str).agg(" x ".join, axis=1)


@dataclass(frozen=True)
class Split:
    """One split of a task.

    Attributes
    ----------
    x
        Features, float32, shape ``(n, *input_shape)``; int64 token ids ``(n, max_length)`` for
        text.
    y
        Class indices, int64, shape ``(n,)``.
    groups
        Per-instance group attributes (one column per attribute, string values), or ``None``.
    index
        Instance ids within the split's source (row numbers in the original file), ``(n,)``.
    texts
        The raw strings of a text task, one per row, else ``None``.
    """

    x: torch.Tensor
    y: torch.Tensor
    groups: pd.DataFrame | None = None
    index: torch.Tensor | None = None
    texts: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, rows: torch.Tensor) -> Split:
        """The rows ``rows`` (an index tensor) of this split."""
        groups = None
        if self.groups is not None:
            groups = self.groups.iloc[rows.numpy()].reset_index(drop=True)
        index = self.instance_ids()[rows]
        texts = None if self.texts is None else tuple(self.texts[i] for i in rows.tolist())
        return Split(self.x[rows], self.y[rows], groups, index, texts)

    def group_labels(self) -> np.ndarray | None:
        """One label per instance, its group attributes joined by ``" x "`` (None without groups).

        Examples
        --------
        >>> groups = pd.DataFrame({"sex": ["f", "m"], "age": ["old", "young"]})
        >>> Split(torch.zeros(2, 1), torch.zeros(2).long(), groups).group_labels().tolist()
        ['f x old', 'm x young']
        """
        return None if self.groups is None else join_groups(self.groups).to_numpy()

    def instance_ids(self) -> torch.Tensor:
        """Stable instance ids: ``index`` when set, else ``0..n-1``."""
        return self.index if self.index is not None else torch.arange(len(self))


@dataclass(frozen=True)
class CleaningStep:
    """One line of the cleaning log: ``removed`` rows of ``split`` dropped by ``step``."""

    split: str
    step: str
    removed: int
    detail: str = ""


@dataclass(frozen=True)
class Task:
    """A classification task ready to train on.

    Attributes
    ----------
    name
        Dataset name as registered (``mnist1d``, ``idx``, ...).
    modality
        ``sequence``, ``image`` or ``tabular``.
    class_names
        One name per class; ``y`` values index this list.
    train, val, test
        The three splits; ``val`` is carved from the training data with the data seed.
    shifted
        Shifted test sets by name (``test_noise``, ``test_translate``, ...); same instances as
        ``test``.
    cleaning
        What was removed while loading, per split and step.
    feature_names
        Column names for tabular tasks, else empty.
    reference_accuracy
        Published test accuracies by model family, where a publication gives one.
    vocabulary
        Text tasks: the token of each id (``vocabulary[0]`` is padding, ``[1]`` unknown).
    answer_length
        Rows per answer: ``1`` for ordinary classification; ``L > 1`` when each answer is a
        sequence of ``L`` class tokens (the digits of a sum), one row per position. Row ``i`` of a
        split is then position ``instance_ids()[i] % L`` of problem ``instance_ids()[i] // L``;
        exact match, edit distance and the answer's log-likelihood score whole problems.
    """

    name: str
    modality: Modality
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    shifted: dict[str, Split] = field(default_factory=dict)
    cleaning: tuple[CleaningStep, ...] = ()
    feature_names: tuple[str, ...] = ()
    reference_accuracy: dict[str, float] = field(default_factory=dict)
    reference_source: str = ""
    vocabulary: tuple[str, ...] = ()
    answer_length: int = 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example (without the batch dimension)."""
        return tuple(self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def eval_splits(self) -> Iterator[tuple[str, Split]]:
        """Every split a member is evaluated on: ``val``, ``test`` and the shifted test sets."""
        yield "val", self.val
        yield "test", self.test
        yield from self.shifted.items()

    def fingerprint(self) -> str:
        """Hash (12 hex characters) of the task's content: every split's inputs, labels and ids.

        Member ids use it, so an edited data file retrains its members while the same data read
        from another path does not.
        """
        header = f"{self.modality}|{self.class_names}"
        if self.answer_length != 1:  # only where set, so other tasks keep their fingerprints
            header += f"|answer_length={self.answer_length}"
        digest = hashlib.sha256(header.encode())
        for name, split in [("train", self.train), *self.eval_splits()]:
            digest.update(name.encode())
            for tensor in (split.x, split.y, split.instance_ids()):
                digest.update(tensor.contiguous().numpy().tobytes())
            if split.texts is not None:
                digest.update("\x00".join(split.texts).encode())
        return digest.hexdigest()[:12]

    def summary(self) -> dict[str, object]:
        """Sizes and metadata as plain values (for the resolved config and the report)."""
        return {
            "name": self.name,
            "modality": self.modality,
            "input_shape": list(self.input_shape),
            "classes": list(self.class_names),
            "sizes": {
                name: len(split) for name, split in [("train", self.train), *self.eval_splits()]
            },
            "group_attributes": (
                list(self.train.groups.columns) if self.train.groups is not None else []
            ),
            "cleaning": [vars(step) for step in self.cleaning],
            "vocabulary_size": len(self.vocabulary),
            "answer_length": self.answer_length,
        }
