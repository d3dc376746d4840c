"""The one model interface, the family registry and ``create_model``.

Every torch family returns a :class:`ZooModel`: ``forward(x)`` gives logits ``(n, classes)`` and
``representations(x)`` gives the named intermediate representations, each flattened to ``(n, d)``,
in network order and always ending with ``"logits"``. Training, extraction and measurement never
branch on architecture. Classical (scikit-learn) families return a :class:`ClassicalModel` with the
same spirit: ``fit``, ``predict_proba`` and ``representations``.

A family is registered with :func:`family`, declaring the modalities it supports and a pydantic
model of its knobs (width, depth, ...). Knob values are validated before anything trains.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from polyculture.data.task import MODALITIES, Modality, Task
from polyculture.errors import ConfigError, RegistryError
from polyculture.registry import Registry


class Knobs(BaseModel):
    """Base class of a family's knobs: frozen, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ZooModel(nn.Module, ABC):
    """Base class of every torch family.

    Subclasses implement :meth:`representations`; :meth:`forward` returns its ``"logits"`` entry
    unless a subclass overrides it with a cheaper path.
    """

    @abstractmethod
    def representations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named representations of ``x``, each ``(n, d)``, in network order, ending with logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, classes)`` for inputs ``(n, *input_shape)``."""
        return self.representations(x)["logits"]

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The continuous space in which inputs are perturbed (adversarial attacks).

        The inputs themselves for continuous modalities; text families override this with their
        token embeddings ``(n, length, dim)`` so that attacks act in embedding space.
        """
        return x

    def forward_embedded(self, embedded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, classes)`` from ``embedded``, the (maybe perturbed) output of
        :meth:`embed_inputs` for the inputs ``x``; text families read their padding mask from
        ``x``.
        """
        return self(embedded)


class ClassicalModel(ABC):
    """Interface of the scikit-learn families (a thin wrapper over one estimator).

    Implementations fit on flattened float inputs and always return probabilities for all
    ``num_classes`` classes, in class-index order.
    """

    num_classes: int

    @abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> ClassicalModel:
        """Fit on ``x`` ``(n, d)`` and class indices ``y`` ``(n,)``; returns ``self``."""

    @abstractmethod
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, num_classes)``."""

    @abstractmethod
    def representations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Named representations ``(n, d)``; classical members expose their output layer."""

    @property
    @abstractmethod
    def n_parameters(self) -> int:
        """Number of learned values after ``fit`` (coefficients, tree nodes, stored examples)."""


Builder = Callable[..., "ZooModel | ClassicalModel"]
"""``build(knobs, input_shape, num_classes, modality)``; families that take ``text`` inputs are
also called with the keyword ``vocab_size`` (the number of token ids of the task)."""

Prepare = Callable[[Task], Task]
"""Turns a task into the inputs a family reads (e.g. a pretrained encoder's own tokenization)."""


@dataclass(frozen=True)
class Family:
    """A registered model family.

    Attributes
    ----------
    name
        Registry name (``mlp``, ``gru``, ...).
    kind
        ``torch`` (trained by the one training loop) or ``sklearn``.
    modalities
        Modalities the family accepts.
    knobs
        Pydantic model of the family's knobs with their defaults.
    build
        ``build(knobs, input_shape, num_classes, modality)`` -> model.
    description
        One line for ``polyculture models``.
    prepare
        Optional ``prepare(task) -> task`` applied before the model sees the task, for families
        that read inputs their own way (a pretrained encoder re-tokenizes ``Split.texts``).
    """

    name: str
    kind: Literal["torch", "sklearn"]
    modalities: frozenset[Modality]
    knobs: type[Knobs]
    build: Builder
    description: str
    prepare: Prepare | None = None


FAMILIES: Registry[Family] = Registry("model family")


def family(
    name: str,
    *,
    kind: Literal["torch", "sklearn"],
    modalities: tuple[Modality, ...],
    knobs: type[Knobs],
    description: str,
    prepare: Prepare | None = None,
    registry: Registry[Family] | None = None,
) -> Callable[[Builder], Builder]:
    """Register a builder function as model family ``name``.

    ``registry`` defaults to :data:`FAMILIES`; the example passes its own so that running the
    doctest does not add a toy family to the real registry.

    Examples
    --------
    >>> class NoKnobs(Knobs):
    ...     pass
    >>> toy: Registry[Family] = Registry("model family")
    >>> @family("doc_linear", kind="torch", modalities=("tabular",), knobs=NoKnobs,
    ...         description="doc example", registry=toy)
    ... def build(knobs, input_shape, num_classes, modality):
    ...     return nn.Linear(input_shape[0], num_classes)
    >>> "doc_linear" in toy, "doc_linear" in FAMILIES
    (True, False)
    """
    target = FAMILIES if registry is None else registry
    _check_family_declaration(name, kind, modalities, knobs)

    def add(build: Builder) -> Builder:
        if not callable(build):
            raise RegistryError(f"model family '{name}': the decorated object is not callable")
        target.add(
            name, Family(name, kind, frozenset(modalities), knobs, build, description, prepare)
        )
        return build

    return add


def _check_family_declaration(
    name: str, kind: str, modalities: tuple[Modality, ...], knobs: type[Knobs]
) -> None:
    """The rules every family's declaration follows (built-in or plugin)."""
    if kind not in ("torch", "sklearn"):
        raise RegistryError(
            f"model family '{name}': kind must be 'torch' or 'sklearn', got {kind!r}",
            hint="torch families build an nn.Module (a ZooModel), sklearn ones a ClassicalModel",
        )
    unknown = [m for m in modalities if m not in MODALITIES]
    if not modalities or unknown or isinstance(modalities, str):
        raise RegistryError(
            f"model family '{name}' must declare the modalities it supports as a tuple of "
            f"{', '.join(MODALITIES)}; got {modalities!r}",
            hint="e.g. modalities=('tabular',)",
        )
    if not (isinstance(knobs, type) and issubclass(knobs, BaseModel)):
        raise RegistryError(
            f"model family '{name}': knobs must be a Knobs (pydantic) class, got {knobs!r}",
            hint="subclass polyculture.zoo.Knobs, with a default for every knob",
        )


class ModelSpec(BaseModel):
    """A model family with its knob values: a frozen value with a stable id.

    Examples
    --------
    >>> ModelSpec(family="mlp", params={"width": 64}).label()
    'mlp(width=64)'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str
    params: dict[str, Any] = {}

    def label(self) -> str:
        """Short human-readable name, e.g. ``mlp(width=64)``."""
        if not self.params:
            return self.family
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.family}({inner})"


def stable_hash(value: object) -> str:
    """12 hex characters of the SHA-256 of ``value`` as canonical JSON.

    Examples
    --------
    >>> stable_hash({"b": 1, "a": 2}) == stable_hash({"a": 2, "b": 1})
    True
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def resolve_knobs(spec: ModelSpec, modality: Modality | None = None) -> Knobs:
    """Validate ``spec.params`` against its family's knobs (and the modality, when given).

    Raises
    ------
    RegistryError
        Unknown family (with close matches).
    ConfigError
        A knob that does not exist, a bad value, or a modality the family cannot take.
    """
    fam = FAMILIES.get(spec.family)
    if modality is not None and modality not in fam.modalities:
        raise ConfigError(
            f"model family '{fam.name}' cannot take {modality} inputs",
            hint=f"it supports {', '.join(sorted(fam.modalities))}; remove it from the zoo",
        )
    try:
        return fam.knobs.model_validate(spec.params)
    except ValidationError as err:
        # An unknown knob first: a typo usually explains the other errors too.
        first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        where = ".".join(str(part) for part in first["loc"]) or "params"
        known = ", ".join(fam.knobs.model_fields)
        raise ConfigError(
            f"model '{fam.name}' knob '{where}': {first['msg']}",
            hint=f"knobs of '{fam.name}' are: {known or '(none)'}",
        ) from None


def create_model(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: Modality,
    *,
    vocab_size: int = 0,
) -> ZooModel | ClassicalModel:
    """Build an untrained model for ``spec`` (the one entry point, like ``timm.create_model``).

    ``vocab_size`` (text tasks: ``len(task.vocabulary)``) is passed on to text families.

    Examples
    --------
    >>> import polyculture.zoo  # registers the built-in families
    >>> model = create_model(ModelSpec(family="mlp"), (1, 40), 10, "sequence")
    >>> model(torch.zeros(2, 1, 40)).shape
    torch.Size([2, 10])
    """
    knobs = resolve_knobs(spec, modality)
    build = FAMILIES.get(spec.family).build
    if modality == "text":
        return build(knobs, tuple(input_shape), num_classes, modality, vocab_size=vocab_size)
    return build(knobs, tuple(input_shape), num_classes, modality)


def final_layer(layers: list[str]) -> str:
    """The last representation before a member's output (``logits``/``proba`` when none).

    Examples
    --------
    >>> final_layer(["block1", "hidden", "logits"]), final_layer(["logits"])
    ('hidden', 'logits')
    """
    hidden = [name for name in layers if name not in ("logits", "proba")]
    return hidden[-1] if hidden else layers[0]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of a torch model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops(model: nn.Module, x: torch.Tensor) -> float:
    """Floating-point operations of one forward pass per example, counted by torch.

    Uses :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products, convolutions,
    attention), on ``x`` ``(b, *input_shape)``; element-wise operations are not counted, as in
    the usual scaling-law accounting.

    Examples
    --------
    >>> forward_flops(nn.Linear(8, 4), torch.zeros(3, 8))  # 2 * 8 * 4 per example
    64.0
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return float(counter.get_total_flops()) / max(1, len(x))
