"""TensorBoard logs of a member: training scalars and the probe-set embedding for the projector."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def log_member(
    log_dir: Path,
    history: pd.DataFrame,
    embedding: np.ndarray | None = None,
    labels: list[str] | None = None,
    tag: str = "final_layer",
) -> None:
    """Write ``history`` (one row per epoch) as scalars and ``embedding`` for the projector.

    Parameters
    ----------
    log_dir
        The member's folder under ``RUN_DIR/tensorboard``; replaced, so a member retrained after
        an interrupted run has one clean log.
    history
        One row per evaluated epoch (may be empty).
    embedding
        Probe-set representation ``(probe, d)`` of the final layer, or ``None``.
    labels
        One class name per probe instance (projector metadata).
    """
    from torch.utils.tensorboard import SummaryWriter

    if log_dir.exists():
        shutil.rmtree(log_dir)
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        if embedding is not None:
            writer.add_embedding(torch.from_numpy(embedding), metadata=labels, tag=tag)
        for row in history.itertuples(index=False):
            step = int(row.step)
            writer.add_scalar("loss/train", float(row.train_loss), step)
            writer.add_scalar("loss/val", float(row.val_loss), step)
            writer.add_scalar("accuracy/val", float(row.val_accuracy), step)
            if hasattr(row, "train_accuracy"):  # histories of runs before it was logged lack it
                writer.add_scalar("accuracy/train", float(row.train_accuracy), step)
            writer.add_scalar("lr", float(row.lr), step)
