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
        """Remove temporary member folders a killed run left behind; returns how many."""
        if not self.members_dir.is_dir():
            return 0
        removed = 0
        for path in self.members_dir.iterdir():
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
    ) -> None:
        """Write one member's folder atomically (assembled aside, renamed into place)."""
        self.members_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{member_id}-", dir=self.members_dir))
        try:
            if weights is not None:
                save_torch(weights, str(staging / "weights.safetensors"))
            if probabilities:
                save_numpy(probabilities, str(staging / "probabilities.safetensors"))
            if representations:
                save_numpy(
                    {k: np.ascontiguousarray(v) for k, v in representations.items()},
                    str(staging / "representations.safetensors"),
                    metadata={"order": json.dumps(list(representations))},
                )
            if len(history):
                history.to_parquet(staging / "history.parquet", index=False)
            if error_detail:
                (staging / "error.txt").write_text(error_detail)
            (staging / "member.json").write_text(json.dumps(record, indent=2, default=float))
            (staging / DONE).write_text("")
            os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes an owner-only folder
            final = self.member_dir(member_id)
            if final.exists():
                if (final / DONE).exists():  # another process finished it first
                    return
                shutil.rmtree(final)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def member_record(self, member_id: str) -> dict[str, Any]:
        """The ``member.json`` of a finished member."""
        path = self.member_dir(member_id) / "member.json"
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise RunStoreError(
                f"member '{member_id}' has no readable member.json ({err})",
                hint="delete that member folder and rerun the study to retrain it",
            ) from None

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
        path = self.member_dir(member_id) / name
        if not path.is_file():
            return {}
        arrays = load_numpy(str(path))
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
        order = json.loads(metadata.get("order", "[]")) or sorted(arrays)
        return {key: arrays[key] for key in order}

    def table(self, name: str) -> pd.DataFrame:
        """A table of ``tables/`` by name (``members``, ``predictions``, ``history``)."""
        path = self.tables_dir / f"{name}.parquet"
        if not path.is_file():
            raise RunStoreError(
                f"'{self.root}' has no table '{name}'",
                hint="is this a run directory? run `polyculture run` to (re)build its tables",
            )
        return pd.read_parquet(path)
