"""TensorBoard scalars of a member's training history (loss, accuracy, learning rate per epoch)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd


def log_history(log_dir: Path, history: pd.DataFrame) -> None:
    """Write ``history`` (one row per epoch) as TensorBoard scalars under ``log_dir``.

    The folder is replaced, so a member retrained after an interrupted run has one clean log.
    """
    from torch.utils.tensorboard import SummaryWriter

    if log_dir.exists():
        shutil.rmtree(log_dir)
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for row in history.itertuples(index=False):
            step = int(row.step)
            writer.add_scalar("loss/train", float(row.train_loss), step)
            writer.add_scalar("loss/val", float(row.val_loss), step)
            writer.add_scalar("accuracy/val", float(row.val_accuracy), step)
            writer.add_scalar("lr", float(row.lr), step)
