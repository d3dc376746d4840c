"""train: the one training loop, scikit-learn fitting, prediction and representation extraction,
adversarial attacks and training, contrastive pretraining and backbones shared by members."""

from polyculture.train.adversarial import fgsm, input_scale, pgd, robust_accuracy
from polyculture.train.backbone import (
    AdaptedModel,
    BackboneResult,
    backbone_features,
    feature_task,
    pretrain_backbone,
)
from polyculture.train.loop import DivergenceError, TrainOutcome, evaluate_loss, fit
from polyculture.train.member import (
    Adaptation,
    MemberResult,
    RobustnessCheck,
    extract_representations,
    predict_probabilities,
    resolve_device,
    shard_task,
    train_member,
)
from polyculture.train.pretrain import PretrainSpec, nt_xent_loss, pretrain_contrastive
from polyculture.train.spec import AdversarialSpec, TrainSpec

__all__ = [
    "Adaptation",
    "AdaptedModel",
    "AdversarialSpec",
    "BackboneResult",
    "DivergenceError",
    "MemberResult",
    "PretrainSpec",
    "RobustnessCheck",
    "TrainOutcome",
    "TrainSpec",
    "backbone_features",
    "evaluate_loss",
    "extract_representations",
    "feature_task",
    "fgsm",
    "fit",
    "input_scale",
    "nt_xent_loss",
    "pgd",
    "predict_probabilities",
    "pretrain_backbone",
    "pretrain_contrastive",
    "resolve_device",
    "robust_accuracy",
    "shard_task",
    "train_member",
]
