"""train: the one training loop, scikit-learn fitting, prediction and representation extraction."""

from polyculture.train.loop import DivergenceError, TrainOutcome, evaluate_loss, fit
from polyculture.train.member import (
    MemberResult,
    extract_representations,
    predict_probabilities,
    resolve_device,
    train_member,
)
from polyculture.train.spec import TrainSpec

__all__ = [
    "DivergenceError",
    "MemberResult",
    "TrainOutcome",
    "TrainSpec",
    "evaluate_loss",
    "extract_representations",
    "fit",
    "predict_probabilities",
    "resolve_device",
    "train_member",
]
