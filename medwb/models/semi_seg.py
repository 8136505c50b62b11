"""Semi-supervised training of a medwb segmenter: a mean teacher's confident voxel pseudo-labels on the pool.

Why: a segmentation round otherwise learns from its few labelled volumes only, and the other ~90% of the pool
just ranks cases (issue 12, "consistency or confident pseudo-labels for segmentation"). Classification has
FixMatch (:mod:`medwb.models.semi`); its image-level pseudo-label survives any warp of the image, a mask does
not, so the segmentation variant keeps both views on the same voxel grid.

One optimiser step (:func:`train_semi_segmentation`):

- a labelled batch (``batch_size`` volumes, the round's label-safe augmentation moving each mask with its image,
  :mod:`medwb.models.augment`) -> Dice + cross-entropy, exactly :func:`medwb.models.train.train`'s loss;
- ``mu * batch_size`` unlabelled volumes with one label-safe geometric augmentation: the **weak** view; the
  **strong** view is the weak one with intensity changes only (per volume: gamma, contrast, brightness,
  Gaussian noise; :func:`intensity_perturb`), so a voxel of one view is the same anatomy in the other and its
  pseudo-label needs no warping;
- the **teacher**, an exponential moving average of the student's weights (mean teacher, Tarvainen & Valpola
  2017; the warm-up of :mod:`medwb.models.semi`), predicts the weak view; voxels whose largest probability is at
  least ``threshold`` take its argmax as pseudo-label;
- the unlabelled loss is the student's cross-entropy on the strong view against those pseudo-labels,
  **class-balanced**: each pseudo-labelled class's confident voxels weigh the same in total (a hippocampus is 5%
  of its crop: unweighted, background pseudo-labels would teach "background" 19 times over), ramped in over
  ``rampup_epochs`` (the teacher of the first epochs is a random network);
- loss = labelled loss + ``lambda_u`` * ramp * unlabelled loss.

Options measured against the defaults: ``cutmix`` pastes a box of another pool volume into the strong view with
its pseudo-labels (French et al. 2020), ``balance_pseudo=False`` uses plain masked voxel cross-entropy.

Pseudo-labels are training signal only: they live for one step and nothing is written anywhere. Validation,
model selection (best validation Dice, early stopping) and the returned model use the teacher; BatchNorm
statistics are recomputed on clean labelled + pool volumes at the end and kept if validation agrees.

    from medwb.models.semi_seg import SemiSegConfig, train_semi_segmentation
    res = train_semi_segmentation(unet, X_lab, Y_lab, X_pool, X_val, Y_val, config=SemiSegConfig(epochs=40))
    res.model, res.best_epoch, res.history   # a medwb.models.train.TrainResult, like train()
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medwb.data.case_images import CaseImages, Images, Stacked, rows
from medwb.errors import DataError
from medwb.models.augment import augment_batch, check_augment, intensity_perturb
from medwb.models.networks import TrunkHeadNet
from medwb.models.semi import Cycler
from medwb.models.train import (LR_SCHEDULES, BestEpoch, TrainConfig, TrainResult, log_epoch,
                                lr_schedule, moving_average, recalibrate_batchnorm, validate_epoch)


@dataclass
class SemiSegConfig:
    """Mean-teacher schedule for a segmentation round. Defaults: the supervised segmentation round's schedule
    (:func:`medwb.models.train.default_train_config`: batches of 8 volumes, 8 steps per epoch, 40 epochs), with
    one unlabelled volume per labelled one in a step."""

    epochs: int = 40
    steps_per_epoch: int = 8      # optimiser steps per epoch (validation, early stopping once per epoch)
    batch_size: int = 8           # labelled volumes per step (capped at the number of labelled cases)
    mu: int = 1                   # unlabelled volumes per labelled volume in a step
    threshold: float = 0.9        # the teacher's voxel confidence needed for a pseudo-label
    lambda_u: float = 1.0         # weight of the unlabelled loss at full ramp
    rampup_epochs: int = 5        # sigmoid ramp of the unlabelled weight (0: full weight from the start)
    ema_decay: float = 0.99       # the teacher: exponential moving average of the student's weights
    balance_pseudo: bool = True   # each pseudo-labelled class weighs the same (False: plain voxel cross-entropy)
    cutmix: bool = False          # strong view: a box of another pool volume pasted in (with its pseudo-labels)
    lr: float = 2e-3              # AdamW, like train()
    weight_decay: float = 1e-4
    patience: int = 8             # epochs without validation improvement before stopping
    min_epochs: int = 5           # never stop before this
    augment: str = "shift"        # labelled batch and both unlabelled views' geometry (medwb.models.augment)
    lr_schedule: str = "cosine"   # "cosine" over epochs x steps_per_epoch, or "constant"
    recalibrate_bn: bool = True   # BatchNorm statistics recomputed on clean labelled + pool volumes at the end
    seed: int = 0
    max_seconds: float | None = None  # wall-clock cap; stops after the epoch that crosses it

    def __post_init__(self) -> None:
        self.augment = check_augment(self.augment)
        problems = [f"{n}={getattr(self, n)} (use >= 1)" for n in ("epochs", "steps_per_epoch", "batch_size", "mu")
                    if int(getattr(self, n)) < 1]
        if not 0.0 < float(self.threshold) <= 1.0:
            problems.append(f"threshold={self.threshold} (use a probability in (0, 1], typically 0.9)")
        if not float(self.lambda_u) >= 0:
            problems.append(f"lambda_u={self.lambda_u} (use >= 0)")
        if int(self.rampup_epochs) < 0:
            problems.append(f"rampup_epochs={self.rampup_epochs} (use >= 0)")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            problems.append(f"ema_decay={self.ema_decay} (use a value in [0, 1), typically 0.99)")
        if not float(self.lr) > 0:
            problems.append(f"lr={self.lr} (use > 0)")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule={self.lr_schedule!r} (use one of {LR_SCHEDULES})")
        if problems:
            raise DataError(None, f"invalid semi-supervised segmentation setting(s): {'; '.join(problems)}",
                            f"use SemiSegConfig fields within range ({', '.join(f.name for f in fields(self))})")


def semi_seg_config_from(config: TrainConfig, **overrides: Any) -> SemiSegConfig:
    """The mean-teacher schedule of a segmentation round trained with ``config``: its seed, epochs, learning
    rate and schedule, weight decay, batch size, steps per epoch (``min_batches_per_epoch``), patience,
    augmentation and time cap; ``overrides`` (SemiSegConfig fields) on top."""
    base = {"epochs": int(config.epochs), "steps_per_epoch": max(1, int(config.min_batches_per_epoch)),
            "batch_size": int(config.batch_size), "lr": config.lr, "weight_decay": config.weight_decay,
            "patience": config.patience, "min_epochs": config.min_epochs, "augment": config.augment,
            "lr_schedule": config.lr_schedule, "seed": config.seed, "max_seconds": config.max_seconds}
    return SemiSegConfig(**{**base, **overrides})


def cutmix_boxes(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """One box per volume of a batch (N, C, *spatial) as a boolean mask (N, *spatial): 20-60% of the volume,
    the same share along every axis, at a random place (CutMix for segmentation, French et al. 2020)."""
    n, spatial = shape[0], shape[2:]
    m = torch.zeros((n, *spatial), dtype=torch.bool)
    share = torch.empty(n).uniform_(0.2, 0.6, generator=g) ** (1.0 / len(spatial))
    for i in range(n):
        box = []
        for d in spatial:
            L = max(1, int(round(float(share[i]) * d)))
            start = int(torch.randint(0, d - L + 1, (1,), generator=g))
            box.append(slice(start, start + L))
        m[(i, *box)] = True
    return m


def balanced_pseudo_label_loss(logits: torch.Tensor, pseudo: torch.Tensor, confident: torch.Tensor,
                               num_classes: int) -> torch.Tensor:
    """Cross-entropy of ``logits`` (N, K, *spatial) against ``pseudo`` (N, *spatial) on the ``confident``
    voxels, each class's confident voxels averaged on their own and the classes present averaged (0 when no
    voxel is confident)."""
    ce = F.cross_entropy(logits, pseudo, reduction="none")
    masks = [confident & (pseudo == c) for c in range(num_classes)]
    terms = [ce[m].mean() for m in masks if bool(m.any())]
    return torch.stack(terms).mean() if terms else logits.sum() * 0.0


def _check(X: Any, model: TrunkHeadNet, what: str) -> torch.Tensor | CaseImages:
    if not isinstance(X, CaseImages):
        X = np.asarray(X)
    sd, ic = int(model.build_args["spatial_dims"]), int(model.build_args["in_channels"])
    if X.ndim != sd + 2 or X.shape[1] != ic:
        raise DataError(None, f"{what} has shape {X.shape}, expected (N, {ic}, *spatial) for a {sd}D network",
                        "pass channel-first arrays as returned by open_dataset(...).arrays(...)")
    if isinstance(X, CaseImages):
        return X
    if len(X) and not np.isfinite(X).all():
        raise DataError(None, f"{what} contains NaN or Inf values",
                        "drop or repair those cases (medwb check lists them) before training")
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))


def _check_masks(y: Any, X: torch.Tensor, k: int, what: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim == X.ndim - 1:
        y = y[:, None]
    if y.shape[0] != X.shape[0] or y.shape[2:] != tuple(X.shape[2:]):
        raise DataError(None, f"{what} has shape {y.shape} for images of shape {tuple(X.shape)}",
                        "pass one label map per image, at the image's size")
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise DataError(None, f"{what} spans {y.min()}..{y.max()} but the network has {k} classes",
                        "build the network with num_classes = number of labels (0..K-1, 0 = background)")
    return torch.from_numpy(y.astype(np.int64))


def _ramp(epoch: int, rampup: int) -> float:
    """Sigmoid ramp-up exp(-5 (1 - t)^2) of Laine & Aila / mean teacher; t = (epoch - 1) / rampup."""
    if rampup <= 0:
        return 1.0
    t = min(1.0, (epoch - 1) / rampup)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def train_semi_segmentation(model: TrunkHeadNet, X: np.ndarray, y: np.ndarray, X_unlabelled: Images,
                            X_val: np.ndarray | None = None, y_val: np.ndarray | None = None, *,
                            config: SemiSegConfig | None = None, progress: bool = True) -> TrainResult:
    """Mean-teacher training of a medwb segmenter on labelled ``(X, y)`` (images, label maps) plus the
    unlabelled pool ``X_unlabelled`` (see the module docstring); validates the teacher every epoch, stops early,
    restores the best validation weights. ``X_unlabelled`` may be a
    :class:`~medwb.data.case_images.CaseImages` (each step reads only its batch from the files).

    Returns :class:`medwb.models.train.TrainResult` (``metric_name`` "dice"). History rows: epoch, train_loss,
    loss_l, loss_u, ramp, mask_rate (fraction of unlabelled voxels pseudo-labelled), pseudo_foreground (share of
    them that are not background), val_loss, val_dice, seconds. Without a validation set it trains ``epochs``
    epochs and keeps the last teacher. Deterministic for a given ``config.seed`` and thread count; the global
    torch RNG is left untouched."""
    from monai.losses import DiceCELoss

    config = config or SemiSegConfig()
    if not isinstance(model, TrunkHeadNet) or model.task != "segmentation":
        raise DataError(None, "semi-supervised segmentation needs a medwb segmenter",
                        "pass a network from medwb.models.build_segmenter (classifiers: medwb.models.semi)")
    k = int(model.build_args["num_classes"])
    Xl = _check(X, model, "X")
    if len(Xl) == 0:
        raise DataError(None, "no labelled volumes", "label a few cases first")
    yl = _check_masks(y, Xl, k, "y")
    Xu = _check(X_unlabelled, model, "X_unlabelled")
    if len(Xu) < 2:
        raise DataError(None, f"the unlabelled pool has {len(Xu)} image(s)",
                        "pass the unlabelled pool (at least 2 images), or use medwb.models.train")
    if tuple(Xl.shape[2:]) != tuple(Xu.shape[2:]):
        raise DataError(None, f"labelled images are {tuple(Xl.shape[2:])} but unlabelled ones "
                        f"{tuple(Xu.shape[2:])}", "load both at the same size (arrays(split, size=...))")
    if (X_val is None) != (y_val is None):
        raise DataError(None, "only one of X_val, y_val given", "pass both (or neither)")
    has_val = X_val is not None and len(X_val) > 0
    if has_val:
        Xv = _check(X_val, model, "X_val")
        yv = _check_masks(y_val, Xv, k, "y_val").numpy()
        Xv_np = np.asarray(rows(Xv, slice(0, len(Xv))))

    sd = int(model.build_args["spatial_dims"])
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    bs = min(int(config.batch_size), len(Xl))
    bu = int(config.mu) * bs
    history: list[dict[str, float]] = []
    best = BestEpoch.start(model, 3)
    best_dice = float("nan")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        g = torch.Generator().manual_seed(config.seed)
        lab, unl = Cycler(len(Xl), bs, g), Cycler(len(Xu), bu, g)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = lr_schedule(opt, config.lr_schedule, config.epochs * config.steps_per_epoch)
        teacher = moving_average(model, float(config.ema_decay))
        bar = tqdm(range(1, config.epochs + 1), desc="train semi (mean teacher)", disable=not progress, leave=False)
        for epoch in bar:
            ramp = _ramp(epoch, int(config.rampup_epochs))
            tot = {"loss": 0.0, "l": 0.0, "u": 0.0, "mask": 0.0, "fg": 0.0}
            for _ in range(config.steps_per_epoch):
                li, ui = lab.next(), unl.next()
                xl, ylb = augment_batch(Xl[li], yl[li], g, config.augment)
                xw = augment_batch(rows(Xu, ui), None, g, config.augment)[0]
                xs = intensity_perturb(xw, g)
                with torch.no_grad():
                    teacher.module.eval()
                    conf, pseudo = torch.softmax(teacher.module(xw), 1).max(1)
                    confident = conf >= config.threshold
                if config.cutmix and len(xs) >= 2:  # paste a box of the next volume, pseudo-labels and all
                    box = cutmix_boxes(tuple(xs.shape), g)
                    nxt = torch.roll(torch.arange(len(xs)), -1)
                    xs = torch.where(box[:, None], xs[nxt], xs)
                    pseudo = torch.where(box, pseudo[nxt], pseudo)
                    confident = torch.where(box, confident[nxt], confident)
                model.train()
                logits = model(torch.cat([xl, xs]))
                loss_l = loss_fn(logits[:len(xl)], ylb)
                if config.balance_pseudo:
                    loss_u = balanced_pseudo_label_loss(logits[len(xl):], pseudo, confident, k)
                else:
                    ce = F.cross_entropy(logits[len(xl):], pseudo, reduction="none")
                    loss_u = (ce * confident.float()).mean()
                loss = loss_l + config.lambda_u * ramp * loss_u
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
                teacher.update_parameters(model)
                tot["loss"] += loss.item()
                tot["l"] += loss_l.item()
                tot["u"] += loss_u.item()
                tot["mask"] += confident.float().mean().item()
                tot["fg"] += float((confident & (pseudo > 0)).sum()) / max(float(confident.sum()), 1.0)
            n = config.steps_per_epoch
            row: dict[str, float] = {"epoch": epoch, "train_loss": tot["loss"] / n, "loss_l": tot["l"] / n,
                                     "loss_u": tot["u"] / n, "ramp": ramp, "mask_rate": tot["mask"] / n,
                                     "pseudo_foreground": tot["fg"] / n}
            if has_val:
                row.update(validate_epoch(teacher.module, Xv_np, yv, "segmentation", loss_fn, sd))
                if best.offer((row["val_dice"], -row["val_loss"], 0.0), epoch, teacher.module):
                    best_dice = row["val_dice"]
            else:
                best.take_last(epoch)
            seconds = log_epoch(row, history, bar, t0, ("train_loss", "mask_rate", "val_dice"))
            if best.ends_training(epoch, seconds, has_val=has_val, min_epochs=config.min_epochs,
                                  patience=config.patience, max_seconds=config.max_seconds):
                break
        bar.close()
    if has_val:
        best.restore(model)
    else:  # the last teacher, as trained
        model.load_state_dict(teacher.module.state_dict())
    if config.recalibrate_bn and recalibrate_batchnorm(model, Stacked(Xl, Xu), batch_size=16) and has_val:
        # exact statistics on clean volumes; kept only if validation agrees they are at least as good
        row = validate_epoch(model, Xv_np, yv, "segmentation", loss_fn, sd)
        if (row["val_dice"], -row["val_loss"], 0.0) >= best.key:
            best_dice = row["val_dice"]
        else:
            best.restore(model)
    model.eval()
    model.decision = {}
    return TrainResult(model=model, history=history, best_epoch=best.epoch, val_metric=float(best_dice),
                       metric_name="dice", seconds=time.perf_counter() - t0)


__all__ = ["SemiSegConfig", "balanced_pseudo_label_loss", "cutmix_boxes",
           "semi_seg_config_from", "train_semi_segmentation"]
