"""Training (AdamW, early stopping on the validation split), prediction and embeddings of medwb's networks."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from medwb.data.case_images import CaseImages, Images, Stacked, rows
from medwb.errors import DataError
from medwb.models.augment import augment_batch, check_augment, default_augment
from medwb.models.checkpoint import save_checkpoint
from medwb.models.networks import Task, TrunkHeadNet

LR_SCHEDULES = ("cosine", "constant")
#: classification rounds: batches per epoch at least this (a few hundred labels would otherwise get a few
#: hundred optimiser steps in all; the all-labels reference is unchanged)
CLASSIFIER_MIN_BATCHES = 32
#: classification rounds: at least this many passes over the labels (see scheduled_epochs)
CLASSIFIER_MIN_PASSES = 80
#: classification rounds whose cosine schedule runs to its end validate only its second half (see
#: TrainConfig.validate_from): there the kept epoch was always late (BloodMNIST, 3 seeds: 1 200 labels from the
#: trunk, best epochs 62-65 of 80; 24 rounds continuing the last model, 7-40 epochs each, every best epoch in the
#: second half; benchmarks/active_learning/warm_start), so the same epochs are kept, while a validation (BatchNorm
#: statistics over the labels, then the validation split) costs about half a 1 200-label epoch's training
CLASSIFIER_VALIDATE_FROM = 0.5
#: 3D classification rounds: as good as the 2D schedule and 2.6x cheaper (AdrenalMNIST3D, 120 random labels, 3
#: draws: test AUC 0.854 +- 0.010 / accuracy 0.801 against 0.861 +- 0.014 / 0.762 with 40 cosine epochs of 32
#: batches, 50 s against 132 s; all 1188 labels 0.880 / 0.785 against 0.875 / 0.799; best epoch 9 either way)
VOLUME_CLASSIFIER_SCHEDULE = {"epochs": 15, "min_batches_per_epoch": 8, "patience": 6, "select_on": "loss",
                              "lr_schedule": "constant"}


@dataclass
class TrainConfig:
    """Training schedule. Defaults suit a few hundred 28 px images on 2 CPU cores (one AL round)."""

    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 8            # epochs without validation improvement before stopping
    select_on: str = "auto"      # best epoch by "balanced" (val balanced accuracy, ties by AUC then loss), "loss"
    #                              (val loss) or "metric" (val AUC / Dice, ties by loss); "auto": classification ->
    #                              "balanced", segmentation -> "metric" (Dice). See train().
    max_class_weight_ratio: float = 10.0  # balance_classes: cap on the largest / smallest class weight
    tune_decision: bool = True   # choose the decision rule on validation (binary threshold / multi-class offsets)
    validate_exact_bn: bool | None = None  # validate each epoch with BatchNorm statistics recomputed on the
    #                              labelled set (what the returned model gets); None: classification only
    min_batches_per_epoch: int = 0  # tiny labelled sets: repeat reshuffled passes until an epoch has this many
    min_epochs: int = 5          # never stop before this
    balance_classes: bool = True  # class-weighted cross-entropy (classification)
    augment: str = "shift"       # label-safe batch augmentation (medwb.models.augment): "none", "shift" (+-2
    #                              voxels), "flip" or "dihedral" (flips + 90-degree turns: orientation-free images);
    #                              True / False (the older boolean setting) mean "shift" / "none"
    lr_schedule: str = "cosine"  # "cosine" (decay to 0 over epochs x batches per epoch) or "constant"
    seed: int = 0
    max_seconds: float | None = None  # wall-clock cap; stops after the epoch that crosses it
    freeze_trunk: bool = False   # train the head only on the trunk's features, computed once (no augmentation)
    min_passes: int = 0          # at least this many passes over the labels: ``epochs`` is raised (up to twice
    #                              itself and ``max_steps`` optimiser steps), and such a raised cosine schedule runs
    #                              to its end (see scheduled_epochs)
    max_steps: int = 4000        # the cap on the steps ``min_passes`` may add
    validate_from: float = 0.0   # a cosine schedule run to its end (patience >= epochs, e.g. raised by min_passes):
    #                              validate only after this share of its epochs (first_validated_epoch); early
    #                              stopping and constant rates validate every epoch
    mixup: float = 0.0           # classification: blend each batch with a shuffled copy of itself (and the loss
    #                              with both labels), weight ~ Beta(mixup, mixup); 0 = off. Off by default: BloodMNIST,
    #                              600 labels, 3 draws: 0.2 -> +0.002 accuracy, 1.0 -> -0.013 (benchmarks/
    #                              active_learning/recipes/bloodmnist_mixup)
    ema: float | None = None     # validate, select and return an exponential moving average of the weights with
    #                              this decay (0.99: FixMatch's rule; moving_average); None: off. Off by default:
    #                              fixed label sets, level on BloodMNIST, behind on PneumoniaMNIST's test split,
    #                              a wider seed spread on AdrenalMNIST3D (benchmarks/active_learning/ema)
    precision: str = "fp32"      # "bf16": training steps and each epoch's validation under CPU autocast to
    #                              bfloat16 (weights, loss, metrics and what train returns or reports stay fp32);
    #                              CPUs with native bf16 only (check_precision). default_train_config's choice for
    #                              3D segmentation there; opt-in elsewhere (benchmarks/active_learning/precision:
    #                              hippocampus level Dice, BloodMNIST level, PneumoniaMNIST's shifted test behind)
    members: int = 1             # a round's supervised model: the mean probability of this many networks, each
    #                              built and trained with its own seed (medwb.al.fit.fit_members); 1 = one network.
    #                              Opt-in: K times the training (AdrenalMNIST3D: +0.01 AUC at 120 labels and with all)

    def __post_init__(self) -> None:
        self.augment = check_augment(self.augment)
        self.precision = check_precision(self.precision)
        if self.lr_schedule not in LR_SCHEDULES:
            raise DataError(None, f"unknown learning-rate schedule {self.lr_schedule!r}",
                            f"use lr_schedule in {LR_SCHEDULES}")
        if self.ema is not None and not 0.0 <= float(self.ema) < 1.0:
            raise DataError(None, f"ema={self.ema}", "use a decay in [0, 1), typically 0.99, or None (off)")
        if int(self.members) < 1:
            raise DataError(None, f"members={self.members}", "use 1 (one network) or more (an ensemble of that many)")
        if not float(self.mixup) >= 0:  # a negative (or NaN) value would switch mixup off without a word
            raise DataError(None, f"mixup={self.mixup}", "use 0 (off) or a Beta parameter > 0, typically 0.2")


def default_train_config(task: Task, *, seed: int = 0, modality: str | None = None, spatial_dims: int = 2,
                         **overrides: Any) -> TrainConfig:
    """The schedule an active-learning round uses for ``task`` on images of ``modality``, with ``overrides``
    (TrainConfig fields). Orientation-free modalities (microscopy, pathology, dermoscopy) train with every flip
    and 90-degree turn (:func:`medwb.models.augment.default_augment`); others with the small shift only.

    Segmentation: batches of 8 volumes and at least 8 batches per epoch, so 10 labelled volumes get as many
    optimizer steps per epoch as 60 (one 32-volume batch per epoch left a 3D UNet under-trained: Dice 0.55
    vs 0.84 with 8-volume batches in the hippocampus benchmarks). Classification: at least
    :data:`CLASSIFIER_MIN_BATCHES` batches per epoch, for the same reason (BloodMNIST, 240 labels: 8 batches
    per epoch, 40 epochs -> test accuracy 0.840; 1200 steps -> 0.869). 2D classification also gets at least
    :data:`CLASSIFIER_MIN_PASSES` passes over the labels (:func:`scheduled_epochs`: 1200 BloodMNIST labels, 0.926
    -> 0.938). 3D volumes peak early (AdrenalMNIST3D: best epoch 9 of 40) and a step costs ~10x a 2D one, so 3D
    classification trains :data:`VOLUME_CLASSIFIER_SCHEDULE` (measured as good, 2.6x cheaper). An explicit
    ``epochs`` override trains exactly that many epochs (``min_passes`` 0 unless given too). 3D segmentation
    trains its steps in bfloat16 on a CPU that computes it natively (:func:`has_native_bf16`; the same Dice on
    MSD hippocampus at about 0.7-0.8x the training time, benchmarks/active_learning/precision); ``precision="fp32"``
    turns that off.
    """
    base: dict[str, Any] = {"seed": seed, "augment": default_augment(modality)}
    if task == "segmentation":
        base.update(batch_size=8, min_batches_per_epoch=8)
        if int(spatial_dims) == 3 and has_native_bf16():
            base.update(precision="bf16")  # the same Dice in less time (see above)
    else:
        base.update(min_batches_per_epoch=CLASSIFIER_MIN_BATCHES, min_passes=CLASSIFIER_MIN_PASSES,
                    validate_from=CLASSIFIER_VALIDATE_FROM)
        if int(spatial_dims) == 3:
            base.update(VOLUME_CLASSIFIER_SCHEDULE, min_passes=0)
    unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise DataError(None, f"unknown training setting(s) {sorted(unknown)}",
                        f"use TrainConfig fields: {', '.join(f.name for f in fields(TrainConfig))}")
    if overrides.get("epochs") is not None and overrides.get("min_passes") is None:
        base["min_passes"] = 0  # epochs asked for explicitly (--epochs, a notebook parameter): exactly those
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


@dataclass
class TrainResult:
    model: TrunkHeadNet
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    val_metric: float = float("nan")
    metric_name: str = ""
    seconds: float = 0.0
    #: binary tasks: predict class 1 when P(class 1) >= threshold (chosen on validation; 0.5 = argmax)
    threshold: float | None = None
    #: multi-class tasks: predict argmax(log P + class_offsets) (per-class prior correction chosen on validation)
    class_offsets: list[float] | None = None

    @property
    def decision(self) -> dict[str, Any]:
        """The decision rule as stored in a checkpoint's meta: ``{"threshold": t}`` / ``{"class_offsets": [...]}``
        (empty: argmax). Pass it to :func:`predict_labels`."""
        return decision_of(self.model)


SELECT_ON = ("auto", "balanced", "loss", "metric")

#: a decision rule: None (the model's own), a binary threshold, or a dict / checkpoint meta / TrainResult
#: holding ``threshold`` or ``class_offsets``
Decision = float | dict[str, Any] | TrainResult | None


@dataclass
class BestEpoch:
    """The epoch a run keeps and when it stops: the highest validation selection key so far, a copy of its
    weights, and the epochs since it improved. One rule for :func:`train` and
    :func:`medwb.models.semi.train_semi`, so both select and stop early the same way."""

    key: tuple[float, ...]
    state: dict[str, torch.Tensor] | None
    epoch: int = 0
    stale: int = 0

    @classmethod
    def start(cls, model: nn.Module, key_width: int) -> BestEpoch:
        """Nothing kept yet: the starting weights, a key every real epoch beats."""
        return cls((-math.inf,) * key_width, copy.deepcopy(model.state_dict()))

    def offer(self, key: tuple[float, ...], epoch: int, model: nn.Module) -> bool:
        """Keep ``epoch`` if its key beats the best so far (True), else count it stale (False)."""
        if key > self.key:
            self.key, self.epoch, self.state, self.stale = key, epoch, copy.deepcopy(model.state_dict()), 0
            return True
        self.stale += 1
        return False

    def take_last(self, epoch: int) -> None:
        """Without a validation set the last epoch is kept as trained (no weights to restore)."""
        self.epoch, self.state = epoch, None

    def ends_training(self, epoch: int, seconds: float, *, has_val: bool, min_epochs: int, patience: int,
                      max_seconds: float | None) -> bool:
        """Whether a run stops after ``epoch``: ``patience`` epochs without a better validation key (only with
        a validation set, and not before ``min_epochs``), or ``seconds`` since its start past ``max_seconds``."""
        if has_val and epoch >= min_epochs and self.stale >= patience:
            return True
        return max_seconds is not None and seconds > max_seconds

    def restore(self, model: nn.Module) -> None:
        """Load the kept weights (a no-op without validation)."""
        if self.state is not None:
            model.load_state_dict(self.state)


def moving_average(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics (update it with
    ``.update_parameters(model)`` after each step, read ``.module``), with the usual warm-up (TensorFlow's
    ExponentialMovingAverage): after n updates the decay is min(decay, (1 + n) / (10 + n)), so the average follows
    a network that is still moving fast and soon forgets the starting weights."""
    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():   # BatchNorm's batch counter
            return current
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return torch.lerp(averaged, current, 1.0 - d)  # exact where nothing moved (a frozen trunk)
    return AveragedModel(model, avg_fn=avg, use_buffers=True)


def log_epoch(row: dict[str, float], history: list[dict[str, float]], bar: tqdm, t0: float,
              shown: tuple[str, ...] | None = None) -> float:
    """Stamp an epoch's ``row`` with the seconds since ``t0``, keep it in ``history`` and show its ``shown``
    values (every value but epoch and seconds when None) on the progress ``bar``. Returns the seconds."""
    row["seconds"] = time.perf_counter() - t0
    history.append(row)
    keys = [k for k in row if k not in ("epoch", "seconds")] if shown is None else [k for k in shown if k in row]
    bar.set_postfix({k: f"{row[k]:.3f}" for k in keys})
    return row["seconds"]


def resolve_select_on(select_on: str, task: Task) -> str:
    """The model-selection criterion ``train`` uses: "auto" is "balanced" for classification (a one-class
    predictor scores chance; validation AUC, the old default, ignores a shift of every logit and so can keep an
    epoch that predicts the minority class for every case) and "metric" (Dice) for segmentation, where
    "balanced" also means Dice."""
    if select_on == "auto":
        return "metric" if task == "segmentation" else "balanced"
    if select_on == "balanced" and task == "segmentation":
        return "metric"
    return select_on


def class_weights(y: np.ndarray, num_classes: int, *, max_ratio: float | None = 10.0) -> np.ndarray:
    """Inverse-frequency cross-entropy weights ``n / (K * count)`` (0 for an absent class), the largest capped at
    ``max_ratio`` times the smallest: with 1-2 cases of a class, uncapped weights (30:1 and more) let those
    few cases dominate every batch's gradient."""
    counts = np.bincount(np.asarray(y).reshape(-1), minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)
    if max_ratio is not None and (w > 0).any():
        w = np.minimum(w, w[w > 0].min() * float(max_ratio))
    return w


def decision_of(source: Any) -> dict[str, Any]:
    """The decision rule of a model (set by :func:`train`), a TrainResult, a checkpoint meta or a dict:
    ``{"threshold": t}`` (binary), ``{"class_offsets": [...]}`` (multi-class) or ``{}`` (argmax)."""
    if source is None:
        return {}
    if isinstance(source, TrainResult):
        source = source.model
    if isinstance(source, nn.Module):
        source = getattr(source, "decision", None) or {}
    if isinstance(source, (int, float)):
        return {"threshold": float(source)}
    return {k: source[k] for k in ("threshold", "class_offsets") if source.get(k) is not None}


def decide(probs: np.ndarray, decision: Decision = None) -> np.ndarray:
    """Predicted classes (N,) from softmax probabilities (N, K) under a decision rule (see :func:`decision_of`):
    binary ``P(class 1) >= threshold``, multi-class ``argmax(log P + class_offsets)``, else argmax. Segmentation
    probabilities (N, K, *spatial) give argmax masks."""
    probs = np.asarray(probs)
    rule = decision_of(decision)
    if probs.ndim == 2 and probs.shape[1] == 2 and "threshold" in rule:
        return (probs[:, 1] >= rule["threshold"]).astype(np.int64)
    if probs.ndim == 2 and "class_offsets" in rule and len(rule["class_offsets"]) == probs.shape[1]:
        with np.errstate(divide="ignore"):
            return (np.log(probs) + np.asarray(rule["class_offsets"])[None]).argmax(1).astype(np.int64)
    return probs.argmax(1).astype(np.int64)


def predict_labels(model: nn.Module, X: np.ndarray, decision: Decision = None, *,
                   batch_size: int = 256) -> np.ndarray:
    """Predicted classes (N,) of ``model`` under ``decision`` (default: the rule :func:`train` chose on validation
    and stored on the model, in ``TrainResult.threshold`` / ``class_offsets`` and the checkpoint meta)."""
    probs = predict_proba(model, X, batch_size=batch_size)
    return decide(probs, decision_of(model) if decision is None else decision)


def choose_decision(probs_val: np.ndarray, y_val: np.ndarray) -> dict[str, Any]:
    """The decision rule that maximises validation balanced accuracy.

    Binary: the threshold on P(class 1) (Youden's J; among equally good thresholds the one nearest 0.5, placed
    midway between neighbouring validation scores). Multi-class: prior correction ``log P - log(mean P)`` over
    the validation cases, kept only if it does not lower validation balanced accuracy. ``{}`` (argmax) when
    validation lacks a class.
    """
    from medwb.metrics import balanced_accuracy

    p = np.asarray(probs_val, dtype=np.float64)
    y = np.asarray(y_val).reshape(-1).astype(np.int64)
    k = p.shape[1]
    if len(np.unique(y)) < k:
        return {}
    if k == 2:
        s = p[:, 1]
        u = np.unique(s)
        cand = np.unique(np.concatenate([[0.5], (u[1:] + u[:-1]) / 2]))
        pos, neg = s[y == 1], s[y == 0]
        sens = (pos[None, :] >= cand[:, None]).mean(1)
        spec = (neg[None, :] < cand[:, None]).mean(1)
        bal = (sens + spec) / 2
        best = np.flatnonzero(bal >= bal.max() - 1e-12)
        t = float(cand[best[np.argmin(np.abs(cand[best] - 0.5))]])
        return {"threshold": t}
    offsets = -np.log(np.clip(p.mean(0), 1e-12, None))
    offsets -= offsets.mean()
    if balanced_accuracy(y, decide(p, {"class_offsets": offsets})) >= balanced_accuracy(y, p.argmax(1)):
        return {"class_offsets": [float(v) for v in offsets]}
    return {}


def validation_decision(model: nn.Module, X_val: Images, y_val: np.ndarray, task: Task,
                        config: TrainConfig) -> dict[str, Any]:
    """The decision rule a trained network keeps (``model.decision``): for a classifier with
    ``config.tune_decision``, :func:`choose_decision` on its validation probabilities; else ``{}`` (argmax)."""
    if task != "classification" or not config.tune_decision:
        return {}
    return choose_decision(predict_proba(model, X_val), np.asarray(y_val).reshape(-1))


def _as_tensor_x(X: np.ndarray, spatial_dims: int, what: str = "X") -> torch.Tensor:
    X = np.asarray(X)
    if X.ndim != spatial_dims + 2:
        raise DataError(None, f"{what} has shape {X.shape}, expected (N, C, {'H, W' if spatial_dims == 2 else 'H, W, D'})",
                        "pass channel-first arrays as returned by open_dataset(...).arrays(...)")
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))


def _as_images(X: Images, spatial_dims: int) -> torch.Tensor | CaseImages:
    """:func:`_as_tensor_x`, but a streamed pool stays streamed (read a batch at a time by :func:`rows`)."""
    if isinstance(X, CaseImages):
        if X.ndim != spatial_dims + 2:
            raise DataError(None, f"X has shape {X.shape}, expected a {spatial_dims}D pool",
                            "stream the cases at the network's dimensionality")
        return X
    return _as_tensor_x(X, spatial_dims)


def _spatial_dims(model: nn.Module) -> int:
    args = getattr(model, "build_args", None)
    if args is not None:
        return int(args["spatial_dims"])
    for m in model.modules():
        if isinstance(m, (nn.Conv3d,)):
            return 3
        if isinstance(m, (nn.Conv2d,)):
            return 2
    raise DataError(None, "cannot tell whether the model is 2D or 3D", "build it with medwb.models.build_*")


def _task(model: nn.Module) -> Task:
    return getattr(model, "task", "classification")


def epoch_passes(n: int, config: TrainConfig) -> int:
    """Whole reshuffled passes over ``n`` cases in one epoch of :func:`train`: enough for ``min_batches_per_epoch``
    batches (1 from ``min_batches_per_epoch`` x ``batch_size`` cases on)."""
    return max(1, math.ceil(int(config.min_batches_per_epoch) * int(config.batch_size) / max(n, 1)))


def batches_per_epoch(n: int, config: TrainConfig) -> int:
    """Optimiser steps in one epoch of :func:`train` on ``n`` cases: :func:`epoch_passes` reshuffled passes, a
    tail batch kept only when it holds at least half a batch."""
    bs = int(config.batch_size)
    length = n * epoch_passes(n, config)
    full, tail = divmod(length, bs)
    return max(1, full + int(tail > 0 and (tail >= max(2, bs // 2) or full == 0)))


def scheduled_epochs(n: int, config: TrainConfig) -> tuple[int, int]:
    """(epochs, patience) of :func:`train` on ``n`` labelled cases. ``config.epochs`` unless ``min_passes`` asks
    for more: then enough epochs for ``min_passes`` passes over the labels, at most twice ``config.epochs`` and
    ``max_steps`` steps, never fewer than ``config.epochs``; a raised schedule runs to its end (patience = epochs,
    the best epoch still chosen on validation). Why: with a few hundred labels an epoch of
    ``min_batches_per_epoch`` batches is several passes already, but 1200 labels got 40 passes in 40 epochs and
    were still improving at the end (BloodMNIST, pretrained trunk, 3 label draws: best epochs 34-40, test accuracy
    0.926; 80 epochs: 0.939). Early stopping cut such a longer cosine schedule while its rate was still high (80
    epochs, patience 8: stopped near epoch 45, 0.919)."""
    epochs, patience = int(config.epochs), int(config.patience)
    if config.min_passes <= 0 or n <= 0:
        return epochs, patience
    bpe = batches_per_epoch(n, config)
    passes_per_epoch = bpe * int(config.batch_size) / n
    want = math.ceil(config.min_passes / passes_per_epoch)
    raised = min(want, 2 * epochs, max(1, int(config.max_steps) // bpe))
    return (raised, raised) if raised > epochs else (epochs, patience)


def passes_config(config: TrainConfig, n: int, passes: int) -> TrainConfig:
    """``config`` for exactly ``passes`` passes over ``n`` labelled cases (epochs of ``batches_per_epoch``), run to
    the end (the best epoch still chosen on validation): a short schedule that continues a trained model
    (:func:`medwb.al.fit.fit_continued`) instead of the ``min_passes`` schedule that starts one."""
    if int(passes) < 1:
        raise DataError(None, f"passes={passes}", "pass at least 1 pass over the labels")
    per_epoch = batches_per_epoch(n, config) * int(config.batch_size) / max(n, 1)
    epochs = max(1, math.ceil(int(passes) / per_epoch))
    return replace(config, epochs=epochs, patience=epochs, min_passes=0, min_epochs=min(int(config.min_epochs), epochs))


def first_validated_epoch(epochs: int, patience: int, config: TrainConfig) -> int:
    """The first epoch :func:`train` validates (and may keep): 1, unless the schedule decays a cosine rate to its
    end without early stopping (``patience >= epochs``); then the first after ``config.validate_from`` of the
    epochs. Why: such a run's best epoch is late (the rate decays to 0), early stopping cannot fire, and each
    validation costs a pass over the labels (exact BatchNorm statistics) plus the validation split."""
    if patience < epochs or config.lr_schedule != "cosine" or not 0 < float(config.validate_from) < 1:
        return 1
    return min(epochs, math.floor(epochs * float(config.validate_from)) + 1)


def lr_schedule(opt: torch.optim.Optimizer, kind: str, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-step learning-rate schedule: ``cosine`` decays from the set rate to 0 over ``total_steps``
    (BloodMNIST, 1200 labels, 40 epochs: test accuracy 0.896 constant -> 0.925 cosine, as good as 80 constant
    epochs); ``constant`` keeps it (None)."""
    if kind == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(total_steps)))


def _class_metrics(probs: np.ndarray, y: np.ndarray, pred: np.ndarray | None = None) -> dict[str, float]:
    """AUC, accuracy, balanced accuracy (one convention for all of medwb: :func:`medwb.metrics.class_metrics`)."""
    from medwb.metrics import class_metrics

    return class_metrics(probs, y, pred=pred)


def dice_score(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean foreground Dice of argmax predictions (:func:`medwb.metrics.dice_score`, MONAI DiceMetric)."""
    from medwb.metrics import dice_score as _dice_score

    return _dice_score(probs, y)


def evaluate(model: nn.Module, X: np.ndarray, y: np.ndarray, *, batch_size: int = 256,
             decision: Decision = None) -> dict[str, float]:
    """Validation/test metrics: classification -> auc, accuracy, balanced_accuracy; segmentation -> dice.

    Accuracy and balanced accuracy are those of :func:`predict_labels` with ``decision`` (by default the rule
    :func:`train` chose on validation and stored on the model; argmax for a model without one)."""
    probs = predict_proba(model, X, batch_size=batch_size)
    if _task(model) == "segmentation":
        return {"dice": dice_score(probs, y)}
    pred = decide(probs, decision_of(model) if decision is None else decision)
    return _class_metrics(probs, np.asarray(y).reshape(-1), pred)


PRECISIONS = ("fp32", "bf16")


def has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check: AVX-512 BF16 or AMX; False where this torch
    build cannot tell)."""
    return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def check_precision(precision: str) -> str:
    """``TrainConfig.precision`` checked now: "bf16" only where :func:`has_native_bf16`; elsewhere autocast would
    emulate it, slower than fp32."""
    if precision not in PRECISIONS:
        raise DataError(None, f"precision={precision!r}", f"use precision in {PRECISIONS}")
    if precision == "bf16" and not has_native_bf16():
        raise DataError(None, "precision='bf16' on a CPU without native bfloat16",
                        "use precision='fp32' on this machine")
    return precision


def precision_autocast(precision: str) -> torch.autocast:
    """The context a forward pass of ``precision`` (TrainConfig.precision) runs in: CPU autocast to bfloat16 for
    "bf16", a no-op for "fp32"."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def train(model: TrunkHeadNet, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
          y_val: np.ndarray | None = None, *, task: Task | None = None, config: TrainConfig | None = None,
          checkpoint: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train with AdamW, validate each epoch, stop early, and restore the best validation weights.

    Model selection (``select_on``, default "auto"): classification -> the epoch with the best validation
    balanced accuracy of argmax predictions, ties broken by AUC then loss ("balanced": a model that predicts one
    class for every case scores chance, 1/K); segmentation -> validation Dice. "metric" (validation AUC, ties by
    loss; the default before) can keep an epoch that calls nearly every case the minority class, since AUC
    ignores a shift of every logit; "loss" picks the lowest validation loss. Classification validates each epoch
    with BatchNorm statistics recomputed on the labelled set (``validate_exact_bn``): with a few batches per epoch
    the running averages lag, and validation then reads one class for most epochs of a small imbalanced set.
    After training, the decision rule is chosen on validation (``tune_decision``): a binary threshold on
    P(class 1) maximising balanced accuracy, or multi-class prior-correction offsets; it is stored on the model
    (``model.decision``), in ``TrainResult.threshold`` / ``class_offsets`` and in the checkpoint meta, and
    :func:`evaluate` / :func:`predict_labels` apply it. ``TrainResult.val_metric`` stays the AUC (Dice). Without
    a validation set it trains ``epochs`` epochs and keeps the last weights (argmax decisions). Class imbalance:
    inverse-frequency class weights in the cross-entropy (``balance_classes``), capped at
    ``max_class_weight_ratio`` : 1. Deterministic for a given ``config.seed`` (and thread count); the
    global torch RNG is left untouched.
    """
    config = config or TrainConfig()
    if config.select_on not in SELECT_ON:
        raise DataError(None, f"select_on={config.select_on!r}", f"use select_on in {SELECT_ON}")
    task = task or _task(model)
    select_on = resolve_select_on(config.select_on, task)
    exact_bn = task == "classification" if config.validate_exact_bn is None else bool(config.validate_exact_bn)
    sd = _spatial_dims(model)
    Xt = _as_tensor_x(X, sd)
    y = np.asarray(y)
    if task == "classification":
        y = y.reshape(-1).astype(np.int64)
    else:
        y = y.astype(np.int64)
        if y.ndim == sd + 1:
            y = y[:, None]
    if len(y) != len(Xt) or len(Xt) == 0:
        raise DataError(None, f"X has {len(Xt)} cases but y has {len(y)}", "pass one label (or mask) per image")
    yt = torch.from_numpy(y)
    num_classes = int(model.build_args["num_classes"])
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(None, f"labels span {y.min()}..{y.max()} but the network has {num_classes} classes",
                        "build the network with num_classes = number of classes (labels 0..K-1)")

    if task == "classification":
        weight = None
        if config.balance_classes:
            weight = torch.tensor(class_weights(y, num_classes, max_ratio=config.max_class_weight_ratio),
                                  dtype=torch.float32)
        loss_fn: nn.Module = nn.CrossEntropyLoss(weight=weight)
    else:
        from monai.losses import DiceCELoss

        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)

    has_val = X_val is not None and y_val is not None and len(X_val) > 0
    full_model, trunk_state, X_val_images = model, None, X_val
    if config.freeze_trunk:  # a pretrained trunk stays as it is (weights and BatchNorm statistics): fit the head
        trunk_state = copy.deepcopy(model.trunk.state_dict())
        Xt = torch.from_numpy(_trunk_features(model, Xt))
        X_val = _trunk_features(model, _as_tensor_x(X_val, sd, "X_val")) if has_val else X_val
        model, sd = model.head, Xt.ndim - 2  # type: ignore[assignment]
    history: list[dict[str, float]] = []
    best = BestEpoch.start(model, 3)
    best_metric, metric_name = float("nan"), ("dice" if task == "segmentation" else "auc")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        g = torch.Generator().manual_seed(config.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        epochs, patience = scheduled_epochs(len(Xt), config)
        schedule = lr_schedule(opt, config.lr_schedule, epochs * batches_per_epoch(len(Xt), config))
        bar = tqdm(range(1, epochs + 1), desc=f"train {task}", disable=not progress, leave=False)
        first_val = first_validated_epoch(epochs, patience, config)
        autocast = precision_autocast(config.precision)
        ema = None if config.ema is None else moving_average(model, float(config.ema))
        judged = model if ema is None else ema.module  # what validation reads, selection keeps and train returns
        for epoch in bar:
            model.train()
            perm = torch.randperm(len(Xt), generator=g)
            while len(perm) < config.min_batches_per_epoch * config.batch_size:  # same steps for 20 or 200 cases
                perm = torch.cat([perm, torch.randperm(len(Xt), generator=g)])
            total, n_seen = 0.0, 0
            for i in range(0, len(perm), config.batch_size):
                idx = perm[i:i + config.batch_size]
                if len(idx) < max(2, config.batch_size // 2) and i > 0:
                    continue  # a small tail batch gives noisy BatchNorm statistics; reshuffled next epoch
                xb, yb = Xt[idx], yt[idx]
                if trunk_state is None:
                    xb, yb = augment_batch(xb, yb, g, config.augment)
                opt.zero_grad(set_to_none=True)
                if config.mixup > 0 and task == "classification":
                    lam = float(torch.distributions.Beta(config.mixup, config.mixup).sample())
                    j = torch.randperm(len(xb), generator=g)
                    with autocast:
                        out = model(lam * xb + (1 - lam) * xb[j]).float()
                    loss = lam * loss_fn(out, yb) + (1 - lam) * loss_fn(out, yb[j])
                else:
                    with autocast:
                        out = model(xb).float()
                    loss = loss_fn(out, yb)
                loss.backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
                if ema is not None:
                    ema.update_parameters(model)
                total += loss.item() * len(idx)
                n_seen += len(idx)
            row: dict[str, float] = {"epoch": epoch, "train_loss": total / max(n_seen, 1)}
            if has_val and epoch >= first_val:
                if exact_bn:  # validate what the returned model would be (changes eval-mode statistics only)
                    recalibrate_batchnorm(judged, Xt, batch_size=max(config.batch_size, 64))
                row.update(validate_epoch(judged, X_val, y_val, task, loss_fn, sd, config.precision))
                key, metric_name, m = _selection_key(row, task, select_on)
                if best.offer(key, epoch, judged):
                    best_metric = m
            elif not has_val:
                best.take_last(epoch)
            seconds = log_epoch(row, history, bar, t0)
            if best.ends_training(epoch, seconds, has_val=has_val, min_epochs=config.min_epochs,
                                  patience=patience, max_seconds=config.max_seconds):
                break
    if ema is not None and best.state is None:  # no validation: the last average
        model.load_state_dict(ema.module.state_dict())
    best.restore(model)
    if recalibrate_batchnorm(model, Xt, batch_size=max(config.batch_size, 64)) and has_val:
        # keep the exact statistics only if validation agrees they are at least as good
        row = validate_epoch(model, X_val, y_val, task, loss_fn, sd, config.precision)  # as the kept epoch's
        key, _, m = _selection_key(row, task, select_on)
        if key >= best.key:
            best_metric = m
        else:
            best.restore(model)
    if trunk_state is not None:
        model = full_model
        model.trunk.load_state_dict(trunk_state)  # unchanged anyway; guards against any in-place update
    model.eval()
    decision = validation_decision(model, X_val_images, y_val, task, config) if has_val else {}
    model.decision = decision  # travels with the model: evaluate / predict_labels / save_checkpoint read it
    result = TrainResult(model=model, history=history, best_epoch=best.epoch, val_metric=float(best_metric),
                         metric_name=metric_name, seconds=time.perf_counter() - t0,
                         threshold=decision.get("threshold"), class_offsets=decision.get("class_offsets"))
    if checkpoint is not None:
        save_checkpoint(model, checkpoint, {"train_config": asdict(config), "best_epoch": best.epoch,
                                            "val_metric": result.val_metric, "metric_name": metric_name,
                                            "history": history, "size": [int(v) for v in X.shape[2:]],
                                            **decision})
    return result


def fit_and_evaluate(model: TrunkHeadNet, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
                     task: Task, config: TrainConfig, test: tuple[np.ndarray, np.ndarray] | None = None,
                     progress: bool = True) -> tuple[TrunkHeadNet, dict[str, float]]:
    """:func:`train` (early stopping on the val split), then :func:`evaluate`: one active-learning round's model
    and its metrics n_labeled, best_epoch, train_seconds, val_* and, with ``test=(X_test, y_test)``, test_*."""
    res = train(model, X, y, X_val, y_val, task=task, config=config, progress=progress)
    return res.model, round_metrics(res, len(y), X_val, y_val, test)


def round_metrics(res: TrainResult, n_labeled: int, X_val: np.ndarray, y_val: np.ndarray,
                  test: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """A round's metrics of a trained model (supervised or semi-supervised): n_labeled, best_epoch,
    train_seconds, val_* and, with ``test``, test_*."""
    metrics: dict[str, float] = {"n_labeled": float(n_labeled), "best_epoch": float(res.best_epoch),
                                 "train_seconds": float(res.seconds)}
    metrics.update({f"val_{k}": float(v) for k, v in evaluate(res.model, X_val, y_val).items()})
    if test is not None:
        metrics.update({f"test_{k}": float(v) for k, v in evaluate(res.model, *test).items()})
    return metrics


def _selection_key(row: dict[str, float], task: Task, select_on: str) -> tuple[tuple[float, float, float], str, float]:
    """(key to maximise, metric name, metric value) of one validation row; see ``TrainConfig.select_on``.

    The reported metric is the task's (validation AUC, accuracy when validation holds one class, Dice) whatever
    the criterion; ``select_on`` is already resolved (:func:`resolve_select_on`)."""
    if task == "segmentation":
        name, m = "dice", row["val_dice"]
    elif math.isnan(row["val_auc"]):
        name, m = "accuracy", row["val_accuracy"]
    else:
        name, m = "auc", row["val_auc"]
    if select_on == "balanced":
        key = (row["val_balanced_accuracy"], m, -row["val_loss"])
    elif select_on == "loss":
        key = (-row["val_loss"], m, 0.0)
    else:
        key = (m, -row["val_loss"], 0.0)
    return key, name, m


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, X: Images | Stacked, *, batch_size: int = 64) -> bool:
    """Replace BatchNorm running statistics by their exact average over ``X`` (the labelled set), for the
    final weights. The exponential running average otherwise lags the last optimiser steps, which on a
    tiny labelled set makes round-to-round results jumpy. No-op (False) without BatchNorm layers.
    ``X`` may be streamed (:class:`~medwb.data.case_images.CaseImages`, :class:`~medwb.data.case_images.Stacked`):
    it is read ``batch_size`` cases at a time."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or len(X) < 2:
        return False
    saved = {m: m.momentum for m in bns}
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over the batches seen
        m.train()
    for i in range(0, len(X), batch_size):
        xb = rows(X, slice(i, i + batch_size))
        if len(xb) >= 2:
            model(xb)
    for m, mom in saved.items():
        m.momentum = mom
    model.train(was_training)
    return True


@torch.no_grad()
def _trunk_features(model: TrunkHeadNet, X: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The trunk's output for ``X`` in eval mode (what the head sees; kept spatial for segmenters)."""
    model.trunk.eval()
    return torch.cat([model.trunk(X[i:i + batch_size]) for i in range(0, len(X), batch_size)]).numpy()


@torch.no_grad()
def validate_epoch(model: nn.Module, X_val: np.ndarray, y_val: np.ndarray, task: Task, loss_fn: nn.Module,
                   sd: int, precision: str = "fp32") -> dict[str, float]:
    """Validation loss and metrics of one epoch (eval mode); the forward passes in ``precision`` (the training
    steps', TrainConfig.precision), the loss and metrics from fp32 logits."""
    model.eval()
    Xv = _as_tensor_x(X_val, sd, "X_val")
    yv = np.asarray(y_val).astype(np.int64)
    if task == "classification":
        yv = yv.reshape(-1)
    elif yv.ndim == sd + 1:
        yv = yv[:, None]
    losses, probs = [], []
    for i in range(0, len(Xv), 256):
        with precision_autocast(precision):
            logits = model(Xv[i:i + 256]).float()
        losses.append(float(loss_fn(logits, torch.from_numpy(yv[i:i + 256]))) * len(logits))
        probs.append(torch.softmax(logits, 1).numpy())
    p = np.concatenate(probs)
    out = {"val_loss": sum(losses) / len(Xv)}
    if task == "segmentation":
        out["val_dice"] = dice_score(p, yv)
    else:
        m = _class_metrics(p, yv)
        out["val_auc"], out["val_accuracy"] = m["auc"], m["accuracy"]
        out["val_balanced_accuracy"] = m["balanced_accuracy"]
    return out


# --------------------------------------------------------------------------------------------- inference
def device_of(model: nn.Module) -> torch.device:
    """The device the model's weights live on (CPU for a model without parameters): inference moves each batch
    there and brings the results back, so a model moved to CUDA needs nothing else."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict_proba(model: nn.Module, X: Images, *, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities in eval mode: (N, K) or (N, K, H, W[, D]). ``X`` may be streamed."""
    model.eval()
    Xt = _as_images(X, _spatial_dims(model))
    dev = device_of(model)
    out = [torch.softmax(model(rows(Xt, slice(i, i + batch_size)).to(dev)), 1).cpu().numpy()
           for i in range(0, len(Xt), batch_size)]
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def pooled_features(f: torch.Tensor) -> torch.Tensor:
    """A trunk's output as one feature vector per image (N, F): a segmenter's spatial maps averaged over space.
    The one rule for embeddings (:func:`embed`, the MC pass's, SimCLR's projection input)."""
    return f.flatten(2).mean(2) if f.ndim > 2 else f


@torch.no_grad()
def embed(model: nn.Module, X: Images, *, batch_size: int = 256) -> np.ndarray:
    """Penultimate (trunk) features (N, F); segmenters are averaged over space. For core-set/BADGE/cold start.
    ``X`` may be streamed."""
    model.eval()
    Xt = _as_images(X, _spatial_dims(model))
    feats = []
    dev = device_of(model)
    for i in range(0, len(Xt), batch_size):
        feats.append(pooled_features(model.trunk(rows(Xt, slice(i, i + batch_size)).to(dev))).cpu().numpy())
    return np.concatenate(feats).astype(np.float32)


