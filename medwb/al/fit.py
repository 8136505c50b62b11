"""How one round's network is trained: the loop's pipeline choices in one function.

Why here: the loop decides *what* to train on (the store's labels, the rest of the pool); this module decides
*how*: start from the pretrained trunk (:mod:`medwb.al.representation`) or from random init, then FixMatch on
the labelled cases plus the unlabelled pool (:func:`medwb.models.semi.train_semi`, classification), a mean teacher's
voxel pseudo-labels on the pool (:func:`medwb.models.semi_seg.train_semi_segmentation`, segmentation), or supervised
training on the labelled cases only (:func:`medwb.models.train.train`). The all-labels reference of a simulation
goes through the same function, so every curve point and its reference share one recipe.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medwb.al.representation import finetune_config, with_pretrained

if TYPE_CHECKING:
    from medwb.data.case_images import Images
    from medwb.data.dataset import Task
    from medwb.models import TrainConfig
    from medwb.models.networks import TrunkHeadNet
    from medwb.models.pretrain import PretrainResult
    from medwb.store import Study


def uses_semi(task: Task, ndim: int, semi: bool | None) -> bool:
    """Whether rounds also train a semi-supervised candidate. Classification (FixMatch): ``None`` means 2D only,
    since a 3D FixMatch step of 128 volumes costs seconds on a CPU and its schedule is not yet measured (``True``
    asks for it in 3D too). Segmentation (mean teacher, :mod:`medwb.models.semi_seg`): ``None`` means
    :data:`SEGMENTATION_SEMI_DEFAULT`."""
    if task == "segmentation":
        return SEGMENTATION_SEMI_DEFAULT if semi is None else bool(semi)
    return task == "classification" and (ndim == 2 if semi is None else bool(semi))


#: whether segmentation rounds train the mean-teacher candidate unless asked otherwise (see uses_semi). Off: on
#: hippocampus at 10% it lost to supervised training (test Dice 0.807 vs 0.818, 3 seeds; no variant ahead,
#: benchmarks/active_learning/hippocampus_semi), and it costs twice the round's training time.
SEGMENTATION_SEMI_DEFAULT = False


def check_semi_schedule(config: TrainConfig, schedule: Mapping[str, float] | None,
                        task: Task = "classification") -> dict[str, float]:
    """``schedule`` as overrides of the semi-supervised candidate's settings, checked now (not rounds later):
    known fields of :class:`~medwb.models.semi.SemiConfig` (classification, FixMatch) or
    :class:`~medwb.models.semi_seg.SemiSegConfig` (segmentation, mean teacher) with valid values for a round
    trained with ``config``."""
    from medwb.errors import DataError
    from medwb.models.semi import SemiConfig, semi_config_from
    from medwb.models.semi_seg import SemiSegConfig, semi_seg_config_from

    cls, build = (SemiSegConfig, semi_seg_config_from) if task == "segmentation" else (SemiConfig, semi_config_from)
    schedule = dict(schedule or {})
    unknown = set(schedule) - {f.name for f in fields(cls)}
    if unknown:
        raise DataError(None, f"unknown semi-supervised setting(s) {sorted(unknown)}",
                        f"use {cls.__name__} fields: {', '.join(f.name for f in fields(cls))}")
    build(config, **schedule)  # its own checks (e.g. steps_per_epoch >= 1) raise here
    return schedule


def fit_round(model: TrunkHeadNet, X: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray], *,
              task: Task, config: TrainConfig, pretrained: PretrainResult | str | Path | None = None,
              finetune: str = "full", semi: bool = False, X_unlabelled: np.ndarray | None = None,
              test: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True,
              semi_schedule: Mapping[str, float] | None = None) -> tuple[TrunkHeadNet, dict[str, float]]:
    """Train ``model`` on ``(X, y)`` with early stopping on ``val``; returns (model, metrics).

    ``pretrained``: load its trunk first and use ``finetune`` (``full`` or ``head``). ``semi``: when at least 2
    unlabelled images remain, also train the semi-supervised candidate with ``X_unlabelled`` from the same start
    (classification: FixMatch, :func:`fit_fixmatch`; segmentation: a mean teacher, :func:`fit_mean_teacher`), and
    keep it unless supervised training scores clearly better on validation
    (:func:`keeps_fixmatch`, :func:`validation_score`); ``semi_schedule``
    overrides the candidate's own settings (:func:`check_semi_schedule`). FixMatch is not
    always the better one: on BloodMNIST (8 classes) it lost to supervised training at 240 and 1200 labels
    (test accuracy 0.835 vs 0.846, 0.898 vs 0.920), on PneumoniaMNIST it won at 50 labels (AUC 0.951 vs 0.945;
    benchmarks/active_learning/recipes); the loop stops asking for FixMatch once it lost a round
    (:func:`fixmatch_still_ahead`). Metrics: n_labeled, best_epoch, train_seconds (both candidates), semi
    (1 = FixMatch kept), val_score_supervised / val_score_semi (when both ran), val_* and, with ``test``,
    test_* (and, when both ran, each candidate's as test_*_supervised / test_*_semi).
    """
    from medwb.models.train import fit_and_evaluate

    semi = bool(semi and X_unlabelled is not None and len(X_unlabelled) >= 2)
    start = copy.deepcopy(model) if semi else None  # the same initial weights for both candidates
    if pretrained is not None:
        model, config = with_pretrained(model, pretrained), finetune_config(config, finetune)
    Xv, yv = val
    model, metrics = fit_and_evaluate(model, X, y, Xv, yv, task=task, config=config, test=test, progress=progress)
    metrics = {**metrics, "semi": 0.0}
    if start is None:
        return model, metrics
    fit_semi = fit_mean_teacher if task == "segmentation" else fit_fixmatch
    semi_model, semi_metrics = fit_semi(start, X, y, X_unlabelled, val, config=config, pretrained=pretrained,
                                        test=test, progress=progress, semi_schedule=semi_schedule)
    sup_score, semi_score = validation_score(metrics), validation_score(semi_metrics)
    chosen = (semi_model, semi_metrics) if keeps_fixmatch(semi_score, sup_score) else (model, metrics)
    # both candidates' cost and validation score travel with the round, so the choice can be audited; in a
    # simulation (``test`` given) also both candidates' test metrics, so whether validation chose the better one
    # on the test split can be counted afterwards
    audit = {f"{k}_{name}": v for name, m in (("supervised", metrics), ("semi", semi_metrics))
             for k, v in m.items() if k.startswith("test_")}
    return chosen[0], {**chosen[1], "train_seconds": metrics["train_seconds"] + semi_metrics["train_seconds"],
                       "val_score_supervised": sup_score, "val_score_semi": semi_score, **audit}


def fit_fixmatch(model: TrunkHeadNet, X: np.ndarray, y: np.ndarray, X_unlabelled: np.ndarray,
                 val: tuple[np.ndarray, np.ndarray], *, config: TrainConfig,
                 pretrained: PretrainResult | str | Path | None = None, test: tuple[np.ndarray, np.ndarray] | None = None,
                 progress: bool = True, semi_schedule: Mapping[str, float] | None = None,
                 ) -> tuple[TrunkHeadNet, dict[str, float]]:
    """FixMatch on ``(X, y)`` plus ``X_unlabelled`` from ``model`` (its pretrained trunk loaded first), with the
    round's schedule (:func:`medwb.models.semi.semi_config_from` of ``config`` and ``semi_schedule``): the
    candidate :func:`fit_round` sets against supervised training, and what benchmarks train alone. Metrics as
    :func:`fit_round`'s, ``semi`` 1."""
    from medwb.models.semi import semi_config_from, train_semi
    from medwb.models.train import round_metrics

    if pretrained is not None:
        model = with_pretrained(model, pretrained)
    if config.freeze_trunk:
        for p in model.trunk.parameters():
            p.requires_grad_(False)
    Xv, yv = val
    res = train_semi(model, X, y, X_unlabelled, Xv, yv, config=semi_config_from(config, **(semi_schedule or {})),
                     progress=progress)
    return res.model, {**round_metrics(res, len(y), Xv, yv, test), "semi": 1.0}


def fit_mean_teacher(model: TrunkHeadNet, X: np.ndarray, y: np.ndarray, X_unlabelled: Images,
                     val: tuple[np.ndarray, np.ndarray], *, config: TrainConfig,
                     pretrained: PretrainResult | str | Path | None = None,
                     test: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True,
                     semi_schedule: Mapping[str, float] | None = None) -> tuple[TrunkHeadNet, dict[str, float]]:
    """The segmentation round's semi-supervised candidate: a mean teacher's confident voxel pseudo-labels on
    ``X_unlabelled`` (:func:`medwb.models.semi_seg.train_semi_segmentation`) from ``model`` (its pretrained trunk
    loaded first), with the round's schedule (:func:`~medwb.models.semi_seg.semi_seg_config_from` of ``config``
    and ``semi_schedule``). Metrics as :func:`fit_round`'s, ``semi`` 1."""
    from medwb.models.semi_seg import semi_seg_config_from, train_semi_segmentation
    from medwb.models.train import round_metrics

    if pretrained is not None:
        model = with_pretrained(model, pretrained)
    Xv, yv = val
    res = train_semi_segmentation(model, X, y, X_unlabelled, Xv, yv,
                                  config=semi_seg_config_from(config, **(semi_schedule or {})), progress=progress)
    return res.model, {**round_metrics(res, len(y), Xv, yv, test), "semi": 1.0}


#: how much lower FixMatch's validation score (mean of AUC and balanced accuracy) may be and still be kept, and
#: tried again next round: a difference within validation's own noise (PneumoniaMNIST's 524 validation cases)
FIXMATCH_MARGIN = 0.01


def keeps_fixmatch(semi_score: float, supervised_score: float) -> bool:
    """Whether a round keeps its FixMatch candidate: unless supervised training scores better on validation by
    :data:`FIXMATCH_MARGIN` or more. A close call goes to the candidate that learnt from the whole pool: on
    PneumoniaMNIST (the demo's configuration, 4 seeds, 14 rounds that trained both) FixMatch was ahead on the test
    split in 7 of the 7 close calls (AUC +0.015 on average) while validation AUC sat at 0.98-0.99 for both
    (benchmarks/active_learning/fixmatch_choice/). Where supervised training really was better (BloodMNIST) it
    led by 0.02-0.05."""
    return float(semi_score) > float(supervised_score) - FIXMATCH_MARGIN


def fixmatch_still_ahead(study: Study) -> bool:
    """Whether a round should still train FixMatch beside supervised training: yes until the last round that
    trained both had supervised training score clearly better on validation (not :func:`keeps_fixmatch`); from
    then on no more. Labels only grow, and FixMatch's edge shrinks with them: on BloodMNIST it lost every round of
    both arms that tried it (5 of 5 and 4 of 4, by 0.02-0.05), which doubled the round's training time for nothing;
    on PneumoniaMNIST it won most draws, and where validation preferred supervised training the test split did
    not (benchmarks/active_learning/recipes), so a close loss keeps it. (Until session 17 only the last model was
    read, so a round without FixMatch made the next one try it again: every other BloodMNIST round.)"""
    models = study.models()
    both = [m for m in models["metrics"] if m.get("val_score_semi") is not None
            and m.get("val_score_supervised") is not None] if len(models) else []
    return not both or keeps_fixmatch(both[-1]["val_score_semi"], both[-1]["val_score_supervised"])


def validation_score(metrics: dict[str, float]) -> float:
    """What a round's two candidates (supervised, semi-supervised) are compared on: segmentation, the
    validation Dice; classification, the mean of validation AUC and balanced accuracy (a one-class predictor
    cannot win it; NaN AUC -> balanced accuracy alone)."""
    if "val_dice" in metrics:
        dice = metrics["val_dice"]
        return float(dice) if dice == dice else float("-inf")
    auc, bal = metrics.get("val_auc", float("nan")), metrics.get("val_balanced_accuracy", float("nan"))
    vals = [v for v in (auc, bal) if v == v]
    return float(np.mean(vals)) if vals else float("-inf")
