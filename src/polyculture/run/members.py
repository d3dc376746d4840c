"""Trained members back from a run directory: the network with its weights, and its task.

:func:`find_member` resolves what a user typed (a member id, a unique id prefix, or a model's
display name, optionally with ``@seed``) against the members table; :func:`load_member` rebuilds
the task from the resolved ``study.toml`` and the torch network from ``weights.safetensors``
(never a pickle), ready for export, timing or re-evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file

from polyculture.data.builders import DataSpec, build_task
from polyculture.data.task import Task
from polyculture.errors import ConfigError, RunStoreError
from polyculture.run.results import RunResults, load_run
from polyculture.validation import unknown_key_hint
from polyculture.zoo.base import FAMILIES, ModelSpec, ZooModel, create_model


@dataclass
class TrainedMember:
    """A trained torch member, rebuilt.

    Attributes
    ----------
    record
        Its ``member.json`` (name, family, knobs, metrics, cost).
    model
        The network in eval mode with the trained weights, on the CPU.
    task
        The task as the member saw it (after its family's ``prepare`` step, e.g. re-tokenized
        text for ``minilm``).
    """

    record: dict[str, Any]
    model: ZooModel
    task: Task


def find_member(members: pd.DataFrame, member: str) -> pd.Series:
    """The members-table row ``member`` names: an id, a unique id prefix, or ``name[@seed]``.

    A model name without a seed picks its lowest seed.

    Raises
    ------
    ConfigError
        No member or several members match; the hint lists close names.

    Examples
    --------
    >>> members = pd.DataFrame({"member_id": ["a1b2", "c3d4"], "name": ["mlp", "mlp"],
    ...                         "seed": [1, 0]})
    >>> find_member(members, "mlp")["member_id"], find_member(members, "mlp@1")["member_id"]
    ('c3d4', 'a1b2')
    """
    by_id = members[members["member_id"].astype(str).str.startswith(member)]
    if len(by_id) == 1:
        return by_id.iloc[0]
    name, _, seed = member.rpartition("@") if "@" in member else (member, "", "")
    rows = members[members["name"].astype(str) == name]
    if seed:
        if not seed.isdigit():
            raise ConfigError(
                f"'{member}': the seed after '@' must be a whole number",
                hint="write NAME@SEED, e.g. cnn(width=32)@0",
            )
        rows = rows[rows["seed"] == int(seed)]
    if rows.empty:
        names = list(dict.fromkeys(members["name"].astype(str)))
        raise ConfigError(
            f"unknown member '{member}'",
            hint=unknown_key_hint(name, names) + " (or give a member id from `polyculture show "
            "RUN_DIR --members`)",
        )
    return rows.sort_values("seed").iloc[0]


def load_member(run_dir: str | Path | RunResults, member: str) -> TrainedMember:
    """Rebuild a trained torch member of a run: its network with weights, and its task.

    Parameters
    ----------
    run_dir
        A run directory (or its loaded :class:`RunResults`).
    member
        A member id, a unique prefix of one, or a model name with an optional ``@seed``.

    Raises
    ------
    ConfigError
        Unknown member; a scikit-learn member (no torch network); a member that failed; a member
        that adapts a pretrained backbone (its network is not stored as one piece).
    RunStoreError
        Missing weights file.

    Examples
    --------
    >>> import tempfile
    >>> from polyculture.run import run_study
    >>> run = run_study("mnist1d", tempfile.mkdtemp(), ["zoo=[{family='linear'}]", "seeds=[0]",
    ...                 "train.epochs=1"], workers=1)
    >>> loaded = load_member(run, "linear")
    >>> loaded.model(loaded.task.test.x[:2]).shape
    torch.Size([2, 10])
    """
    results = run_dir if isinstance(run_dir, RunResults) else load_run(run_dir)
    record = trained_record(results, member)
    label = f"{record['name']} seed {record['seed']}"
    if record["kind"] != "torch":
        raise ConfigError(
            f"member {label} is a scikit-learn model ({record['family']}), not a torch network",
            hint="only torch families (linear, mlp, cnn, gru, lstm, transformer, ...) load as "
            "networks",
        )
    if record.get("backbone"):
        raise ConfigError(
            f"member {label} adapts backbone '{record['backbone']}'",
            hint="only members trained from scratch on the task's inputs are supported here",
        )
    weights = member_weights(results, record)
    task = build_task(DataSpec.model_validate(results.study["data"]))
    prepare = FAMILIES.get(record["family"]).prepare
    task = task if prepare is None else prepare(task)
    return TrainedMember(record, member_network(record, task, weights), task)


def trained_record(results: RunResults, member: str) -> dict[str, Any]:
    """The ``member.json`` of the member ``member`` names, which must have trained.

    Raises
    ------
    ConfigError
        Unknown member, or a member that failed.
    """
    row = find_member(results.members, member)
    record = results.store.member_record(str(row["member_id"]))
    if record["status"] != "ok":
        raise ConfigError(
            f"member {record['name']} seed {record['seed']} failed ({record['reason']})",
            hint="pick a member that trained",
        )
    return record


def member_spec(record: dict[str, Any]) -> ModelSpec:
    """The family and knobs of a member record (the members table stores knobs as JSON)."""
    params = record["params"]
    return ModelSpec(
        family=record["family"], params=json.loads(params) if isinstance(params, str) else params
    )


def member_weights(results: RunResults, record: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The stored weights of a torch member (never a pickle).

    Raises
    ------
    RunStoreError
        The weights file is missing.
    """
    path = results.store.member_dir(str(record["member_id"])) / "weights.safetensors"
    if not path.is_file():
        raise RunStoreError(
            f"member {record['name']} seed {record['seed']} has no weights file ({path})",
            hint="rerun the study",
        )
    return load_file(str(path))


def member_network(
    record: dict[str, Any], task: Task, weights: dict[str, torch.Tensor]
) -> ZooModel:
    """A from-scratch torch member's network for ``task`` (prepared for its family), in eval."""
    model = create_model(
        member_spec(record),
        task.input_shape,
        task.num_classes,
        task.modality,
        vocab_size=len(task.vocabulary),
    )
    assert isinstance(model, ZooModel)  # the record says torch
    model.load_state_dict(weights)
    return model.eval()
