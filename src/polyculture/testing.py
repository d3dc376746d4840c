"""Conformance checks for plugin authors: the rules every dataset, family and metric follows.

Run them in your own tests::

    from polyculture.testing import check_dataset, check_family, check_metric

    def test_my_plugin():
        check_dataset("my_dataset")
        check_family("my_family")
        check_metric("my_metric")

Each check raises :class:`~polyculture.errors.ConformanceError` whose message names the rule
broken (e.g. ``rule 'logits shape'``) and what was found; the built-in entries pass all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from polyculture.data.builders import DATASETS, DataSpec, RawData, build_task, validate_options
from polyculture.data.task import MODALITIES, Modality, Split, Task
from polyculture.errors import ConformanceError
from polyculture.measure.performance import METRICS, Metric
from polyculture.zoo.base import FAMILIES, ClassicalModel, Family, ModelSpec, ZooModel, create_model

CHECK_CLASSES = 3
CHECK_ROWS = 24
_SHAPES: dict[str, tuple[int, ...]] = {
    "sequence": (1, 16),
    "image": (1, 8, 8),
    "tabular": (6,),
    "text": (10,),
}
_WORDS = ("up", "down", "flat", "gain", "loss", "rate", "cut", "rise", "fall", "hold")


def _fail(rule: str, what: str, found: str, hint: str | None = None) -> ConformanceError:
    return ConformanceError(f"{what} breaks rule '{rule}': {found}", hint=hint)


# ---------------------------------------------------------------------------------------------
# Families


def check_task(modality: Modality, seed: int = 0) -> Task:
    """A tiny synthetic task of ``modality`` (3 classes, 24 rows per split) for family checks.

    Examples
    --------
    >>> check_task("image").input_shape
    (1, 8, 8)
    """
    if modality not in MODALITIES:
        raise ConformanceError(f"unknown modality {modality!r}", hint=f"use one of {MODALITIES}")
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(CHECK_ROWS) % CHECK_CLASSES
    vocabulary: tuple[str, ...] = ()
    texts = None
    if modality == "text":
        vocabulary = ("<pad>", "<unk>", *_WORDS)
        x = torch.randint(2, len(vocabulary), (CHECK_ROWS, _SHAPES["text"][0]), generator=generator)
        x[:, -2:] = 0  # some padding, as real text rows have
        texts = tuple(" ".join(vocabulary[int(t)] for t in row if t > 0) for row in x)
    else:
        x = torch.randn(CHECK_ROWS, *_SHAPES[modality], generator=generator)
    split = Split(x, y, None, torch.arange(CHECK_ROWS), texts)
    return Task(
        name=f"check-{modality}",
        modality=modality,
        class_names=tuple(f"c{i}" for i in range(CHECK_CLASSES)),
        train=split,
        val=split,
        test=split,
        vocabulary=vocabulary,
    )


def check_family(
    family: str | Family, modalities: tuple[Modality, ...] | None = None, **knobs: Any
) -> None:
    """Check a registered model family on tiny synthetic tasks of each modality it declares.

    Rules: the family is registered with a kind, modalities and knobs that all have defaults;
    it builds for each declared modality; torch models (``ZooModel``) return logits of shape
    ``(n, classes)``, finite; :meth:`~polyculture.zoo.base.ZooModel.representations` returns a
    non-empty dict of named ``(n, d)`` tensors, in network order, ending with ``logits`` equal
    to the forward output; a loss backpropagates into the parameters; the same seed builds the
    same model. Scikit-learn models (``ClassicalModel``) fit, return probabilities ``(n,
    classes)`` that sum to 1, named ``(n, d)`` representations and a positive parameter count.

    Parameters
    ----------
    family
        A registered name or a :class:`~polyculture.zoo.base.Family`.
    modalities
        Check only these (default: every modality the family declares).
    **knobs
        Knob values to build with (default: the family's defaults).

    Raises
    ------
    ConformanceError
        Naming the rule broken.

    Examples
    --------
    >>> import polyculture.zoo
    >>> check_family("mlp")
    """
    entry = FAMILIES.get(family) if isinstance(family, str) else family
    what = f"model family '{entry.name}'"
    if not entry.modalities:
        raise _fail("declares modalities", what, "it declares none")
    for name, field in entry.knobs.model_fields.items():
        if field.is_required() and name not in knobs:
            raise _fail(
                "knobs have defaults",
                what,
                f"knob '{name}' has no default",
                hint="give every knob a default so that family = '...' alone works",
            )
    for modality in modalities or tuple(sorted(entry.modalities)):
        if modality not in entry.modalities:
            raise _fail("declared modalities", what, f"{modality} is not declared")
        task = check_task(modality)
        if entry.prepare is not None:
            task = entry.prepare(task)
        _check_one_modality(entry, what, task, dict(knobs))


def _build(entry: Family, task: Task, knobs: dict[str, Any], seed: int) -> Any:
    torch.manual_seed(seed)
    return create_model(
        ModelSpec(family=entry.name, params=knobs),
        task.input_shape,
        task.num_classes,
        task.modality,
        vocab_size=len(task.vocabulary),
    )


def _check_one_modality(entry: Family, what: str, task: Task, knobs: dict[str, Any]) -> None:
    what = f"{what} on {task.modality} inputs"
    try:
        model = _build(entry, task, knobs, seed=0)
    except Exception as err:
        raise _fail("builds", what, f"building raised {type(err).__name__}: {err}") from err
    n, classes = len(task.test), task.num_classes
    if entry.kind == "torch":
        if not isinstance(model, ZooModel):
            raise _fail(
                "torch families build a ZooModel",
                what,
                f"got {type(model).__name__}",
                hint="subclass polyculture.zoo.ZooModel and implement representations()",
            )
        _check_torch(model, what, task, n, classes)
        again = _build(entry, task, knobs, seed=0)
        assert isinstance(again, ZooModel)
        model.eval(), again.eval()
        with torch.no_grad():
            if not torch.equal(model(task.test.x), again(task.test.x)):
                raise _fail("deterministic", what, "two builds with seed 0 give different logits")
    else:
        if not isinstance(model, ClassicalModel):
            raise _fail(
                "sklearn families build a ClassicalModel",
                what,
                f"got {type(model).__name__}",
                hint="subclass polyculture.zoo.ClassicalModel",
            )
        _check_classical(model, what, task, n, classes)


def _check_torch(model: ZooModel, what: str, task: Task, n: int, classes: int) -> None:
    model.eval()
    with torch.no_grad():
        logits = model(task.test.x)
        representations = model.representations(task.test.x)
    if tuple(logits.shape) != (n, classes):
        raise _fail(
            "logits shape",
            what,
            f"forward returned shape {tuple(logits.shape)} for {n} inputs and {classes} classes",
            hint="forward must return logits (n, num_classes)",
        )
    if not torch.isfinite(logits).all():
        raise _fail("finite logits", what, "forward returned NaN or infinite logits")
    _check_representations(
        {k: v.numpy() for k, v in representations.items()}
        if isinstance(representations, Mapping)
        else representations,
        what,
        n,
    )
    if "logits" not in representations or list(representations)[-1] != "logits":
        raise _fail(
            "representations end with logits",
            what,
            f"names are {list(representations)}",
            hint="return {..., 'logits': logits} last",
        )
    if not torch.allclose(representations["logits"], logits, atol=1e-5):
        raise _fail("representations end with logits", what, "'logits' differs from forward")
    model.train()
    loss = torch.nn.functional.cross_entropy(model(task.train.x), task.train.y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    if not grads or all(g is None or not torch.any(g != 0) for g in grads):
        raise _fail(
            "trainable",
            what,
            "a cross-entropy loss gives no gradient to any parameter",
            hint="make sure the logits depend on the parameters",
        )


def _check_classical(model: ClassicalModel, what: str, task: Task, n: int, classes: int) -> None:
    x = task.train.x.reshape(len(task.train), -1).numpy().astype(np.float64)
    model.fit(x, task.train.y.numpy(), 0)
    proba = np.asarray(model.predict_proba(x))
    if proba.shape != (n, classes):
        raise _fail(
            "probabilities shape",
            what,
            f"predict_proba returned shape {proba.shape} for {n} inputs and {classes} classes",
            hint="return probabilities for all num_classes classes, in class-index order",
        )
    if not np.isfinite(proba).all() or not np.allclose(proba.sum(1), 1.0, atol=1e-5):
        raise _fail("probabilities", what, "rows are not finite or do not sum to 1")
    _check_representations(model.representations(x), what, n)
    if not isinstance(model.n_parameters, int | np.integer) or model.n_parameters <= 0:
        raise _fail("parameter count", what, f"n_parameters is {model.n_parameters!r}")


def _check_representations(representations: Any, what: str, n: int) -> None:
    if not isinstance(representations, Mapping) or not representations:
        raise _fail(
            "named representations",
            what,
            f"representations returned {type(representations).__name__}, not a non-empty dict",
            hint="return {name: (n, d) array} in network order",
        )
    for name, value in representations.items():
        shape = tuple(np.shape(value))
        if not isinstance(name, str) or len(shape) != 2 or shape[0] != n:
            raise _fail(
                "named representations",
                what,
                f"representation {name!r} has shape {shape}, expected ({n}, d)",
            )


# ---------------------------------------------------------------------------------------------
# Datasets


def check_dataset(
    name: str, options: dict[str, Any] | None = None, path: str | Path | None = None
) -> Task:
    """Check a registered dataset: its builder's raw arrays, then the task built from them.

    Rules: options validate; the builder returns :class:`~polyculture.data.builders.RawData` of
    the registered modality; in each split, features, labels (and groups, texts, instance ids
    when given) have the same length; labels are integer class indices into ``class_names``;
    every row has the same shape (int64 token ids for text); instance ids are unique; the task
    builds (:func:`~polyculture.data.builders.build_task`). Returns the task.

    Raises
    ------
    ConformanceError
        Naming the rule broken.

    Examples
    --------
    >>> import polyculture.data
    >>> check_dataset("digits").num_classes
    10
    """
    builder = DATASETS.get(name)
    what = f"dataset '{name}'"
    validated = validate_options(builder, options or {})
    resolved = None if path is None else Path(path).expanduser()
    raw = builder.build(resolved, validated)
    if not isinstance(raw, RawData):
        raise _fail("returns RawData", what, f"the builder returned {type(raw).__name__}")
    if raw.modality != builder.modality:
        raise _fail(
            "modality as registered",
            what,
            f"registered as {builder.modality} but built {raw.modality} data",
        )
    for split, x, y, groups, index, texts in (
        ("train", raw.x_train, raw.y_train, raw.groups_train, raw.index_train, raw.texts_train),
        ("test", raw.x_test, raw.y_test, raw.groups_test, raw.index_test, raw.texts_test),
    ):
        _check_split(what, split, raw, x, y, groups, index, texts)
    return build_task(
        DataSpec(name=name, options=options or {}, path=None if path is None else str(path))
    )


def _check_split(
    what: str,
    split: str,
    raw: RawData,
    x: Any,
    y: Any,
    groups: pd.DataFrame | None,
    index: Any,
    texts: tuple[str, ...] | None,
) -> None:
    x, y = np.asarray(x), np.asarray(y)
    lengths = {f"x_{split}": len(x), f"y_{split}": len(y)}
    if groups is not None:
        lengths[f"groups_{split}"] = len(groups)
    if index is not None:
        lengths[f"index_{split}"] = len(index)
    if texts is not None:
        lengths[f"texts_{split}"] = len(texts)
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{k} has {v}" for k, v in lengths.items())
        raise _fail("matching lengths", what, f"{split} split: {found} rows")
    if len(y) == 0:
        raise _fail("non-empty splits", what, f"the {split} split is empty")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise _fail(
            "integer labels",
            what,
            f"y_{split} has dtype {y.dtype} and shape {y.shape}",
            hint="labels are int64 class indices (n,) into class_names",
        )
    if y.min() < 0 or y.max() >= len(raw.class_names):
        raise _fail(
            "labels index class_names",
            what,
            f"y_{split} spans {y.min()}..{y.max()} with {len(raw.class_names)} class names",
        )
    if x.dtype == object or x.ndim < 2:
        raise _fail("array features", what, f"x_{split} has dtype {x.dtype} and shape {x.shape}")
    if raw.modality == "text" and x.dtype.kind not in "iu":
        raise _fail("token ids", what, f"x_{split} of a text dataset has dtype {x.dtype}")
    if index is not None and len(np.unique(np.asarray(index))) != len(index):
        raise _fail("unique instance ids", what, f"index_{split} repeats ids")


# ---------------------------------------------------------------------------------------------
# Metrics


def check_metric(metric: str | Metric, seed: int = 0) -> None:
    """Check a registered metric on random predictions (with and without groups).

    Rules: it returns a finite number (or a dict of finite numbers, one per group); it does not
    change its inputs; the same inputs give the same value; a metric that needs groups accepts
    them and one that does not accepts ``groups=None``.

    Raises
    ------
    ConformanceError
        Naming the rule broken.

    Examples
    --------
    >>> check_metric("accuracy")
    """
    entry = METRICS.get(metric) if isinstance(metric, str) else metric
    what = f"metric '{entry.name}'"
    rng = np.random.default_rng(seed)
    n, classes = 60, 3
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    groups = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    for given in [groups] if entry.needs_groups else [None, groups]:
        inputs = (y.copy(), proba.copy(), None if given is None else given.copy())
        try:
            first = entry.compute(*inputs)
            second = entry.compute(y.copy(), proba.copy(), None if given is None else given.copy())
        except Exception as err:
            raise _fail("computes", what, f"it raised {type(err).__name__}: {err}") from err
        if not (np.array_equal(inputs[0], y) and np.array_equal(inputs[1], proba)):
            raise _fail("leaves its inputs alone", what, "it changed y or proba in place")
        for value in _values(first, what):
            if not np.isfinite(value):
                raise _fail(
                    "finite value",
                    what,
                    f"it returned {value} on random predictions",
                    hint="return a finite number (guard empty classes or divisions by zero)",
                )
        if _values(first, what) != _values(second, what):
            raise _fail("deterministic", what, "two calls on the same inputs differ")


def _values(value: Any, what: str) -> list[float]:
    items = list(value.values()) if isinstance(value, Mapping) else [value]
    out = []
    for item in items:
        try:
            out.append(float(item))
        except (TypeError, ValueError):
            raise _fail(
                "returns a number",
                what,
                f"it returned {type(item).__name__}",
                hint="return a float, or a dict of floats per group",
            ) from None
    return out


__all__ = ["check_dataset", "check_family", "check_metric", "check_task"]
