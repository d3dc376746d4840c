"""Any trained member of a run, as a predictor for new inputs (raw texts or encoded splits).

The applications (re-evaluation on new data, the support service, the sentiment monitor) score
members on inputs the run never saw. :func:`load_predictor` rebuilds one member of a run
directory, whatever its kind:

* a torch member trained from scratch: its network with the weights of ``weights.safetensors``;
* a scikit-learn member: refitted on the training split with the member's seed (the same rows,
  shard and data fraction, one BLAS thread), because classical members are never pickled; the
  refit is checked against the validation predictions the run stored;
* a member on a backbone: the backbone's stored weights (MiniLM: the pretrained encoder) give
  the features, then the head: a frozen-feature probe (torch weights, or a scikit-learn head
  refitted on the stored training features) or a fine-tuned network (backbone and head weights).

Text tasks are scored from the raw strings (:meth:`Predictor.predict_texts`): encoded with the
task's vocabulary and ``max_length``, or with MiniLM's own tokenizer for MiniLM members and
backbones, so an encoded split and its strings give the same probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from polyculture.data.builders import DataSpec, build_task
from polyculture.data.task import Split, Task
from polyculture.data.text import encode_texts
from polyculture.errors import ConfigError, ExecutionError, RunStoreError
from polyculture.run.members import member_network, member_spec, member_weights, trained_record
from polyculture.run.results import RunResults, load_run
from polyculture.train.backbone import AdaptedModel, feature_task, load_backbone, prepare_task
from polyculture.train.member import fraction_task, shard_task
from polyculture.zoo.base import (
    FAMILIES,
    ClassicalModel,
    ModelSpec,
    ZooModel,
    create_model,
    final_layer,
)

BATCH_SIZE = 512
"""Rows per forward pass when scoring."""

REFIT_TOLERANCE = 1e-5
"""Largest difference allowed between a refitted classical member's validation probabilities and
the ones its run stored."""

RELOAD_TOLERANCE = 1e-4
"""The same for torch members (float32 sums in another batch order or padding length)."""

Inputs = torch.Tensor
"""Model inputs of one batch (token ids, features or pixels)."""


@dataclass
class Predictor:
    """One trained member, ready to score new inputs.

    Attributes
    ----------
    name, member_id, seed, family
        Which member (``name`` is its display name without the seed).
    record
        Its ``member.json``.
    class_names
        One name per output column, in order.
    task
        The run's task as rebuilt from ``study.toml`` (or the task passed to
        :func:`load_predictor`); splits are encoded as the run encodes them.
    """

    name: str
    member_id: str
    seed: int
    family: str
    record: dict[str, Any]
    class_names: tuple[str, ...]
    task: Task
    _encode_texts: Callable[[Sequence[str]], Inputs] = field(repr=False)
    _features: Callable[[Inputs], torch.Tensor] | None = field(default=None, repr=False)
    _network: ZooModel | None = field(default=None, repr=False)
    _classical: ClassicalModel | None = field(default=None, repr=False)

    # --- scoring ---------------------------------------------------------------------------

    def predict_proba(self, split: Split) -> np.ndarray:
        """Class probabilities ``(n, classes)`` float64 of the rows of ``split``.

        ``split`` is encoded like the run's task (e.g. ``predictor.task.test``); text splits are
        scored from their raw strings (``split.texts``).

        Examples
        --------
        >>> import tempfile
        >>> from polyculture.run import run_study
        >>> run = run_study("mnist1d", tempfile.mkdtemp(), ["zoo=[{family='linear'}]",
        ...                 "seeds=[0]", "train.epochs=1"], workers=1)
        >>> predictor = load_predictor(run, "linear")
        >>> predictor.predict_proba(predictor.task.test).shape
        (1000, 10)
        """
        return self._outputs(self._inputs(split), probabilities=True)

    def predict_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities ``(n, classes)`` float64 of raw strings (text tasks).

        Examples
        --------
        >>> predictor = load_predictor(RUN, "tfidf_logreg")  # doctest: +SKIP
        >>> predictor.predict_texts(["my card has not arrived yet"]).shape  # doctest: +SKIP
        (1, 77)
        """
        return self._outputs(self._text_inputs(texts), probabilities=True)

    def represent(self, split: Split) -> np.ndarray:
        """The final representation ``(n, d)`` float32 (the input of the output layer)."""
        return self._outputs(self._inputs(split), probabilities=False)

    def represent_texts(self, texts: Sequence[str]) -> np.ndarray:
        """The final representation ``(n, d)`` float32 of raw strings (text tasks)."""
        return self._outputs(self._text_inputs(texts), probabilities=False)

    def predict(self, texts_or_split: Sequence[str] | Split) -> list[str]:
        """The most probable class name of each row (raw strings or a split)."""
        if isinstance(texts_or_split, Split):
            proba = self.predict_proba(texts_or_split)
        else:
            proba = self.predict_texts(texts_or_split)
        return [self.class_names[i] for i in proba.argmax(axis=1)]

    # --- internals -------------------------------------------------------------------------

    def _text_inputs(self, texts: Sequence[str]) -> Inputs:
        if self.task.modality != "text":
            raise ConfigError(
                f"member {self.name} reads {self.task.modality} inputs, not texts",
                hint="pass an encoded split to predict_proba/represent instead",
            )
        if isinstance(texts, str):
            raise ConfigError("texts must be a list of strings, not one string", hint="wrap it")
        return self._encode_texts([str(text) for text in texts])

    def _inputs(self, split: Split) -> Inputs:
        if self.task.modality == "text":
            if split.texts is None or len(split.texts) != len(split):
                raise ConfigError(
                    "this text split has no raw strings (Split.texts)",
                    hint="build it with the run's data reader or use predict_texts",
                )
            return self._encode_texts(split.texts)
        if tuple(split.x.shape[1:]) != self.task.input_shape:
            raise ConfigError(
                f"inputs have shape {tuple(split.x.shape[1:])} per row, member {self.name} "
                f"expects {self.task.input_shape}",
                hint="encode the new data with the run's data reader (same columns and options)",
            )
        return split.x

    @torch.no_grad()
    def _outputs(self, x: Inputs, probabilities: bool) -> np.ndarray:
        chunks: list[np.ndarray] = []
        for start in range(0, len(x), BATCH_SIZE):
            batch = x[start : start + BATCH_SIZE]
            if self._features is not None:
                batch = self._features(batch)  # (b, d) backbone features
            chunks.append(self._head(batch, probabilities))
        if not chunks:
            width = len(self.class_names) if probabilities else 0
            return np.zeros((0, width), dtype=np.float64 if probabilities else np.float32)
        return np.concatenate(chunks)

    def _head(self, x: torch.Tensor, probabilities: bool) -> np.ndarray:
        if self._classical is not None:
            flat = x.reshape(len(x), -1).numpy()  # (b, d)
            if probabilities:
                return self._classical.predict_proba(flat).astype(np.float64)
            outputs = self._classical.representations(flat)
            return np.asarray(outputs[final_layer(list(outputs))], dtype=np.float32)
        assert self._network is not None
        if probabilities:
            logits = self._network(x)  # (b, classes)
            return torch.softmax(logits.double(), dim=1).numpy()
        layers = self._network.representations(x)
        chosen = layers[final_layer(list(layers))]
        return chosen.reshape(len(chosen), -1).float().numpy()


def load_predictor(
    run_dir: str | Path | RunResults, member: str, *, task: Task | None = None
) -> Predictor:
    """Rebuild a member of a run as a :class:`Predictor`.

    Parameters
    ----------
    run_dir
        A run directory written by ``polyculture run`` (or its loaded :class:`RunResults`).
    member
        A member id, a unique prefix of one, or a model name with an optional ``@seed``.
    task
        The run's task; rebuilt from ``study.toml`` when ``None`` (pass one to reuse a build, or
        a task whose test split holds new data read with the run's data options). Its training
        split must be the run's: classical members are refitted on it.

    Raises
    ------
    ConfigError
        Unknown or failed member.
    RunStoreError
        Missing weights or backbone files.
    ExecutionError
        A refitted classical member does not reproduce its stored validation predictions (the
        data or the library versions changed since the run).

    Examples
    --------
    >>> import tempfile
    >>> from polyculture.run import run_study
    >>> run = run_study("mnist1d", tempfile.mkdtemp(), ["zoo=[{family='linear'}]", "seeds=[0]",
    ...                 "train.epochs=1"], workers=1)
    >>> predictor = load_predictor(run, "linear")
    >>> predictor.name, predictor.predict_proba(predictor.task.val).shape
    ('linear', (400, 10))
    """
    results = run_dir if isinstance(run_dir, RunResults) else load_run(run_dir)
    record = trained_record(results, member)
    label = f"{record['name']} seed {record['seed']}"
    if task is None:
        task = build_task(DataSpec.model_validate(results.study["data"]))
    spec = member_spec(record)
    common = {
        "name": str(record["name"]),
        "member_id": str(record["member_id"]),
        "seed": int(record["seed"]),
        "family": str(record["family"]),
        "record": record,
        "class_names": tuple(task.class_names),
        "task": task,
    }
    if record.get("backbone"):
        predictor = _on_backbone(results, record, spec, task, common)
    else:
        predictor = _from_scratch(results, record, spec, task, common)
    _check_reproduces(results, predictor, label)
    return predictor


def _from_scratch(
    results: RunResults,
    record: dict[str, Any],
    spec: ModelSpec,
    task: Task,
    common: dict[str, Any],
) -> Predictor:
    prepared = prepare_task(task, spec.family)
    encode = _text_encoder(task, spec.family, _lowercase(results))
    if record["kind"] == "torch":
        network = member_network(record, prepared, member_weights(results, record))
        return Predictor(**common, _encode_texts=encode, _network=network)
    classical = _refit(spec, prepared, record)
    return Predictor(**common, _encode_texts=encode, _classical=classical)


def _on_backbone(
    results: RunResults,
    record: dict[str, Any],
    spec: ModelSpec,
    task: Task,
    common: dict[str, Any],
) -> Predictor:
    backbone_id, backbone_record = _backbone(results, str(record["backbone"]))
    backbone_spec = ModelSpec(family=backbone_record["family"], params=backbone_record["params"])
    prepared = prepare_task(task, backbone_spec.family)
    weights = results.store.backbone_weights(backbone_id)
    network = load_backbone(
        backbone_spec, prepared, weights, _source_task(results, str(record["backbone"]))
    ).eval()
    layer = str(backbone_record["layer"])
    encode = _text_encoder(task, backbone_spec.family, _lowercase(results))
    if record["adapt"] != "probe":  # fine-tuned: backbone and head trained as one network
        width = network.representations(prepared.train.x[:2])[layer].shape[1]
        head = create_model(spec, (width,), prepared.num_classes, "tabular")
        assert isinstance(head, ZooModel)
        adapted = AdaptedModel(network, layer, head, None)
        adapted.load_state_dict(member_weights(results, record))
        return Predictor(**common, _encode_texts=encode, _network=adapted.eval())

    def features(x: torch.Tensor) -> torch.Tensor:
        return network.representations(x)[layer].float()  # (b, d)

    if record["kind"] == "torch":
        width = int(backbone_record["feature_dim"])
        head = create_model(spec, (width,), prepared.num_classes, "tabular")
        assert isinstance(head, ZooModel)
        head.load_state_dict(member_weights(results, record))
        return Predictor(**common, _encode_texts=encode, _features=features, _network=head.eval())
    stored = results.store.backbone_features(backbone_id)
    classical = _refit(spec, feature_task(task, stored), record)
    return Predictor(**common, _encode_texts=encode, _features=features, _classical=classical)


def _backbone(results: RunResults, name: str) -> tuple[str, dict[str, Any]]:
    """The id and record of the run's backbone called ``name``."""
    folder = results.store.backbones_dir
    for path in sorted(folder.glob("*/backbone.json")) if folder.is_dir() else []:
        record = results.store.backbone_record(path.parent.name)
        if record.get("name") == name and record.get("status") == "ok":
            return path.parent.name, record
    raise RunStoreError(
        f"backbone '{name}' is missing from {folder}", hint="rerun the study to rebuild it"
    )


def _source_task(results: RunResults, name: str) -> Task | None:
    """The source task of a supervised backbone, prepared for its family (else ``None``)."""
    for spec in results.study.get("backbones", []):
        if spec.get("name") == name and spec.get("source") is not None:
            return prepare_task(build_task(DataSpec.model_validate(spec["source"])), spec["family"])
    return None


def _refit(spec: ModelSpec, task: Task, record: dict[str, Any]) -> ClassicalModel:
    """Fit a classical member again exactly as it was trained (same rows, seed, one thread)."""
    shard = str(record.get("shard") or "")
    if shard:
        index, count = (int(part) for part in shard.split("/"))
        task = shard_task(task, (index - 1, count))
    task = fraction_task(task, float(record.get("data_fraction", 1.0)))
    seed = int(record["seed"])
    torch.manual_seed(seed)
    model = create_model(
        spec, task.input_shape, task.num_classes, task.modality, vocab_size=len(task.vocabulary)
    )
    assert isinstance(model, ClassicalModel)  # the record says sklearn
    with threadpool_limits(limits=1):
        model.fit(task.train.x.reshape(len(task.train), -1).numpy(), task.train.y.numpy(), seed)
    return model


def _text_encoder(
    task: Task, family: str, lowercase: bool = True
) -> Callable[[Sequence[str]], Inputs]:
    """Raw strings to the inputs of a member (or backbone) of ``family``."""
    if task.modality != "text":

        def not_text(texts: Sequence[str]) -> Inputs:
            raise ConfigError(f"the task reads {task.modality} inputs, not texts")

        return not_text
    if FAMILIES.get(family).prepare is not None:  # the family has its own tokenizer (MiniLM)
        from polyculture.zoo.pretrained import tokenize

        return tokenize
    length = int(task.input_shape[0])
    vocabulary = task.vocabulary
    return lambda texts: torch.from_numpy(
        encode_texts(texts, vocabulary, length, lowercase=lowercase)
    )


def _lowercase(results: RunResults) -> bool:
    """Whether the run's text reader lowercased texts before tokenizing."""
    options = results.study.get("data", {}).get("options") or {}
    return bool(options.get("lowercase", True))


def _check_reproduces(results: RunResults, predictor: Predictor, label: str) -> None:
    """The rebuilt member must give the validation probabilities the run stored."""
    stored = results.store.probabilities(predictor.member_id).get("val")
    if stored is None or len(predictor.task.val) != len(stored):
        return
    rows = slice(0, 256)
    val = predictor.task.val
    check = Split(val.x[rows], val.y[rows], texts=None if val.texts is None else val.texts[rows])
    difference = float(np.abs(predictor.predict_proba(check) - stored[rows]).max(initial=0.0))
    tolerance = REFIT_TOLERANCE if predictor._classical is not None else RELOAD_TOLERANCE
    if difference > tolerance:
        raise ExecutionError(
            f"member {label} rebuilt from the run differs from its stored validation predictions "
            f"(max difference {difference:.2g})",
            hint="the data files or library versions changed since the run; rerun the study",
        )
