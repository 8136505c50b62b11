"""Networks (``networks``), training / prediction / embeddings (``train``), checkpoints (``checkpoint``) and
self-supervised pretraining of the trunk (``pretrain``).

The public names are re-exported here: ``from medwb.models import build_classifier, train, load_checkpoint``.
(The function ``pretrain`` is not: that name is the submodule; use ``from medwb.models.pretrain import pretrain``.)
"""
from __future__ import annotations

from medwb.models.checkpoint import load_checkpoint, save_checkpoint
from medwb.models.networks import (Task, TrunkHeadNet, build_classifier, build_ensemble, build_from_args,
                                   build_segmenter)
from medwb.models.pretrain import (PretrainConfig, PretrainResult, init_from_pretrained, load_pretrained,
                                   save_pretrained)
from medwb.models.train import (TrainConfig, TrainResult, choose_decision, class_weights, decide, decision_of,
                                default_train_config, device_of, dice_score, embed, evaluate, predict_labels,
                                predict_proba, recalibrate_batchnorm, train)

__all__ = ["PretrainConfig", "PretrainResult", "Task", "TrainConfig", "TrainResult", "TrunkHeadNet",
           "build_classifier", "build_ensemble", "build_from_args", "build_segmenter", "choose_decision",
           "class_weights", "decide", "decision_of", "default_train_config", "device_of", "dice_score", "embed", "evaluate",
           "init_from_pretrained", "load_checkpoint", "load_pretrained", "predict_labels", "predict_proba",
           "recalibrate_batchnorm", "save_checkpoint", "save_pretrained", "train"]
