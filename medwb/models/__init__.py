"""Networks (``networks``), training / prediction / embeddings (``train``) and checkpoints (``checkpoint``).

The public names are re-exported here: ``from medwb.models import build_classifier, train, load_checkpoint``.
"""
from __future__ import annotations

from medwb.models.checkpoint import load_checkpoint, save_checkpoint
from medwb.models.networks import Task, TrunkHeadNet, build_classifier, build_from_args, build_segmenter
from medwb.models.train import (TrainConfig, TrainResult, choose_decision, class_weights, decide, decision_of,
                                default_train_config, dice_score, embed, evaluate, predict_labels, predict_proba,
                                recalibrate_batchnorm, train)

__all__ = ["Task", "TrainConfig", "TrainResult", "TrunkHeadNet", "build_classifier", "build_from_args",
           "build_segmenter", "choose_decision", "class_weights", "decide", "decision_of", "default_train_config",
           "dice_score", "embed", "evaluate", "load_checkpoint", "predict_labels", "predict_proba",
           "recalibrate_batchnorm", "save_checkpoint", "train"]
