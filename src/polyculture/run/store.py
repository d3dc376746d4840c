"""The run directory: the contract between stages (DESIGN.md section 3).

::

    <run>/study.toml                    resolved study + versions, exactly what ran
    <run>/task.json                     data sizes, classes, cleaning log, published references
    <run>/members/<id>/                 one folder per finished member, DONE written last
        member.json                     spec, status, reason, cost, metrics per split
        weights.safetensors             torch members only
        probabilities.safetensors       (n, classes) per evaluation split
        representations.safetensors     (probe, d) per named layer
        history.parquet                 one row per evaluated epoch (torch members)
        attention.safetensors           transformer attention maps of a few probe inputs
    <run>/backbones/<id>/               one folder per pretrained backbone, DONE written last
        backbone.json                   spec, status, feature layer, pretraining time
        weights.safetensors             the backbone network
        features.safetensors            frozen features (n, d) per split, for probe members
        history.parquet                 pretraining history
    <run>/tables/members.parquet|.csv   one row per member
    <run>/tables/predictions.parquet    one row per (member, split, instance)
    <run>/tables/history.parquet        one row per (member, epoch)

Every file is written to a temporary name and renamed; a member folder is assembled under a
temporary name and renamed into place only once complete, so a killed run never leaves a
half-written member or table behind, and a rerun skips exactly the finished members.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from polyculture.errors import RunStoreError

DONE = "DONE"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` if the block succeeds.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(out) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> out.read_text()
    'hello'
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp makes owner-only files; give the result the permissions of a normal new file.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_table(frame: pd.DataFrame, target: Path, csv: bool = False) -> None:
    """Write ``frame`` as Parquet (and CSV beside it when ``csv``), atomically."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    if csv:
        with atomic_path(target.with_suffix(".csv")) as tmp:
            frame.to_csv(tmp, index=False)


def write_optional_table(frame: pd.DataFrame | None, target: Path) -> None:
    """Write ``frame``, or remove ``target`` when there is none, so no stale table survives."""
    if frame is None:
        target.unlink(missing_ok=True)
    else:
        write_table(frame, target)


PREDICTION_COLUMNS = ["member_id", "split", "instance", "label", "prediction", "p_true", "correct"]


def prediction_frame(
    member_id: str,
    split: str,
    instances: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    p_true: np.ndarray,
) -> pd.DataFrame:
    """Rows of ``tables/predictions`` for one member on one split (one row per instance)."""
    return pd.DataFrame(
        {
            "member_id": member_id,
            "split": split,
            "instance": instances,
            "label": labels,
            "prediction": predicted,
            "p_true": p_true,
            "correct": predicted == labels,
        },
        columns=PREDICTION_COLUMNS,
    )


def package_versions() -> dict[str, str]:
    """Versions recorded in every ``study.toml``: polyculture, torch, numpy, python."""
    import polyculture

    return {
        "polyculture": polyculture.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


@contextmanager
def _atomic_folder(final: Path) -> Iterator[Path | None]:
    """Yield a staging folder beside ``final``; on success write DONE and rename it into place.

    Yields ``None`` when ``final`` is already complete (another process finished it first).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if (final / DONE).exists():
        yield None
        return
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield staging
        (staging / DONE).write_text("")
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes an owner-only folder
        if final.exists():
            if (final / DONE).exists():  # another process finished it meanwhile
                return
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _save_ordered(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Save named arrays (if any) with their order in the metadata."""
    if arrays:
        save_numpy(
            {k: np.ascontiguousarray(v) for k, v in arrays.items()},
            str(path),
            metadata={"order": json.dumps(list(arrays))},
        )


def _load_ordered(path: Path) -> dict[str, np.ndarray]:
    """Named arrays saved by :func:`_save_ordered`, in their saved order (empty when absent)."""
    if not path.is_file():
        return {}
    arrays = load_numpy(str(path))
    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata() or {}
    order = json.loads(metadata.get("order", "[]")) or sorted(arrays)
    return {key: arrays[key] for key in order}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as err:
        raise RunStoreError(
            f"{what} has no readable {path.name} ({err})",
            hint="delete that folder and rerun the study to recompute it",
        ) from None


class RunStore:
    """Read and write one run directory.

    Examples
    --------
    >>> import tempfile
    >>> store = RunStore(Path(tempfile.mkdtemp()) / "demo")
    >>> store.is_done("abc")
    False
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def members_dir(self) -> Path:
        """Folder of the member folders."""
        return self.root / "members"

    @property
    def tables_dir(self) -> Path:
        """Folder of the tidy tables."""
        return self.root / "tables"

    def member_dir(self, member_id: str) -> Path:
        """Folder of one member."""
        return self.members_dir / member_id

    def is_done(self, member_id: str) -> bool:
        """True when the member's folder is complete (its DONE marker exists)."""
        return (self.member_dir(member_id) / DONE).is_file()

    def clean_partial(self) -> int:
        """Remove temporary member and backbone folders a killed run left; returns how many."""
        removed = 0
        for parent in (self.members_dir, self.backbones_dir):
            if not parent.is_dir():
                continue
            for path in parent.iterdir():
                if path.name.startswith(".tmp-") or (path.is_dir() and not (path / DONE).exists()):
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
        return removed

    def write_member(
        self,
        member_id: str,
        record: dict[str, Any],
        *,
        probabilities: dict[str, np.ndarray],
        representations: dict[str, np.ndarray],
        weights: dict[str, torch.Tensor] | None,
        history: pd.DataFrame,
        error_detail: str = "",
        attention: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Write one member's folder atomically (assembled aside, renamed into place)."""
        with _atomic_folder(self.member_dir(member_id)) as staging:
            if staging is None:
                return
            if weights is not None:
                save_torch(weights, str(staging / "weights.safetensors"))
            if probabilities:
                save_numpy(probabilities, str(staging / "probabilities.safetensors"))
            _save_ordered(representations, staging / "representations.safetensors")
            _save_ordered(attention or {}, staging / "attention.safetensors")
            if len(history):
                history.to_parquet(staging / "history.parquet", index=False)
            if error_detail:
                (staging / "error.txt").write_text(error_detail)
            (staging / "member.json").write_text(json.dumps(record, indent=2, default=float))

    @property
    def backbones_dir(self) -> Path:
        """Folder of the pretrained backbones."""
        return self.root / "backbones"

    def backbone_dir(self, backbone_id: str) -> Path:
        """Folder of one backbone."""
        return self.backbones_dir / backbone_id

    def is_backbone_done(self, backbone_id: str) -> bool:
        """True when the backbone's folder is complete."""
        return (self.backbone_dir(backbone_id) / DONE).is_file()

    def write_backbone(
        self,
        backbone_id: str,
        record: dict[str, Any],
        *,
        weights: dict[str, torch.Tensor],
        features: dict[str, np.ndarray],
        history: pd.DataFrame,
        error_detail: str = "",
    ) -> None:
        """Write one backbone's folder atomically."""
        with _atomic_folder(self.backbone_dir(backbone_id)) as staging:
            if staging is None:
                return
            if weights:
                save_torch(weights, str(staging / "weights.safetensors"))
            _save_ordered(features, staging / "features.safetensors")
            if len(history):
                history.to_parquet(staging / "history.parquet", index=False)
            if error_detail:
                (staging / "error.txt").write_text(error_detail)
            (staging / "backbone.json").write_text(json.dumps(record, indent=2, default=float))

    def backbone_record(self, backbone_id: str) -> dict[str, Any]:
        """The ``backbone.json`` of a finished backbone."""
        return _read_json(
            self.backbone_dir(backbone_id) / "backbone.json", f"backbone '{backbone_id}'"
        )

    def backbone_weights(self, backbone_id: str) -> dict[str, torch.Tensor]:
        """The backbone network's state dict."""
        return load_torch(str(self.backbone_dir(backbone_id) / "weights.safetensors"))

    def backbone_features(self, backbone_id: str) -> dict[str, np.ndarray]:
        """Frozen features ``(n, d)`` per split."""
        return _load_ordered(self.backbone_dir(backbone_id) / "features.safetensors")

    def attention(self, member_id: str) -> dict[str, np.ndarray]:
        """Attention maps of probe inputs (transformer members), else empty."""
        return self._arrays(member_id, "attention.safetensors")

    def member_record(self, member_id: str) -> dict[str, Any]:
        """The ``member.json`` of a finished member."""
        return _read_json(self.member_dir(member_id) / "member.json", f"member '{member_id}'")

    def probabilities(self, member_id: str) -> dict[str, np.ndarray]:
        """Class probabilities ``(n, classes)`` per evaluation split."""
        return self._arrays(member_id, "probabilities.safetensors")

    def representations(self, member_id: str) -> dict[str, np.ndarray]:
        """Probe-set representations ``(probe, d)`` per layer, in network order."""
        return self._arrays(member_id, "representations.safetensors")

    def history(self, member_id: str) -> pd.DataFrame:
        """Training history (empty for classical and failed members)."""
        path = self.member_dir(member_id) / "history.parquet"
        return pd.read_parquet(path) if path.is_file() else pd.DataFrame()

    def _arrays(self, member_id: str, name: str) -> dict[str, np.ndarray]:
        return _load_ordered(self.member_dir(member_id) / name)

    def table(self, name: str) -> pd.DataFrame:
        """A table of ``tables/`` by name (``members``, ``predictions``, ``history``)."""
        path = self.tables_dir / f"{name}.parquet"
        if not path.is_file():
            raise RunStoreError(
                f"'{self.root}' has no table '{name}'",
                hint="is this a run directory? run `polyculture run` to (re)build its tables",
            )
        return pd.read_parquet(path)
