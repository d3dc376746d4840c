"""Backbones shared by many members: pretrain once, then adapt by linear probe or fine-tuning.

A backbone is a zoo network that learns (or ships with) a representation before any member sees
the target labels: contrastive self-supervision on the task's unlabeled training inputs, supervised
training on a source task, or the published weights of a pretrained family such as ``minilm``. Many
members then adapt the same backbone; this is polyculture's miniature foundation model, and the
component-sharing study measures what such sharing does to an ecosystem.

Two ways to adapt:

* ``probe``: the backbone is frozen and its features (the representation at ``layer``) are computed
  once per split; each member is any tabular family trained on those features
  (:func:`feature_task`), so probes cost no more than training on a table.
* ``finetune``: an :class:`AdaptedModel` (backbone + a torch head on the features) trains end to end
  through the one training loop, with optionally only the backbone's last ``blocks`` trainable.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from polyculture.data.task import Split, Task
from polyculture.errors import ConfigError
from polyculture.train.loop import DivergenceError, fit
from polyculture.train.spec import TrainSpec
from polyculture.zoo.base import FAMILIES, ModelSpec, ZooModel, create_model, final_layer

if TYPE_CHECKING:
    from polyculture.train.pretrain import PretrainSpec


@dataclass
class BackboneResult:
    """A pretrained backbone: its weights, the feature layer and how it was obtained.

    Attributes
    ----------
    status
        ``ok`` or ``failed`` (then ``reason`` says why and members that use it fail too).
    layer
        Name of the representation used as features.
    weights
        State dict of the backbone network.
    history
        Pretraining history (empty for ``pretrained``).
    """

    status: str
    layer: str = ""
    reason: str = ""
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: float = 0.0
    error_detail: str = ""


def prepare_task(task: Task, family: str) -> Task:
    """The task as family ``family`` reads it (its ``prepare`` hook, e.g. MiniLM tokenization)."""
    prepare = FAMILIES.get(family).prepare
    return task if prepare is None else prepare(task)


def build_backbone(model_spec: ModelSpec, task: Task, seed: int) -> ZooModel:
    """A freshly initialised backbone network for ``task`` (already prepared for its family)."""
    torch.manual_seed(seed)
    model = create_model(
        model_spec,
        task.input_shape,
        task.num_classes,
        task.modality,
        vocab_size=len(task.vocabulary),
    )
    if not isinstance(model, ZooModel):
        raise ConfigError(
            f"backbone family '{model_spec.family}' is not a torch family",
            hint="use a torch family (cnn, gru, transformer, minilm, ...)",
        )
    return model


def feature_layer(model: ZooModel, task: Task, layer: str | None) -> str:
    """The representation used as features: ``layer``, or the last one before the output."""
    with torch.no_grad():
        model.eval()
        names = list(model.representations(task.train.x[:2]))
    if layer is None:
        return final_layer(names)
    if layer not in names:
        raise ConfigError(
            f"backbone has no representation '{layer}'",
            hint=f"its representations are: {', '.join(names)}",
        )
    return layer


def pretrain_backbone(
    model_spec: ModelSpec,
    method: str,
    task: Task,
    seed: int,
    device: torch.device,
    *,
    pretrain: PretrainSpec | None = None,
    train: TrainSpec | None = None,
    source: Task | None = None,
    layer: str | None = None,
) -> BackboneResult:
    """Pretrain (or load) one backbone.

    Parameters
    ----------
    model_spec
        The backbone's family and knobs.
    method
        ``contrastive`` (unlabeled training inputs of ``task``), ``supervised`` (labels of
        ``source``, default ``task``) or ``pretrained`` (weights as built).
    task
        The target task, already prepared for the family (:func:`prepare_task`).
    seed
        Seeds initialisation and pretraining.
    device
        Where to train.
    pretrain, train
        Settings of the contrastive and supervised methods.
    source
        Source task of supervised pretraining (prepared); its label set may differ from the
        target's: the backbone's own head is discarded.
    layer
        Feature layer (default: the last representation before the output).

    Returns
    -------
    BackboneResult
        ``status="failed"`` with the reason when pretraining diverged or raised.

    Examples
    --------
    >>> import polyculture.zoo
    >>> from polyculture.data import DataSpec, build_task
    >>> task = build_task(DataSpec(name="digits"))
    >>> result = pretrain_backbone(ModelSpec(family="mlp"), "pretrained", task, 0,
    ...                            torch.device("cpu"))
    >>> result.status, result.layer
    ('ok', 'block2')
    """
    started = time.perf_counter()
    data = task if source is None or method != "supervised" else source
    model = build_backbone(model_spec, data, seed)
    history = pd.DataFrame()
    try:
        chosen = feature_layer(model, data, layer)
        if method == "contrastive":
            from polyculture.train.pretrain import PretrainSpec, pretrain_contrastive

            settings = pretrain or PretrainSpec()
            if settings.layer is None:  # learn the representation the members will read
                settings = settings.model_copy(update={"layer": chosen})
            outcome = pretrain_contrastive(
                model, data.train.x, data.modality, settings, seed, device
            )
            history = outcome.history
        elif method == "supervised":
            history = fit(
                model, data.train, data.val, data.modality, train or TrainSpec(), seed, device
            ).history
        elif method != "pretrained":
            raise ConfigError(
                f"unknown backbone method '{method}'",
                hint="use contrastive, supervised or pretrained",
            )
    except DivergenceError as err:
        return BackboneResult("failed", reason=f"pretraining diverged: {err}")
    except (RuntimeError, ValueError, FloatingPointError) as err:
        return BackboneResult(
            "failed",
            reason=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
            error_detail=traceback.format_exc(),
        )
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return BackboneResult(
        "ok", chosen, weights=weights, history=history, seconds=time.perf_counter() - started
    )


def load_backbone(
    model_spec: ModelSpec, task: Task, weights: dict[str, torch.Tensor], source: Task | None = None
) -> ZooModel:
    """Rebuild a pretrained backbone from its stored weights.

    ``source`` is the task the backbone was built for when it differs from ``task`` (supervised
    pretraining on another label set): the network is built for the source's shape and classes.
    """
    model = build_backbone(model_spec, source or task, seed=0)
    model.load_state_dict(weights)
    return model


@torch.no_grad()
def backbone_features(
    model: ZooModel, task: Task, layer: str, device: torch.device, batch_size: int = 512
) -> dict[str, np.ndarray]:
    """Frozen features ``(n, d)`` float32 of every split (``train``, ``val``, test and shifted).

    Examples
    --------
    >>> import polyculture.zoo
    >>> from polyculture.data import DataSpec, build_task
    >>> task = build_task(DataSpec(name="digits"))
    >>> model = build_backbone(ModelSpec(family="mlp"), task, seed=0)
    >>> backbone_features(model, task, "block2", torch.device("cpu"))["test"].shape
    (450, 100)
    """
    model.to(device).eval()
    features: dict[str, np.ndarray] = {}
    for name, split in [("train", task.train), *task.eval_splits()]:
        chunks = [
            model.representations(split.x[start : start + batch_size].to(device))[layer]
            .float()
            .cpu()
            for start in range(0, len(split), batch_size)
        ]  # each (b, d)
        features[name] = torch.cat(chunks).numpy()
    return features


def feature_task(task: Task, features: dict[str, np.ndarray]) -> Task:
    """A tabular task whose inputs are a backbone's features; labels, ids and groups unchanged."""

    def swap(split: Split, name: str) -> Split:
        x = torch.from_numpy(np.ascontiguousarray(features[name], dtype=np.float32))
        return Split(x, split.y, split.groups, split.index)

    return dataclasses.replace(
        task,
        modality="tabular",
        train=swap(task.train, "train"),
        val=swap(task.val, "val"),
        test=swap(task.test, "test"),
        shifted={name: swap(split, name) for name, split in task.shifted.items()},
        feature_names=(),
        vocabulary=(),
    )


class AdaptedModel(ZooModel):
    """A backbone and a head on its features, trained together (fine-tuning).

    Representations are the backbone's up to the feature layer (prefixed ``backbone.``), then the
    head's. With ``finetune_layers=k`` only the backbone's last ``k`` blocks (its ``blocks``
    module list) and the head train.
    """

    def __init__(
        self, backbone: ZooModel, layer: str, head: ZooModel, finetune_layers: int | None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.layer = layer
        self.head = head
        if finetune_layers is not None:
            blocks = getattr(backbone, "blocks", None)
            if not isinstance(blocks, nn.ModuleList) or finetune_layers > len(blocks):
                available = len(blocks) if isinstance(blocks, nn.ModuleList) else 0
                raise ConfigError(
                    f"finetune_layers={finetune_layers} but the backbone has {available} "
                    "blocks to fine-tune",
                    hint="lower finetune_layers, or leave it unset to fine-tune every layer",
                )
            for parameter in backbone.parameters():
                parameter.requires_grad_(False)
            for block in blocks[len(blocks) - finetune_layers :]:
                for parameter in block.parameters():
                    parameter.requires_grad_(True)

    def representations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone representations up to the feature layer, then the head's, ending in logits."""
        reps: dict[str, torch.Tensor] = {}
        for name, value in self.backbone.representations(x).items():
            reps[f"backbone.{name}"] = value  # (n, d)
            if name == self.layer:
                break
        reps.update(self.head.representations(reps[f"backbone.{self.layer}"]))
        return reps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, classes)``."""
        return self.head(self.backbone.representations(x)[self.layer])
