"""How one round's network is trained: the loop's pipeline choices in one function.

Why here: the loop decides *what* to train on (the store's labels, the rest of the pool); this module decides
*how*: start from the pretrained trunk (:mod:`medwb.al.representation`) or from random init, then FixMatch on
the labelled cases plus the unlabelled pool (:func:`medwb.models.semi.train_semi`, classification), a mean teacher's
voxel pseudo-labels on the pool (:func:`medwb.models.semi_seg.train_semi_segmentation`, segmentation), or supervised
training on the labelled cases only (:func:`medwb.models.train.train`), and optionally a self-trained student
(:func:`fit_self_trained`: the round's model pseudo-labels the pool, a student learns labels + pseudo-labels; on by
default for segmentation, :func:`uses_self_training`). The all-labels reference of a simulation goes through the
same function, so every curve point and its reference share one recipe.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from medwb.al.representation import finetune_config, with_pretrained
from medwb.errors import DataError

if TYPE_CHECKING:
    from medwb.al.autolabel import Prelabels
    from medwb.data.case_images import Images
    from medwb.data.dataset import Task
    from medwb.models import TrainConfig
    from medwb.models.networks import TrunkHeadNet
    from medwb.models.pretrain import PretrainResult
    from medwb.store import Study


def uses_semi(task: Task, ndim: int, semi: bool | None) -> bool:
    """Whether rounds also train a semi-supervised candidate. Classification (FixMatch): ``None`` means 2D only:
    in 3D the candidate cost 4.5x the round for the same test AUC and lower balanced accuracy (AdrenalMNIST3D,
    120 labels, 3 seeds; benchmarks/active_learning/round_3d_settings); ``True`` asks for it in 3D too.
    Segmentation (mean teacher, :mod:`medwb.models.semi_seg`): ``None`` means :data:`SEGMENTATION_SEMI_DEFAULT`."""
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
              semi_schedule: Mapping[str, float] | None = None, self_train: bool = False,
              previous: TrunkHeadNet | None = None, warm_passes: WarmStart = None,
              ) -> tuple[TrunkHeadNet, dict[str, float]]:
    """Train ``model`` on ``(X, y)`` with early stopping on ``val``; returns (model, metrics).

    ``previous`` (the loop's last model) and ``warm_passes`` (its ``warm_start``): when
    :func:`continued_passes` gives passes for this round's ``semi``, ``self_train`` and labels, continue
    ``previous`` for those passes instead (:func:`fit_continued`, with ``finetune``'s rule when ``pretrained``; ``model``
    unused); otherwise the round trains from ``model`` as without it.

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
    ``self_train``: then the kept model teaches a student (:func:`fit_self_trained`) from the
    same start, kept unless the teacher scores better on validation by :data:`FIXMATCH_MARGIN` or more; metrics
    gain self_trained (1 = student kept), semi_teacher (the teacher's semi), val_score_teacher / val_score_student,
    pseudo_coverage, pseudo_threshold, pseudo_labels (and, with ``test``, test_*_teacher / test_*_student).
    """
    if previous is not None and not warm_passes:
        raise DataError(None, "a continued round needs its passes", "pass warm_passes >= 1 or 'auto' with previous")
    passes = continued_passes(warm_passes, semi, self_train, n_labels=len(y), config=config)
    if previous is not None and passes:
        return fit_continued(previous, X, y, val, task=task, passes=passes, test=test, progress=progress,
                             config=finetune_config(config, finetune) if pretrained is not None else config)
    if self_train:
        _check_self_training_inputs(X_unlabelled)  # before any training, not after the teacher's
        from medwb.al.autolabel import min_cases_to_certify

        need = min_cases_to_certify(SELF_TRAIN_TARGET_ERROR)  # pseudo_label_pool's rule
        if task == "classification" and len(val[1]) < need:
            warnings.warn(f"self-training: {len(val[1])} validation cases cannot bound the pseudo-labels' error at "
                          f"{SELF_TRAIN_TARGET_ERROR:.0%} (that needs at least {need}), so no round will train a "
                          "student. Fix: a larger validation split, or self_train=False", stacklevel=2)
    # the student's start: a classifier's, the round's initial weights; a segmenter's, the teacher (None)
    fresh = copy.deepcopy(model) if self_train and task == "classification" else None
    chosen = _fit_round(model, X, y, val, task=task, config=config, pretrained=pretrained, finetune=finetune,
                        semi=semi, X_unlabelled=X_unlabelled, test=test, progress=progress,
                        semi_schedule=semi_schedule)
    if not self_train:
        return chosen
    teacher, m_teacher = chosen
    pseudo = None
    if X_unlabelled is not None and len(X_unlabelled) and task == "classification":
        pseudo = pseudo_label_pool(teacher, X_unlabelled, val, seed=config.seed)
    if X_unlabelled is None or len(X_unlabelled) == 0 or (pseudo is not None and not pseudo.auto_accept.any()):
        return teacher, {**m_teacher, "self_trained": 0.0, "pseudo_labels": 0.0}  # nothing to teach
    student, m_student = fit_self_trained(fresh, teacher, X, y, X_unlabelled, val, task=task, config=config,
                                          pretrained=pretrained, finetune=finetune, test=test, progress=progress,
                                          pseudo=pseudo)
    t_score, s_score = validation_score(m_teacher), validation_score(m_student)
    keep = keeps_fixmatch(s_score, t_score)
    out_model, out = (student, m_student) if keep else (teacher, m_teacher)
    audit = {f"{k}_{name}": m[k] for name, m in (("teacher", m_teacher), ("student", m_student))
             for k in m_student if k.startswith("test_")}
    extra = {k: m_student[k] for k in ("pseudo_coverage", "pseudo_threshold", "pseudo_labels")}
    return out_model, {**m_teacher, **out, **audit, **extra, "self_trained": float(keep),
                       "semi_teacher": m_teacher.get("semi", 0.0),  # the student's own "semi" is 0
                       "train_seconds": m_teacher["train_seconds"] + m_student["train_seconds"],
                       "val_score_teacher": t_score, "val_score_student": s_score}


def _fit_round(model: TrunkHeadNet, X: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray], *,
               task: Task, config: TrainConfig, pretrained: PretrainResult | str | Path | None, finetune: str,
               semi: bool, X_unlabelled: Images | None, test: tuple[np.ndarray, np.ndarray] | None, progress: bool,
               semi_schedule: Mapping[str, float] | None) -> tuple[TrunkHeadNet, dict[str, float]]:
    """:func:`fit_round` without the self-trained student: supervised training, and FixMatch (mean teacher)
    beside it with ``semi``, the better on validation kept."""
    from medwb.models.train import fit_and_evaluate

    semi = bool(semi and X_unlabelled is not None and len(X_unlabelled) >= 2)
    start = copy.deepcopy(model) if semi else None  # the same initial weights for both candidates
    if pretrained is not None:
        model, config = with_pretrained(model, pretrained), finetune_config(config, finetune)
    Xv, yv = val
    if config.members > 1:
        model, metrics = fit_members(model, X, y, val, task=task, config=config, pretrained=pretrained, test=test,
                                     progress=progress)
    else:
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


#: member k of an ensemble round (TrainConfig.members): built and trained with seed config.seed + k * MEMBER_SEED_STEP
MEMBER_SEED_STEP = 1000


def fit_members(model: TrunkHeadNet, X: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray], *,
                task: Task, config: TrainConfig, pretrained: PretrainResult | str | Path | None = None,
                test: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True,
                ) -> tuple[TrunkHeadNet, dict[str, float]]:
    """The supervised candidate as an ensemble of ``config.members`` networks (``model`` ready to train, its
    trunk already pretrained when ``pretrained``; ``config`` already the fine-tuning one): member 0 is ``model``,
    member k a fresh network of the same build with seed ``config.seed + k * MEMBER_SEED_STEP`` (the pretrained
    trunk loaded again), each trained with its own seed; the round's model is their mean probability
    (:func:`medwb.models.networks.build_ensemble`) with the decision rule chosen again on validation. Metrics as
    :func:`fit_round`'s: best_epoch the members' latest, train_seconds their sum.

    Measured on AdrenalMNIST3D (benchmarks/active_learning/ensemble_3d/): three members gave +0.009 test AUC
    over one network on every one of 5 fixed 120-label sets, and +0.010 with all labels, so the share of the
    all-labels model stays level; at 3x the training, an opt-in."""
    from medwb.models.networks import build_ensemble, build_from_args
    from medwb.models.train import TrainResult, fit_and_evaluate, round_metrics, validation_decision

    Xv, yv = val
    members, rows = [], []
    for k in range(config.members):
        seed = config.seed + k * MEMBER_SEED_STEP
        net = model if k == 0 else build_from_args({**model.build_args, "seed": seed})
        if k and pretrained is not None:
            net = with_pretrained(net, pretrained)
        net, m = fit_and_evaluate(net, X, y, Xv, yv, task=task, config=replace(config, seed=seed, members=1),
                                  progress=progress)
        members.append(net)
        rows.append(m)
    ensemble = build_ensemble(members)
    ensemble.decision = validation_decision(ensemble, Xv, yv, task, config)  # train()'s rule, on the mean
    res = TrainResult(ensemble, best_epoch=max(int(m["best_epoch"]) for m in rows),
                      seconds=sum(m["train_seconds"] for m in rows))
    return ensemble, round_metrics(res, len(y), Xv, yv, test)


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


#: the loop's default ``warm_start``: continue the last model for this many passes, and only in the rounds where
#: a start from the trunk would train more, in epochs of at most
#: :data:`AUTO_MAX_PASSES_PER_EPOCH` passes (:func:`continued_passes`)
AUTO_WARM_PASSES = 40
AUTO_MAX_PASSES_PER_EPOCH = 2

#: the loop's ``warm_start``: PASSES (every round that can), "auto" (the default: see :func:`continued_passes`) or
#: None (never)
WarmStart = int | Literal["auto"] | None


def check_warm_start(passes: WarmStart, task: Task) -> WarmStart:
    """The loop's ``warm_start`` checked now: None (off), "auto" or a whole number of passes >= 1, for
    classification, the one task where continuing the last round's model was measured
    (benchmarks/active_learning/warm_start); "auto" is None for other tasks."""
    if passes is None:
        return None
    if passes == "auto":
        return "auto" if task == "classification" else None
    if isinstance(passes, bool | str) or int(passes) != passes or int(passes) < 1:
        raise DataError(None, f"warm_start={passes!r}",
                        "pass a number of passes over the labels, e.g. 40, 'auto' or None")
    if task != "classification":
        raise DataError(None, f"warm_start is measured for classification rounds only, not {task}",
                        "leave warm_start unset (None) for this study")
    return int(passes)


def continued_passes(warm_start: WarmStart, semi: bool, self_train: bool, *, n_labels: int,
                     config: TrainConfig) -> int | None:
    """The passes a round continues the last registered model for (the loop's ``warm_start``) instead of training
    from the start, or None: only when asked and when the round trains the supervised candidate alone. A round
    that also trains FixMatch (``semi``: still ahead on validation) or a self-trained student starts from the
    pretrained trunk as before: those candidates start there, so a continued supervised one would save little
    and be chosen against unlike starts. An ensemble round (``config.members`` > 1) trains its members afresh too.
    The first round has no model to continue (the loop passes None).

    "auto" continues for :data:`AUTO_WARM_PASSES` passes only in a schedule that asks for passes (``min_passes``:
    2D classification) where an epoch of a start from the trunk is at most :data:`AUTO_MAX_PASSES_PER_EPOCH`
    whole passes over the labels (``min_batches_per_epoch`` batches of them: 512+ labels in 2D classification) and
    that start would train more passes than the continuation (not past ``max_steps``' cap). From there a fresh
    round's cost grows with the labels (80 passes over them); below, an epoch is 3+ passes and a round costs about
    the same whatever its size. BloodMNIST's loop with rounds continued from 512 labels (3 seeds, paired with a
    fresh start on one trunk): 0.955 against 0.950 test accuracy at 10%, 0.940 against 0.933 at 5% (every seed),
    each continued round in about half the training; PneumoniaMNIST's continued rounds below 512 labels (95-475, a
    fresh round 39 s) gained nothing, its fixed sets of 600-960 were level or ahead
    (benchmarks/active_learning/warm_start, sections 5-7)."""
    if not warm_start or semi or self_train or config.members > 1:
        return None
    if warm_start != "auto":
        return int(warm_start)
    from medwb.models.train import epoch_passes, scheduled_epochs

    if config.min_passes <= 0 or n_labels <= 0:
        return None
    per_epoch = epoch_passes(n_labels, config)
    fresh_passes = scheduled_epochs(n_labels, config)[0] * per_epoch
    return AUTO_WARM_PASSES if per_epoch <= AUTO_MAX_PASSES_PER_EPOCH and fresh_passes > AUTO_WARM_PASSES else None


def fit_continued(previous: TrunkHeadNet, X: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray], *,
                  task: Task, config: TrainConfig, passes: int,
                  test: tuple[np.ndarray, np.ndarray] | None = None,
                  progress: bool = True) -> tuple[TrunkHeadNet, dict[str, float]]:
    """A round that continues the previous round's trained model (a copy; ``previous`` is left as it is) on the
    grown labelled set for ``passes`` passes (:func:`medwb.models.train.passes_config`: cosine from the round's
    rate, run to the end, the best epoch on validation), instead of :func:`fit_round`'s start from the
    pretrained trunk with at least ``min_passes`` passes: the loop's ``warm_start``. Why: a BloodMNIST round at
    10% of the labels trains 80 passes over 1 200 labels from the trunk. Chains of rounds continued with 40
    passes each (240 -> 1 200 nested random labels, 3 seeds) ended at test accuracy 0.937 +- 0.005 against the
    fresh start's 0.935 +- 0.005 (at or above it on every seed) for 0.55x its training time; with 20 passes
    0.932 +- 0.009 (benchmarks/active_learning/warm_start). Metrics as :func:`fit_round`'s plus warm_start (1)
    and warm_passes."""
    from medwb.models.train import fit_and_evaluate, passes_config

    model, metrics = fit_and_evaluate(copy.deepcopy(previous), X, y, *val, task=task,
                                      config=passes_config(config, len(y), passes), test=test, progress=progress)
    return model, {**metrics, "semi": 0.0, "warm_start": 1.0, "warm_passes": float(passes)}


#: self-training's defaults (BloodMNIST, 600 random labels, 3 draws: benchmarks/active_learning/recipes, session 25)
#: the pseudo-labels' error bound on validation (the auto-label rule; 0.05 accepted more of the pool than 0.02, and
#: the student was better for it), the expert labels' share of the student's cases (each repeated), the student's
#: epochs over labels + pseudo-labels (cosine, run to the end)
SELF_TRAIN_TARGET_ERROR = 0.05
SELF_TRAIN_LABEL_SHARE = 0.5
SELF_TRAIN_EPOCHS = 8
#: a segmentation student's epochs over the expert masks + every pool image's argmax mask, started from the teacher,
#: by spatial dimensions (fixed random label sets, 3 seeds, benchmarks/active_learning/seg_self_training_start: 8
#: epochs from it +0.014 test Dice over the teacher on HC18 (16 labels), +0.0045 on hippocampus (17), every seed; 4
#: epochs +0.014 / +0.0024; a fresh network's 16 epochs +0.017 / +0.005). 2D takes 4: as good on HC18 at 9, 16 and
#: 27 labels (.../seg_self_training_2d_epochs) for half the student's time, which brings an HC18 round under a
#: minute. 3D takes 6, where 4 lost half the gain: level with 8 on hippocampus fixed sets (0.8302 both, /t6 rows)
#: and in the loop at 10% (0.837 +- 0.001 against 0.837 +- 0.002, the same teachers; the round's training 346-367 s
#: against 400-488 s, .../hippocampus_student_6_epochs). A classifier's student starts fresh (SELF_TRAIN_EPOCHS,
#: measured on BloodMNIST).
SELF_TRAIN_SEGMENTATION_EPOCHS: dict[int, int] = {2: 4, 3: 6}


def uses_self_training(task: Task, self_train: bool | None, streamed: bool) -> bool:
    """Whether a loop's rounds also train a self-trained student: the round's kept model pseudo-labels the rest
    of the pool (classification: with the auto-label rule; segmentation: every image's argmax mask) and a student
    learns labels + pseudo-labels, kept unless validation prefers the round's model (:func:`fit_self_trained`;
    pseudo-labels are never stored). ``None``: segmentation yes (unless the pool is streamed: the student holds
    its pseudo-labelled images), classification no. Segmentation, because it is the one use of the pool measured
    to help masks, on every seed of both sets (HC18 16 labels: +0.014 test Dice; hippocampus: the 10% target
    met only with it), while pretraining and the mean teacher did not; classification, because it helped only
    where validation certifies the pseudo-labels and the pool is large (BloodMNIST 5%), and the FixMatch rounds
    already use the pool. ``True`` on a streamed pool is refused with the fix."""
    from medwb.errors import StoreError

    if self_train and streamed:
        raise StoreError("self_train needs the pool held in memory. Fix: pass self_train=False or stream=False")
    return (task == "segmentation" and not streamed) if self_train is None else bool(self_train)


def _check_self_training_inputs(X_unlabelled: Images | None) -> None:
    """Self-training's inputs, refused with the fix: a pool held in memory."""
    from medwb.data.case_images import is_streamed

    if X_unlabelled is not None and is_streamed(X_unlabelled):
        raise DataError(None, "self-training keeps the pseudo-labelled pool cases in memory, and this pool is "
                        "streamed", "load the pool in memory (stream=False) or turn self-training off")


def pseudo_label_pool(teacher: TrunkHeadNet, X_unlabelled: Images, val: tuple[np.ndarray, np.ndarray], *,
                      target_error: float = SELF_TRAIN_TARGET_ERROR, seed: int = 0,
                      confidence_level: float = 0.95) -> Prelabels:
    """The teacher's labels for the unlabelled pool under medwb's auto-label rule (temperature on validation,
    then the lowest confidence threshold whose accepted validation cases keep the error bound, at
    ``confidence_level``, <= ``target_error``; ``auto_accept`` marks the cases a student may learn). Training
    signal only: never written to the store."""
    from medwb.al.autolabel import fit_autolabel, prelabel
    from medwb.models.train import predict_proba

    Xv, yv = val
    t, choice = fit_autolabel(predict_proba(teacher, Xv), np.asarray(yv), target_error=target_error, seed=seed,
                              confidence_level=confidence_level)
    return prelabel(predict_proba(teacher, X_unlabelled), t, choice.threshold)


def pseudo_masks(teacher: TrunkHeadNet, X_unlabelled: Images, *, batch_size: int = 16) -> np.ndarray:
    """The teacher's voxel labels (argmax) for every pool image, shaped like the expert masks (N, 1, ...): a
    segmentation student's pseudo-masks. Training signal only: never written to the store."""
    from medwb.models.train import predict_proba

    out = [predict_proba(teacher, X_unlabelled[i:i + batch_size]).argmax(1)[:, None]
           for i in range(0, len(X_unlabelled), batch_size)]
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 1, *np.shape(X_unlabelled)[2:]), np.int64)


def fit_self_trained(model: TrunkHeadNet | None, teacher: TrunkHeadNet, X: np.ndarray, y: np.ndarray,
                     X_unlabelled: Images, val: tuple[np.ndarray, np.ndarray], *, task: Task = "classification",
                     config: TrainConfig,
                     pretrained: PretrainResult | str | Path | None = None, finetune: str = "full",
                     test: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True,
                     target_error: float = SELF_TRAIN_TARGET_ERROR, label_share: float = SELF_TRAIN_LABEL_SHARE,
                     epochs: int | None = None, pseudo: Prelabels | None = None
                     ) -> tuple[TrunkHeadNet, dict[str, float]]:
    """Offline self-training: ``teacher`` (the round's trained model) labels ``X_unlabelled`` (classification:
    :func:`pseudo_label_pool`, the cases its rule accepts; segmentation: :func:`pseudo_masks`, every volume), and
    ``model`` (its pretrained trunk loaded first; None: a copy of the teacher, as a segmenter's round starts it)
    learns the expert labels, each repeated until they are
    ``label_share`` of its cases, plus the pseudo-labels, for ``epochs`` cosine epochs run to the end (None:
    :data:`SELF_TRAIN_EPOCHS`, :data:`SELF_TRAIN_SEGMENTATION_EPOCHS` by dimensions), the best on validation
    kept. Why: FixMatch's online pseudo-labels did not help 8-class BloodMNIST at a CPU budget, while a
    converged teacher's did (600 random labels: test accuracy 0.915 -> 0.926; the loop at 5%: 0.928 -> 0.946 =
    0.977x full, benchmarks/active_learning/bloodmnist_self_training_loop); nor did an online mean teacher help hippocampus
    masks, while this did (the loop at 10%: Dice 0.831 -> 0.836 = 0.975x full, .../hippocampus_self_training).
    Metrics as :func:`fit_round`'s (n_labeled = the expert labels) plus pseudo_coverage (share of the pool
    accepted), pseudo_threshold and pseudo_labels (how many). ``pseudo``: the teacher's pseudo-labels when already
    computed."""
    from dataclasses import replace

    from medwb.models.train import round_metrics, train

    _check_self_training_inputs(X_unlabelled)
    if not 0 <= label_share < 1:
        raise DataError(None, f"label_share={label_share}", "use a share in [0, 1), e.g. 0.5")
    if task == "segmentation":  # every pool image, its argmax mask
        if len(X_unlabelled) == 0:
            raise DataError(None, "self-training: the pool holds no unlabelled image to pseudo-label",
                            "train the round without self-training once every pool image is labelled")
        keep, threshold = np.arange(len(X_unlabelled)), float("nan")
        y, pseudo_y = np.asarray(y), pseudo_masks(teacher, X_unlabelled)
        y = y[:, None] if y.ndim == pseudo_y.ndim - 1 else y  # masks given without their channel axis
    else:
        y = np.asarray(y).reshape(-1)
        if pseudo is None:
            pseudo = pseudo_label_pool(teacher, X_unlabelled, val, target_error=target_error, seed=config.seed)
        keep, threshold, pseudo_y = np.flatnonzero(pseudo.auto_accept), float(pseudo.threshold), pseudo.labels
        pseudo_y = pseudo_y[keep]
    if len(keep) == 0:  # classification: none accepted
        raise DataError(None, "the teacher's pseudo-labels: none meets the auto-label rule's error bound",
                        "raise target_error, or train the round without self-training")
    reps = max(1, round(label_share * len(keep) / (1 - label_share) / max(1, len(y))))
    X_s = np.concatenate([np.repeat(np.asarray(X)[None], reps, axis=0).reshape(-1, *np.shape(X)[1:]),
                          np.asarray(X_unlabelled[keep], dtype=np.float32)])
    y_s = np.concatenate([np.repeat(y[None], reps, axis=0).reshape(-1, *y.shape[1:]), pseudo_y])
    if model is None:  # the teacher's weights, its pretrained trunk already in them
        model = copy.deepcopy(teacher)
        config = finetune_config(config, finetune) if pretrained is not None else config
    elif pretrained is not None:
        model, config = with_pretrained(model, pretrained), finetune_config(config, finetune)
    if epochs is None:  # never more than the round's own schedule (a quick run stays quick)
        own = SELF_TRAIN_SEGMENTATION_EPOCHS[np.ndim(X) - 2] if task == "segmentation" else SELF_TRAIN_EPOCHS
        epochs = min(own, config.epochs)
    # every epoch validated, as measured (the student's 8 epochs were never timed against a shorter validation)
    config = replace(config, epochs=int(epochs), patience=int(epochs), min_passes=0, validate_from=0.0)
    res = train(model, X_s, y_s, *val, task=task, config=config, progress=progress)
    return res.model, {**round_metrics(res, len(y), *val, test), "semi": 0.0,
                       "pseudo_coverage": float(len(keep) / max(1, len(X_unlabelled))),
                       "pseudo_threshold": threshold, "pseudo_labels": float(len(keep))}


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
