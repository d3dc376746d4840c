"""data: dataset builders behind one registry, producing :class:`~polyculture.data.task.Task`.

Importing this package registers the built-in datasets (``mnist1d``, ``idx``, ``digits``, ``csv``,
``text_csv``, ``phrasebank``, and the synthetic ``modular_addition``, ``addition`` and
``sparse_parity``).
"""

from polyculture.data import digits, idx, mnist1d, synthetic, tabular, text  # noqa: F401  (registers datasets)
from polyculture.data.augment import DEFAULT_SHIFTS, Perturbation, perturb
from polyculture.data.builders import DATASETS, DataSpec, RawData, build_task, dataset
from polyculture.data.task import MODALITIES, CleaningStep, Modality, Split, Task

__all__ = [
    "DATASETS",
    "DEFAULT_SHIFTS",
    "MODALITIES",
    "CleaningStep",
    "DataSpec",
    "Modality",
    "Perturbation",
    "RawData",
    "Split",
    "Task",
    "build_task",
    "dataset",
    "perturb",
]
