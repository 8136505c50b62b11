"""Semi-supervised training of a medwb classifier: FixMatch (Sohn et al. 2020) on labelled cases + the pool.

Why: an active-learning round otherwise trains on the labelled cases only and uses the other ~90% of the pool
just to rank cases (issue 12). FixMatch lets the unlabelled pool shape the decision boundary too.

One optimiser step (:func:`train_semi`):

- a labelled batch (``batch_size`` cases, the round's label-safe augmentation, :mod:`medwb.models.augment`) -> class-weighted
  cross-entropy, exactly as :func:`medwb.models.train.train` weights it (inverse class frequency);
- ``mu * batch_size`` unlabelled images, each seen twice: a **weak** view (the same light shift) and a
  **strong** view (the SimCLR augmentation of :func:`medwb.models.pretrain.make_augment`: random affine,
  flip, gamma, intensity scale, blur, noise; MONAI, 2D and 3D, seeded);
- the model's prediction on the weak view (no gradient, dropout off) is the pseudo-label where its largest
  probability is at least ``threshold``; the unlabelled loss is the cross-entropy of the strong view against
  that pseudo-label, averaged over *all* unlabelled images of the batch (unconfident ones count 0, as in
  FixMatch, so the term grows as the model becomes confident);
- loss = labelled CE + ``lambda_u`` * unlabelled CE.

Pseudo-labels are training signal only: they live for one step and nothing is written anywhere.

**Weight averaging** (``ema_decay=0.99``, FixMatch's own evaluation rule): validation, model selection and the
returned model use an exponential moving average of the weights and BatchNorm statistics
(``torch.optim.swa_utils.AveragedModel``), with the usual warm-up (decay min(0.99, (1+n)/(10+n)) after n
steps, so the random init is forgotten quickly); the pseudo-labeller is the live model. Measured on
PneumoniaMNIST, seed 0 (test AUC):

- SimCLR trunk, 470 random labels + the other 4238 pool images: without averaging the validation AUC of
  successive epochs jumped between 0.54 and 0.98 (full fine-tuning at lr 2e-3 on mixed batches), the
  class-balanced loss kept epoch 2 and test AUC was 0.940; with it 0.957 (a plain 0.99 average: 0.963);
- from scratch, 60 labels + 2000 pool images: a plain 0.99 average kept too much of the random init
  (validation balanced accuracy 0.5 for 9 epochs); with the warm-up validation AUC is 0.970.

**Distribution alignment** (``distribution_alignment=True``; ReMixMatch, Berthelot et al. 2020): for
imbalanced pools a confident-pseudo-label method feeds on its own majority-class bias (the majority class
crosses the threshold first, its pseudo-labels pull more cases to it). With alignment every weak-view
prediction q is rescaled to ``normalise(q * p_target / p_model)`` before thresholding, where ``p_model`` is a
running mean (last 32 steps) of the model's weak-view predictions on the pool and ``p_target`` the class
prior: the labelled set's class frequencies (``da_target="labelled"``, the best estimate of the pool's prior
when labels were drawn at random) or uniform (``"uniform"``, when the labelled set was picked by an
acquisition function and its class mix says little about the pool). Off by default.

Model selection cannot be won by a one-class predictor: ``select_on="loss"`` (default) keeps the epoch with
the lowest *class-balanced* validation cross-entropy (every class weighs the same, so predicting one class
with confidence is punished on all the others; a constant predictor scores at best log K);
``select_on="balanced"`` keeps the epoch with the highest mean of validation AUC and balanced accuracy
(a one-class predictor has balanced accuracy 1/K; ties by the balanced loss). Early stopping after
``patience`` epochs without improvement, as in ``train()``.

``freeze_trunk``-aware: if none of the trunk's parameters require gradients, only the head trains, the trunk
stays in eval mode (its BatchNorm statistics untouched) and runs without autograd (the cheap path for a
pretrained trunk).

Measured (benchmarks/semi, PneumoniaMNIST test set, seed 0, narrow trunk): test AUC supervised -> FixMatch
0.862 -> 0.917 / 0.930 -> 0.946 / 0.949 -> 0.966 at 1 / 5 / 10% labels from scratch; from a SimCLR trunk
0.935 -> 0.928 (a loss) / 0.939 -> 0.951 / 0.954 -> 0.971. Balanced accuracy improved in every cell. About
4x the training time of ``train()`` (~22 s vs ~5 s per run on 2 threads).

    from medwb.models.semi import SemiConfig, train_semi
    res = train_semi(model, X_lab, y_lab, X_pool, X_val, y_val, config=SemiConfig(epochs=30))
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
from medwb.metrics import balanced_accuracy, class_metrics
from medwb.models.networks import TrunkHeadNet
from medwb.models.pretrain import PretrainConfig, make_augment
from medwb.models.train import (LR_SCHEDULES, BestEpoch, TrainConfig, TrainResult, choose_decision, log_epoch,
                                lr_schedule, moving_average, predict_proba, recalibrate_batchnorm)
from medwb.models.augment import augment_batch, check_augment


@dataclass
class SemiConfig:
    """FixMatch schedule. Defaults: a few dozen to hundreds of labelled 28 px images plus a pool of thousands
    on 2 CPU cores (an epoch is ``steps_per_epoch`` optimiser steps, not a pass over the pool).

    ``mu`` 2 and 12 steps per epoch (session 15; before: 3 and 16): on PneumoniaMNIST, 3 label draws each, the
    round (supervised and FixMatch from the SimCLR trunk, the better on validation kept) was as good and cheaper:
    50 labels 0.947 +- 0.006 AUC / 0.885 accuracy against 0.949 +- 0.013 / 0.880 in 74 s against 113 s; 470 labels
    the same models kept (supervised won every draw with either schedule) in 87 s against 137 s
    (benchmarks/active_learning/recipes/pneumoniamnist_fixmatch_cost)."""

    epochs: int = 30
    steps_per_epoch: int = 12     # optimiser steps per epoch (validation, early stopping once per epoch)
    batch_size: int = 32          # labelled images per step (capped at the number of labelled cases)
    mu: int = 2                   # unlabelled images per labelled image in a step
    threshold: float = 0.95       # pseudo-label confidence threshold on the weak view
    lambda_u: float = 1.0         # weight of the unlabelled loss
    lr: float = 2e-3              # AdamW, constant, like train()
    weight_decay: float = 1e-4
    patience: int = 8             # epochs without validation improvement before stopping
    min_epochs: int = 5           # never stop before this
    select_on: str = "loss"       # "loss" (class-balanced val CE) or "balanced" (mean of val AUC and balanced acc.)
    balance_classes: bool = True  # class-weighted labelled cross-entropy (inverse class frequency), like train()
    distribution_alignment: bool = False  # rescale weak-view predictions towards da_target (imbalanced pools)
    da_target: str = "labelled"   # "labelled" (class frequencies of the labelled set) or "uniform"
    strong: PretrainConfig | None = None  # strong-view augmentation strengths (None: PretrainConfig() defaults)
    ema_decay: float | None = 0.99  # validate and keep an exponential moving average of the weights (None: off)
    recalibrate_bn: bool = True   # BatchNorm statistics recomputed on clean labelled + pool images at the end
    validate_exact_bn: bool = False  # validate each epoch with BatchNorm statistics recomputed on the clean
    #                               labelled images (as train() does), so the epoch kept is judged as it is returned
    separate_bn: bool = False     # labelled images and strong views normalised in separate batches (not one)
    #                               Both off by default: on BloodMNIST (600 labels, 3 draws) together +0.025 test
    #                               accuracy for FixMatch alone (0.835 -> 0.860), still far behind supervised
    #                               training (0.915); on PneumoniaMNIST (235 labels) -0.002 AUC, -0.018 accuracy
    #                               (benchmarks/active_learning/recipes/fixmatch_bn_s24)
    tune_decision: bool = True    # the decision rule (binary threshold / class offsets) chosen on validation
    augment: str = "shift"        # labelled batch and weak view (medwb.models.augment; TrainConfig.augment)
    lr_schedule: str = "cosine"   # "cosine" over epochs x steps_per_epoch, or "constant" (TrainConfig.lr_schedule)
    seed: int = 0
    max_seconds: float | None = None  # wall-clock cap; stops after the epoch that crosses it

    def __post_init__(self) -> None:
        self.augment = check_augment(self.augment)
        problems = []
        for name in ("epochs", "steps_per_epoch", "batch_size", "mu"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name}={getattr(self, name)} (use >= 1)")
        if not 0.0 < float(self.threshold) <= 1.0:
            problems.append(f"threshold={self.threshold} (use a probability in (0, 1], typically 0.95)")
        if not float(self.lambda_u) >= 0:
            problems.append(f"lambda_u={self.lambda_u} (use >= 0)")
        if not float(self.lr) > 0:
            problems.append(f"lr={self.lr} (use > 0)")
        if self.select_on not in ("loss", "balanced"):
            problems.append(f"select_on={self.select_on!r} (use 'loss' or 'balanced')")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule={self.lr_schedule!r} (use one of {LR_SCHEDULES})")
        if self.da_target not in ("labelled", "uniform"):
            problems.append(f"da_target={self.da_target!r} (use 'labelled' or 'uniform')")
        if problems:
            raise DataError(None, f"invalid semi-supervised setting(s): {'; '.join(problems)}",
                            f"use SemiConfig fields within range ({', '.join(f.name for f in fields(self))})")


# ----------------------------------------------------------------------------------------- input checks
def _check_images(X: Any, model: TrunkHeadNet, what: str, fix: str) -> torch.Tensor | CaseImages:
    if not isinstance(X, CaseImages):
        X = np.asarray(X)
    sd, ic = int(model.build_args["spatial_dims"]), int(model.build_args["in_channels"])
    if X.ndim != sd + 2:
        want = "(N, C, H, W)" if sd == 2 else "(N, C, H, W, D)"
        raise DataError(None, f"{what} has shape {X.shape}, expected {want} for a {sd}D network", fix)
    if X.shape[1] != ic:
        raise DataError(None, f"{what} has {X.shape[1]} channel(s) but the network expects {ic}",
                        f"build the network with in_channels={X.shape[1]} or convert the images")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise DataError(None, f"{what} has dtype {X.dtype}", "pass real-valued (float32) images")
    if isinstance(X, CaseImages):
        return X  # streamed: each case is validated when it is read (Dataset.load_raw)
    if np.issubdtype(X.dtype, np.floating) and len(X) and not np.isfinite(X).all():
        raise DataError(None, f"{what} contains NaN or Inf values",
                        "drop or repair those cases (medwb check lists them) before training")
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))


def _check_labels(y: Any, n: int, k: int, what: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise DataError(None, f"{what} has {len(y)} labels for {n} images", "pass one class label per image")
    if len(y) and not np.all(np.equal(np.mod(y.astype(np.float64), 1), 0)):
        raise DataError(None, f"{what} holds non-integer labels", "pass class indices 0..K-1")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise DataError(None, f"{what} spans {y.min()}..{y.max()} but the network has {k} classes",
                        "build the network with num_classes = number of classes (labels 0..K-1)")
    return y


def _class_weights(y: np.ndarray, k: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=k).astype(np.float64)
    w = np.where(counts > 0, len(y) / (k * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def _trunk_frozen(model: TrunkHeadNet) -> bool:
    params = list(model.trunk.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), 7]).generate_state(1)[0])


class Cycler:
    """Endless batches of indices 0..n-1: reshuffled passes (from ``g``), batches never span two passes."""

    def __init__(self, n: int, batch: int, g: torch.Generator) -> None:
        self.n, self.batch, self.g = n, min(batch, n), g
        self.perm, self.pos = torch.randperm(n, generator=g), 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.g), 0
        idx = self.perm[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return idx


@torch.no_grad()
def _validate(model: TrunkHeadNet, Xv: torch.Tensor, yv: np.ndarray, k: int) -> dict[str, float]:
    model.eval()
    logits = torch.cat([model(Xv[i:i + 256]) for i in range(0, len(Xv), 256)])
    yt = torch.from_numpy(yv)
    w = _class_weights(yv, k)  # class-balanced: every class present in the validation set weighs the same
    p = torch.softmax(logits, 1).numpy()
    m = class_metrics(p, yv)
    bal = balanced_accuracy(np.asarray(yv).reshape(-1), p.argmax(1))
    auc = m["auc"]
    return {"val_loss": float(F.cross_entropy(logits, yt, weight=w)), "val_auc": auc,
            "val_accuracy": m["accuracy"], "val_balanced_accuracy": bal,
            "val_score": bal if math.isnan(auc) else 0.5 * (auc + bal)}


def _key(row: dict[str, float], select_on: str) -> tuple[float, float]:
    if select_on == "loss":
        return (-row["val_loss"], row["val_score"])
    return (row["val_score"], -row["val_loss"])


# ----------------------------------------------------------------------------------------- training
def train_semi(model: TrunkHeadNet, X: np.ndarray, y: np.ndarray, X_unlabelled: Images,
               X_val: np.ndarray | None = None, y_val: np.ndarray | None = None, *,
               config: SemiConfig | None = None, progress: bool = True) -> TrainResult:
    """FixMatch training of a medwb classifier on labelled ``(X, y)`` plus the unlabelled pool ``X_unlabelled``
    (see the module docstring); validates every epoch, stops early, restores the best validation weights.
    ``X_unlabelled`` may be a :class:`~medwb.data.case_images.CaseImages`: each step reads only its unlabelled
    batch from the files (a pool that does not fit in memory; the same weights as the array).

    Returns :class:`medwb.models.train.TrainResult` (``metric_name`` "auc", or "accuracy" when the validation
    set holds one class; ``val_metric`` its value at the best epoch) so callers can use it like ``train()``.
    History rows: epoch, train_loss, loss_l, loss_u, mask_rate (fraction of unlabelled images above the
    threshold), pseudo_class_<c> (fraction of confident pseudo-labels per class), val_* and seconds.
    Without a validation set it trains ``epochs`` epochs and keeps the last weights. Deterministic for a given
    ``config.seed`` and thread count; the global torch RNG is left untouched. Classification networks only.
    """
    config = config or SemiConfig()
    if not isinstance(model, TrunkHeadNet):
        raise DataError(None, f"cannot train a {type(model).__name__} semi-supervised",
                        "pass a network from medwb.models.build_classifier")
    if model.task != "classification":
        raise DataError(None, "semi-supervised training (FixMatch pseudo-labels) is for classifiers",
                        "train segmenters with medwb.models.train")
    k = int(model.build_args["num_classes"])
    fix = "pass channel-first arrays as returned by open_dataset(...).arrays(...)"
    Xl = _check_images(X, model, "X", fix)
    if len(Xl) == 0:
        raise DataError(None, "no labelled images", "label a few cases of every class first")
    yl = _check_labels(y, len(Xl), k, "y")
    Xu = _check_images(X_unlabelled, model, "X_unlabelled", fix)
    if len(Xu) < 2:
        raise DataError(None, f"the unlabelled pool has {len(Xu)} image(s)",
                        "pass the unlabelled pool (at least 2 images), or use medwb.models.train")
    if Xl.shape[2:] != Xu.shape[2:]:
        raise DataError(None, f"labelled images are {tuple(Xl.shape[2:])} but unlabelled ones "
                        f"{tuple(Xu.shape[2:])}", "load both at the same size (arrays(split, size=...))")
    has_val = X_val is not None and y_val is not None and len(X_val) > 0
    if (X_val is None) != (y_val is None):
        raise DataError(None, "only one of X_val, y_val given", "pass both (or neither)")
    if has_val:
        Xv = _check_images(X_val, model, "X_val", fix)
        yv = _check_labels(y_val, len(Xv), k, "y_val")

    weight = _class_weights(yl, k) if config.balance_classes else None
    frozen = _trunk_frozen(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise DataError(None, "no parameter of the network requires gradients", "unfreeze the head (or the network)")
    bs = min(int(config.batch_size), len(Xl))
    bu = int(config.mu) * int(config.batch_size)
    strong = make_augment(tuple(Xu.shape[2:]), config.strong or PretrainConfig())
    p_target = (torch.full((k,), 1.0 / k) if config.da_target == "uniform"
                else torch.from_numpy(np.bincount(yl, minlength=k) / len(yl)).float().clamp_min(1e-3))
    p_target = p_target / p_target.sum()
    da_hist: list[torch.Tensor] = []

    history: list[dict[str, float]] = []
    best, best_row = BestEpoch.start(model, 2), None
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        g = torch.Generator().manual_seed(config.seed)
        lab, unl = Cycler(len(Xl), bs, g), Cycler(len(Xu), bu, g)
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        schedule = lr_schedule(opt, config.lr_schedule, config.epochs * config.steps_per_epoch)
        ema = (None if config.ema_decay is None else
               moving_average(model, float(config.ema_decay)))
        judged = model if ema is None else ema.module
        bar = tqdm(range(1, config.epochs + 1), desc="train semi (FixMatch)", disable=not progress, leave=False)
        for epoch in bar:
            strong.set_random_state(_epoch_seed(config.seed, epoch))
            tot = {"loss": 0.0, "l": 0.0, "u": 0.0, "mask": 0.0}
            pseudo_counts = np.zeros(k)
            for _ in range(config.steps_per_epoch):
                li, ui = lab.next(), unl.next()
                xl = augment_batch(Xl[li], None, g, config.augment)[0]
                ylb = torch.from_numpy(yl[li.numpy()])
                xu = rows(Xu, ui)
                xw, xs = augment_batch(xu, None, g, config.augment)[0], strong(xu)
                with torch.no_grad():
                    model.trunk.train(not frozen)   # weak-view BatchNorm statistics: the clean pool's
                    model.head.eval()               # no dropout on the pseudo-labeller
                    q = torch.softmax(model(xw), 1)
                    if config.distribution_alignment:
                        da_hist = (da_hist + [q.mean(0)])[-32:]
                        q = q * p_target / torch.stack(da_hist).mean(0)
                        q = q / q.sum(1, keepdim=True)
                    conf, pseudo = q.max(1)
                    mask = (conf >= config.threshold).float()
                model.train()
                if frozen:
                    model.trunk.eval()
                    with torch.no_grad():
                        feats = model.trunk(torch.cat([xl, xs]))
                    logits = model.head(feats)
                elif config.separate_bn:
                    logits = torch.cat([model(xl), model(xs)])
                else:
                    logits = model(torch.cat([xl, xs]))
                loss_l = F.cross_entropy(logits[:len(xl)], ylb, weight=weight)
                loss_u = (F.cross_entropy(logits[len(xl):], pseudo, reduction="none") * mask).mean()
                loss = loss_l + config.lambda_u * loss_u
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
                if ema is not None:
                    ema.update_parameters(model)
                tot["loss"] += loss.item()
                tot["l"] += loss_l.item()
                tot["u"] += loss_u.item()
                tot["mask"] += mask.mean().item()
                pseudo_counts += np.bincount(pseudo[mask > 0].numpy(), minlength=k)
            n = config.steps_per_epoch
            row: dict[str, float] = {"epoch": epoch, "train_loss": tot["loss"] / n, "loss_l": tot["l"] / n,
                                     "loss_u": tot["u"] / n, "mask_rate": tot["mask"] / n}
            for c in range(k):
                row[f"pseudo_class_{c}"] = float(pseudo_counts[c] / max(pseudo_counts.sum(), 1))
            if has_val:
                if config.validate_exact_bn and not frozen:
                    recalibrate_batchnorm(judged, Xl, batch_size=256)
                row.update(_validate(judged, Xv, yv, k))
                if best.offer(_key(row, config.select_on), epoch, judged):
                    best_row = row
            else:
                best.take_last(epoch)
                best_row = row
            seconds = log_epoch(row, history, bar, t0, ("train_loss", "mask_rate", "val_loss"))
            if best.ends_training(epoch, seconds, has_val=has_val, min_epochs=config.min_epochs,
                                  patience=config.patience, max_seconds=config.max_seconds):
                break
        bar.close()
    if ema is not None and best.state is None:  # no validation: the last average (loaded once: the live weights
        model.load_state_dict(ema.module.state_dict())  # must keep training on their own path until the end)
    best.restore(model)
    if config.recalibrate_bn and not frozen:
        # exact BatchNorm statistics on clean images; kept only if validation agrees they are at least as good
        if recalibrate_batchnorm(model, Stacked(Xl, Xu), batch_size=256) and has_val:
            row = _validate(model, Xv, yv, k)
            if _key(row, config.select_on) >= best.key:
                best_row = row
            else:
                best.restore(model)
    model.eval()
    metric_name, val_metric = "auc", float("nan")
    if has_val and best_row is not None:
        if math.isnan(best_row["val_auc"]):
            metric_name, val_metric = "accuracy", best_row["val_accuracy"]
        else:
            val_metric = best_row["val_auc"]
    decision: dict[str, Any] = {}
    if has_val and config.tune_decision:  # the same rule train() applies: imbalanced pools need their threshold
        decision = choose_decision(predict_proba(model, Xv.numpy()), yv)
    model.decision = decision  # travels with the model: evaluate / predict_labels / save_checkpoint read it
    return TrainResult(model=model, history=history, best_epoch=best.epoch, val_metric=float(val_metric),
                       metric_name=metric_name, seconds=time.perf_counter() - t0,
                       threshold=decision.get("threshold"), class_offsets=decision.get("class_offsets"))


def semi_config_from(config: TrainConfig, **overrides: Any) -> SemiConfig:
    """The FixMatch schedule of an active-learning round trained with ``config`` (:class:`TrainConfig`): same
    seed, learning rate, weight decay, labelled batch size, patience, class weighting, decision rule and time
    cap, and at most ``config.epochs`` epochs (a quick run's short schedule shortens FixMatch too); FixMatch's own
    fields (steps per epoch, mu, threshold) keep their defaults unless overridden."""
    base = {"epochs": min(SemiConfig.epochs, int(config.epochs)), "seed": config.seed, "lr": config.lr, "weight_decay": config.weight_decay,
            "batch_size": config.batch_size, "patience": config.patience, "min_epochs": config.min_epochs,
            "balance_classes": config.balance_classes, "tune_decision": config.tune_decision,
            "max_seconds": config.max_seconds, "augment": config.augment, "lr_schedule": config.lr_schedule}
    return SemiConfig(**{**base, **overrides})


__all__ = ["SemiConfig", "semi_config_from", "train_semi"]
