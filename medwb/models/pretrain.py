"""Self-supervised pretraining of medwb's own MONAI trunks on the unlabelled pool (2D and 3D), no labels.

Why: every active-learning round trains a small network from scratch on the labelled cases only, so ~90% of
the pool only ever ranks cases. Pretraining the trunk on the whole pool first gives the cold start useful
embeddings and every round a better starting point (issue 12).

Objective: SimCLR's NT-Xent (contrastive; Chen et al. 2020), written out in :func:`nt_xent`. Chosen over the
non-contrastive objectives because on CPU with a small model and batches of a few hundred it is the most
reliable: its loss cannot collapse (every other image in the batch is a negative; BYOL / SimSiam avoid collapse
only through a predictor + stop-gradient / momentum encoder whose balance needs tuning and more epochs, VICReg
needs a wide expander and three weighted terms), it has one knob (the temperature), it trains one network per
step (no momentum copy: BYOL costs a third forward pass), and its loss and positive-pair accuracy are an
honest progress signal. Batches of 128 images (254 negatives per view) suffice at 28 px; the loss is
normalised by log(2B-1) in the history so runs with different batch sizes compare.

Augmentations (:func:`make_augment` -> :class:`Augment`, 2D and 3D alike): a random affine (rotation
+-15 degrees, zoom +-25%, shift +-10%: the crop/zoom of SimCLR without cutting the anatomy away), drawn like
MONAI's ``RandAffine`` but resampled for the whole batch at once with MONAI's ``AffineTransform`` layer (per
image it cost more than the network: 0.5-1.2 vs 0.2 ms per view at 28 px); then, also batched with per-image
draws (:class:`RandIntensityBatch`, the formulas of MONAI's transforms of the same names), ``RandFlip``
(last spatial axis), ``RandAdjustContrast`` (gamma) and ``RandScaleIntensity`` (exposure / window differences
between scanners), ``RandGaussianSmooth`` (resolution) and ``RandGaussianNoise`` (acquisition noise). No colour
jitter, solarisation or cut-outs: greyscale medical images carry meaning in intensity and small lesions. Seeded: epoch ``e`` draws all its randomness (shuffling, every
augmentation) from ``SeedSequence([seed, e])``, so a rerun, or a resume from any finished epoch, is
bit-identical for a given seed and torch thread count.

The trunk is trained with a projection head (Linear-BatchNorm-ReLU-Linear, dropped afterwards) on its pooled
features: classifier trunks end in global pooling -> (N, F); segmenter (UNet) trunks are averaged over space.
The result is the trunk's ``state_dict``; :func:`init_from_pretrained` loads it into a fresh network built with
the same ``build_args`` (head, dropout, number of classes and init seed may differ).

    res = pretrain(build_classifier(2, 1, 2).build_args, X_pool, config=PretrainConfig(epochs=20),
                   checkpoint=study / "pretrain.ckpt")
    model = init_from_pretrained(build_classifier(2, 1, 2), res)    # then train(model, X_lab, y_lab, ...)
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from medwb.data.case_images import CaseImages, Images, batches, fingerprint, is_streamed
from medwb.errors import ConfigError, DataError, MedwbError
from medwb.models.networks import TrunkHeadNet, build_from_args, feature_width
from medwb.models.train import pooled_features, recalibrate_batchnorm
from medwb.store import files

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset

FORMAT = "medwb-pretrain-1"          # the file format of save_pretrained
# bump when the algorithm changes results: part of every cache key (2: batched intensity augmentation)
ALGORITHM = "simclr-2"
_CKPT_FORMAT = "medwb-pretrain-ckpt-1"
# build_args entries that do not change the trunk's architecture (head-only or init-only)
_HEAD_ONLY_ARGS = ("num_classes", "dropout", "seed")


@dataclass
class PretrainConfig:
    """Pretraining schedule and augmentation strengths. Defaults: a fixed number of optimiser ``steps``, so a
    small pool is not under-trained (20 epochs of a 1000-image pool are only 140 steps) and a large one does not
    take hours; about 3 minutes on 2 CPU cores at 28 px (see benchmarks/pretrain). ``epochs``, when given,
    wins over ``steps`` (:func:`planned_epochs`)."""

    epochs: int | None = None     # passes over the pool; None: as many as ``steps`` needs
    steps: int = 600              # optimiser steps when ``epochs`` is None (rounded up to whole epochs)
    batch_size: int = 128         # images per step (2x as many views, 254 negatives each); capped at the pool size
    lr: float = 2e-3              # AdamW peak learning rate: linear warm-up over the first epoch, cosine decay
    weight_decay: float = 1e-4
    temperature: float = 0.2      # NT-Xent temperature
    proj_hidden: int = 256        # projection head Linear(F, hidden)-BN-ReLU-Linear(hidden, proj_dim)
    proj_dim: int = 64
    rotate_degrees: float = 15.0  # augmentation: RandAffine rotation range (every rotation plane in 3D)
    scale: float = 0.25           # RandAffine zoom: factor in 1 +- scale
    translate: float = 0.1        # RandAffine shift, fraction of the image size
    flip: bool = True             # RandFlip along the last spatial axis (p = 0.5)
    gamma: tuple[float, float] = (0.7, 1.5)  # RandAdjustContrast (p = 0.8)
    intensity_scale: float = 0.2  # RandScaleIntensity: x (1 +- this) (p = 0.8)
    blur_sigma: tuple[float, float] = (0.25, 1.0)  # RandGaussianSmooth in voxels (p = 0.5)
    noise_std: float = 0.05       # RandGaussianNoise on [0, 1] images (p = 0.5)
    recalibrate_bn: bool = True   # BatchNorm statistics recomputed on the un-augmented pool at the end
    crop: int | None = None       # views from one random crop of this many pixels per axis of each image (None: whole)
    seed: int = 0
    max_seconds: float | None = None  # wall-clock cap: stops after the epoch that crosses it (result.completed False)

    def __post_init__(self) -> None:
        problems = []
        if self.epochs is not None and int(self.epochs) < 1:
            problems.append(f"epochs={self.epochs} (use >= 1, or None to size the run by steps)")
        if int(self.steps) < 1:
            problems.append(f"steps={self.steps} (use >= 1)")
        if int(self.batch_size) < 2:
            problems.append(f"batch_size={self.batch_size} (use >= 2: a contrastive batch needs negatives)")
        if not self.temperature > 0:
            problems.append(f"temperature={self.temperature} (use > 0, typically 0.1-0.5)")
        if not self.lr > 0:
            problems.append(f"lr={self.lr} (use > 0)")
        if self.crop is not None and int(self.crop) < 8:
            problems.append(f"crop={self.crop} (use >= 8 pixels, or None for whole images)")
        if problems:
            raise ConfigError(f"invalid pretraining setting(s): {'; '.join(problems)}")
        self.gamma = tuple(float(v) for v in self.gamma)  # type: ignore[assignment]
        self.blur_sigma = tuple(float(v) for v in self.blur_sigma)  # type: ignore[assignment]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PretrainConfig:
        """Rebuild from ``asdict(config)`` (checkpoints, JSON); unknown keys -> ConfigError naming the fields."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown pretraining setting(s) {sorted(unknown)}; use PretrainConfig fields: "
                              f"{', '.join(sorted(names))}")
        return cls(**dict(d))


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns: the trunk's weights and how they were made."""

    trunk_state: dict[str, torch.Tensor]
    build_args: dict[str, Any]
    config: PretrainConfig
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, loss_norm, pos_acc, lr, seconds
    seconds: float = 0.0              # pretraining time of this call (plus earlier runs when resumed)
    epochs_done: int = 0
    projector_state: dict[str, torch.Tensor] | None = None
    epochs_planned: int = 0           # planned_epochs(config, pool size); 0 in results saved before it existed

    @property
    def completed(self) -> bool:
        """Every planned epoch ran (False when ``max_seconds`` stopped it: do not cache it as final)."""
        return self.epochs_done >= (self.epochs_planned or self.config.epochs or 1)


def default_pretrain_config(build_args: Mapping[str, Any]) -> PretrainConfig:
    """The schedule a network gets when none is given: :class:`PretrainConfig` defaults for 2D classifiers; for
    3D batches of 32 and 150 steps, since a 3D step of 128 volumes costs ~4 s on 2 cores at 28^3 (600 such steps
    would take about 40 minutes; benchmarks/pretrain/results_3d.txt); for 2D segmenters batches of 32 crops of
    64 px: a step of 128 whole 128 px images through the UNet costs ~5 s on 2 cores (600 steps: ~50 minutes),
    one of 32 crops of 64 px ~0.17 s (benchmarks/pretrain/seg2d/)."""
    if int(build_args.get("spatial_dims", 2)) == 3:
        return PretrainConfig(batch_size=32, steps=150)
    if build_args.get("kind") == "segmenter":
        return PretrainConfig(batch_size=32, crop=64)
    return PretrainConfig()


def pretrain_config_for(dataset: Dataset, **overrides: Any) -> PretrainConfig:
    """The schedule of medwb's network for ``dataset`` (:func:`default_pretrain_config`) with ``overrides``
    (PretrainConfig fields, e.g. ``steps``): what a user's step count replaces, so a 3D or segmentation set keeps
    its own batch and crop instead of falling back to the 2D classifier's whole-image batches of 128."""
    from medwb.models.networks import build_for_dataset

    return PretrainConfig.from_dict({**asdict(default_pretrain_config(build_for_dataset(dataset).build_args)),
                                     **overrides})  # unknown fields: ConfigError naming the known ones


def pretrain_config_on(config: PretrainConfig | Mapping[str, Any] | None, dataset: Dataset) -> PretrainConfig | None:
    """A caller's pretraining schedule for ``dataset``: a :class:`PretrainConfig` as it is, a mapping as overrides
    of the network's own schedule (:func:`pretrain_config_for`), None for the default. A command line passes its
    ``--pretrain-*`` flags as a mapping, so the pipeline resolves them on the dataset it opens anyway, instead of the
    command opening the data a second time."""
    if config is None or isinstance(config, PretrainConfig):
        return config
    return pretrain_config_for(dataset, **dict(config))


def planned_epochs(config: PretrainConfig, n_pool: int) -> int:
    """Epochs of a run on ``n_pool`` images: ``config.epochs`` when set, else ``ceil(steps / steps per epoch)``
    (a step is one batch of ``min(batch_size, n_pool)`` images; the ragged tail of an epoch is dropped)."""
    if config.epochs is not None:
        return int(config.epochs)
    per_epoch = max(1, n_pool // max(1, min(int(config.batch_size), n_pool)))
    return max(1, math.ceil(int(config.steps) / per_epoch))


# ------------------------------------------------------------------------------------------- the objective
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's normalised-temperature cross-entropy for two views (B, D) of the same B images.

    Each of the 2B embeddings must pick its partner among the other 2B-1 (cosine similarity / temperature).
    Returns (mean loss, fraction of embeddings whose nearest other embedding is their partner).
    """
    sim, target = _partner_logits(z1, z2, temperature)
    loss = F.cross_entropy(sim, target)
    acc = (sim.argmax(1) == target).float().mean()
    return loss, acc


def _partner_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent's logits (2B, 2B): cosine similarities / temperature of the 2B views, each view's own entry masked
    out; and each row's partner (the other view of the same image): view i of z1 pairs with view i of z2."""
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), -1e9)
    return sim, torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)


class _Encoder(nn.Module):
    """trunk -> pooled features (N, F) -> projection z (N, proj_dim)."""

    def __init__(self, trunk: nn.Module, feat_dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.projector = nn.Sequential(nn.Linear(feat_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, out))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.features(x))


# ----------------------------------------------------------------------------------------- augmentations
class RandAffineBatch:
    """MONAI's ``RandAffine`` for a whole batch in one resampling call: per-image random rotation, scale and
    translation drawn like ``RandAffineGrid`` (same ranges, same matrix order ``R @ T @ S`` from
    ``monai.transforms.utils``), applied with MONAI's batched ``AffineTransform`` layer (zero-centred voxel
    coordinates, bilinear, zero padding). Per-image ``RandAffine`` calls cost more than the network at 28 px.
    """

    def __init__(self, spatial_size: tuple[int, ...], *, rotate: float, scale: float, translate: float) -> None:
        from monai.networks.layers import AffineTransform

        self.n = len(spatial_size)
        self.rotate, self.scale = float(rotate), float(scale)
        self.shift = np.array([float(translate) * s for s in spatial_size])
        self.warp = AffineTransform(normalized=False, zero_centered=True, mode="bilinear", padding_mode="zeros",
                                    align_corners=True, reverse_indexing=True)
        self.set_random_state(0)

    def set_random_state(self, seed: int) -> RandAffineBatch:
        self.R = np.random.RandomState(seed)
        return self

    def matrices(self, b: int) -> torch.Tensor:
        """(b, n+1, n+1) random affine matrices (output voxel -> input voxel, zero-centred)."""
        from monai.transforms.utils import create_rotate, create_scale, create_translate

        n_rot = 1 if self.n == 2 else 3
        rot = self.R.uniform(-self.rotate, self.rotate, (b, n_rot))
        shift = self.R.uniform(-1.0, 1.0, (b, self.n)) * self.shift
        scale = 1.0 + self.R.uniform(-self.scale, self.scale, (b, self.n))
        mats = [create_rotate(self.n, list(r)) @ create_translate(self.n, list(t)) @ create_scale(self.n, list(s))
                for r, t, s in zip(rot, shift, scale)]
        return torch.as_tensor(np.stack(mats), dtype=torch.float32)

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        return self.warp(xb, self.matrices(len(xb)))


def batch_adjust_contrast(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """MONAI's ``AdjustContrast`` per image of a batch: ((x - min) / range) ** gamma * range + min, with each
    image's own min, range and ``gamma`` (b,)."""
    shape = (len(x),) + (1,) * (x.ndim - 1)
    lo = x.flatten(1).amin(1).view(shape)
    rng = x.flatten(1).amax(1).view(shape) - lo
    return ((x - lo) / (rng + 1e-7)).clamp_min(0) ** gamma.to(x.dtype).view(shape) * rng + lo


def batch_gaussian_smooth(x: torch.Tensor, sigmas: torch.Tensor, max_sigma: float | None = None) -> torch.Tensor:
    """MONAI's ``GaussianSmooth`` (erf-sampled kernel truncated at 4 sigma, zero padding) per image of a batch
    (b, C, *spatial), with each image's own per-axis ``sigmas`` (b, n): separable grouped convolutions. All
    kernels are ``4 * max_sigma`` wide (default: the largest sigma); the extra taps of smaller sigmas are ~0."""
    b, ch, n = x.shape[0], x.shape[1], x.ndim - 2
    sig = torch.as_tensor(sigmas, dtype=torch.float64).reshape(b, n)
    top = float(sig.max()) if max_sigma is None else float(max_sigma)
    tail = int(max(top * 4.0, 0.5) + 0.5)
    grid = torch.arange(-tail, tail + 1, dtype=torch.float64)
    conv = F.conv2d if n == 2 else F.conv3d
    y = x.reshape(1, b * ch, *x.shape[2:])
    for ax in range(n):
        t = (0.70710678 / sig[:, ax].clamp_min(1e-6))[:, None]
        k = (0.5 * (torch.erf(t * (grid + 0.5)) - torch.erf(t * (grid - 0.5)))).clamp_min(0)
        k = (k / k.sum(1, keepdim=True)).to(x.dtype).repeat_interleave(ch, 0)     # (b*ch, 2*tail+1)
        shape = [b * ch, 1] + [1] * n
        shape[2 + ax] = 2 * tail + 1
        pad = [0] * n
        pad[ax] = tail
        y = conv(y, k.reshape(shape), padding=tuple(pad), groups=b * ch)
    return y.reshape(x.shape)


class RandIntensityBatch:
    """The intensity half of the view generator, for a whole batch at once, with per-image random draws:
    ``RandFlip`` (last spatial axis, p 0.5), ``RandAdjustContrast`` (gamma, p 0.8), ``RandScaleIntensity``
    (x (1 + f), p 0.8), ``RandGaussianSmooth`` (erf-sampled Gaussian truncated at 4 sigma, zero padding; p 0.5)
    and ``RandGaussianNoise`` (std drawn in [0, noise_std], p 0.5), in that order, each the same formula as the
    MONAI transform of that name (tests compare them). Why not the MONAI transforms themselves: they draw one
    value per call, so a batch needed one Compose call per image, which cost more than the network's
    forward pass (43 ms for 96 images at 28 px on 2 cores, against 32 ms for the forward pass)."""

    def __init__(self, n_spatial: int, config: PretrainConfig) -> None:
        self.n, self.c = int(n_spatial), config
        self.set_random_state(0)

    def set_random_state(self, seed: int) -> RandIntensityBatch:
        a, b = np.random.SeedSequence(int(seed)).generate_state(2)
        self.R = np.random.RandomState(int(a))
        self.g = torch.Generator().manual_seed(int(b))
        return self

    def _on(self, b: int, p: float) -> np.ndarray:
        return self.R.uniform(0.0, 1.0, b) < p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c, b = self.c, len(x)
        if b == 0:
            return x
        per_image = (b,) + (1,) * (x.ndim - 1)
        x = x.clone()
        if c.flip:
            on = torch.from_numpy(self._on(b, 0.5)).view(per_image)
            x = torch.where(on, x.flip(-1), x)
        if c.gamma != (1.0, 1.0):
            on = self._on(b, 0.8)
            gam = self.R.uniform(c.gamma[0], c.gamma[1], b)
            adj = batch_adjust_contrast(x, torch.as_tensor(gam))
            x = torch.where(torch.from_numpy(on).view(per_image), adj, x)
        if c.intensity_scale > 0:
            on = self._on(b, 0.8)
            f = self.R.uniform(-c.intensity_scale, c.intensity_scale, b)
            x = x * torch.as_tensor(np.where(on, 1.0 + f, 1.0), dtype=torch.float32).view(per_image)
        if c.blur_sigma[1] > 0:
            on = self._on(b, 0.5)
            sig = self.R.uniform(c.blur_sigma[0], c.blur_sigma[1], (b, self.n))
            if on.any():
                idx = torch.from_numpy(np.flatnonzero(on))
                x[idx] = batch_gaussian_smooth(x[idx], torch.as_tensor(sig[on]), c.blur_sigma[1])
        if c.noise_std > 0:
            on = self._on(b, 0.5)
            std = self.R.uniform(0.0, c.noise_std, b) * on
            noise = torch.randn(x.shape, generator=self.g)
            x = x + noise * torch.as_tensor(std, dtype=torch.float32).view(per_image)
        return x


class Augment:
    """Random views of a batch (B, C, *spatial): :class:`RandAffineBatch` (rotation, zoom, shift), then
    :class:`RandIntensityBatch` (flip, gamma, intensity scale, blur, noise); both draw per image and work on
    the whole batch at once. ``set_random_state(seed)`` makes the views reproducible."""

    def __init__(self, spatial_size: tuple[int, ...], config: PretrainConfig | None = None) -> None:
        c = config or PretrainConfig()
        n = len(spatial_size)
        if n not in (2, 3):
            raise DataError(None, f"spatial size {tuple(spatial_size)} is neither 2D nor 3D",
                            "use (H, W) or (H, W, D)")
        self.affine = None
        if c.rotate_degrees > 0 or c.scale > 0 or c.translate > 0:
            self.affine = RandAffineBatch(spatial_size, rotate=math.radians(c.rotate_degrees), scale=c.scale,
                                          translate=c.translate)
        self.intensity = RandIntensityBatch(n, c)
        self.set_random_state(0)

    def set_random_state(self, seed: int) -> Augment:
        a, b = np.random.SeedSequence(int(seed)).generate_state(2)
        if self.affine is not None:
            self.affine.set_random_state(int(a))
        self.intensity.set_random_state(int(b))
        return self

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        xb = xb.float()
        if self.affine is not None:
            with _no_meta():
                xb = torch.as_tensor(self.affine(xb), dtype=torch.float32)
        return self.intensity(xb)


def make_augment(spatial_size: tuple[int, ...], config: PretrainConfig | None = None) -> Augment:
    """The view generator :func:`pretrain` uses for images of ``spatial_size`` (see :class:`Augment`)."""
    return Augment(tuple(int(s) for s in spatial_size), config)


@contextmanager
def _no_meta() -> Iterator[None]:
    """MONAI transforms on plain tensors (MetaTensor bookkeeping costs more than the transforms at 28 px)."""
    from monai.data import get_track_meta, set_track_meta

    before = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(before)


def crop_shape(spatial: tuple[int, ...], crop: int | None) -> tuple[int, ...]:
    """The views' spatial size for images of ``spatial``: ``crop`` pixels along every longer axis (None: whole)."""
    return tuple(int(s) if crop is None else min(int(crop), int(s)) for s in spatial)


def random_crops(xb: torch.Tensor, shape: tuple[int, ...], rng: np.random.RandomState) -> torch.Tensor:
    """One crop of spatial ``shape`` per image of ``xb`` (B, C, *spatial), its corner uniform over the positions
    that fit; both SimCLR views of an image are then drawn from its crop (they share content)."""
    if tuple(xb.shape[2:]) == tuple(shape):
        return xb
    starts = np.stack([rng.randint(0, s - c + 1, len(xb)) for s, c in zip(xb.shape[2:], shape)], axis=1)
    return torch.stack([xb[(i, slice(None)) + tuple(slice(int(a), int(a) + c) for a, c in zip(corner, shape))]
                        for i, corner in enumerate(starts)])


def _views(xb: torch.Tensor, aug: Augment) -> torch.Tensor:
    """Two augmented views of every image of a batch, as one (2B, C, *spatial) tensor: [view1s; view2s]."""
    return torch.cat([aug(xb), aug(xb)])


# ----------------------------------------------------------------------------------------- helpers
def _epoch_seeds(seed: int, epoch: int) -> tuple[int, int]:
    s = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(2)
    return int(s[0]), int(s[1])


def _crop_rng(seed: int, epoch: int) -> np.random.RandomState:
    """The epoch's crop positions (a stream of its own: whole-image runs keep their shuffles and views)."""
    return np.random.RandomState(int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), 1]).generate_state(1)[0]))


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _config_for_key(config: PretrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d.pop("max_seconds")  # a cap changes when it stops, not what an epoch does (see PretrainResult.completed)
    if d["crop"] is None:
        d.pop("crop")  # whole images: the key of every result made before crops existed
    d["gamma"], d["blur_sigma"] = list(d["gamma"]), list(d["blur_sigma"])
    return d


def _build_args_for_key(build_args: Mapping[str, Any]) -> dict[str, Any]:
    a = dict(build_args)
    if a.get("channels") is not None:
        a["channels"] = [int(c) for c in a["channels"]]
    return a


def pretrain_key(data_hash: str, build_args: Mapping[str, Any], config: PretrainConfig) -> str:
    """Cache key of a pretraining result: sha256 of the canonical JSON of the data hash, the network's
    ``build_args`` and the config (everything but ``max_seconds``), plus the algorithm version."""
    blob = {"format": FORMAT, "algorithm": ALGORITHM, "data": str(data_hash), "build_args": _build_args_for_key(build_args),
            "config": _config_for_key(config)}
    return hashlib.sha256(_canonical(blob).encode()).hexdigest()


def data_fingerprint(X: Images) -> str:
    """sha256 of the pool images (dtype, shape, bytes; a streamed pool chunk by chunk, to the same digest): the
    data hash :func:`pretrain` checks on resume."""
    return fingerprint(X)


def _check_pool(X: Images, build_args: Mapping[str, Any]) -> torch.Tensor | CaseImages:
    sd, ic = int(build_args["spatial_dims"]), int(build_args["in_channels"])
    fix = "pass the unlabelled pool as a channel-first float array, e.g. open_dataset(path).arrays('train', size=...)[0]"
    if not isinstance(X, (np.ndarray, CaseImages)):
        X = np.asarray(X)
    if X.ndim != sd + 2:
        want = "(N, C, H, W)" if sd == 2 else "(N, C, H, W, D)"
        raise DataError(None, f"pool images have shape {X.shape}, expected {want} for a {sd}D network", fix)
    if len(X) == 0:
        raise DataError(None, "the pool is empty (0 images)", fix)
    if len(X) < 2:
        raise DataError(None, "the pool has 1 image; contrastive pretraining needs at least 2",
                        "pretrain on the whole unlabelled pool")
    if X.shape[1] != ic:
        raise DataError(None, f"pool images have {X.shape[1]} channel(s) but the network expects {ic}",
                        f"build the network with in_channels={X.shape[1]} or convert the images")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise DataError(None, f"pool images have dtype {X.dtype}", "pass real-valued (float32) images")
    _check_size(X.shape, build_args)
    if is_streamed(X):
        return X  # each case's values are validated when it is read (Dataset.load_raw)
    bad = ~np.isfinite(X.reshape(len(X), -1)).all(1) if np.issubdtype(X.dtype, np.floating) else np.zeros(len(X), bool)
    if bad.any():
        first = np.flatnonzero(bad)[:5].tolist()
        raise DataError(None, f"{int(bad.sum())} pool image(s) contain NaN or Inf values (indices {first}...)",
                        "drop or repair those cases (medwb check lists them) before pretraining")
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))


def _check_size(shape: tuple[int, ...], build_args: Mapping[str, Any]) -> None:
    if build_args.get("kind") == "segmenter":
        k = 2 ** (len(build_args["channels"]) - 1)
        if any(s % k for s in shape[2:]):
            raise DataError(None, f"image size {tuple(shape[2:])} is not divisible by {k} (UNet with "
                            f"{len(build_args['channels'])} levels)", f"resize, e.g. arrays(split, size=...) "
                            f"with sizes divisible by {k}")


def _resolve_model(model_or_build_args: TrunkHeadNet | Mapping[str, Any]) -> TrunkHeadNet:
    if isinstance(model_or_build_args, TrunkHeadNet):
        return copy.deepcopy(model_or_build_args)
    if isinstance(model_or_build_args, Mapping) and "kind" in model_or_build_args:
        return build_from_args(dict(model_or_build_args))
    raise DataError(None, f"cannot pretrain a {type(model_or_build_args).__name__}",
                    "pass a network from medwb.models.build_classifier / build_segmenter, or its build_args")


def _feat_dim(model: TrunkHeadNet) -> int:
    return feature_width(model.build_args)


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    w = min(1.0, (step + 1) / max(warmup, 1))
    return peak * w * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------------------- pretraining
def pretrain(model_or_build_args: TrunkHeadNet | Mapping[str, Any], X: Images, *,
             config: PretrainConfig | None = None, progress: bool = True,
             checkpoint: str | Path | None = None, workers: int = 0,
             data_hash: str | None = None) -> PretrainResult:
    """SimCLR pretraining of the network's trunk on the unlabelled images ``X`` (N, C, *spatial), no labels.

    ``X``: an array, or a :class:`~medwb.data.case_images.CaseImages` that reads each batch from the files when
    it is needed (a pool that does not fit in memory; the same weights as the array it stands for). ``workers``:
    DataLoader processes that read a streamed pool's next batches ahead (no effect on the result).
    ``data_hash``: :func:`data_fingerprint` of ``X`` when the caller has it (a streamed pool is read once less).

    ``model_or_build_args``: a medwb network (its trunk's current weights are the starting point; the network
    itself is not modified) or its ``build_args`` (fresh init from ``build_args['seed']``).
    ``checkpoint``: a file that receives trunk, projector, optimizer, epoch and history atomically after every
    epoch; when it exists (same data, network and config) the run resumes after its last finished epoch and
    ends with the same weights as an uninterrupted run. The torch global RNG is left untouched.
    Returns a :class:`PretrainResult`; apply it with :func:`init_from_pretrained`.
    """
    model = _resolve_model(model_or_build_args)
    build_args = dict(model.build_args)
    config = config or default_pretrain_config(build_args)
    Xt = _check_pool(X, build_args)
    n = len(Xt)
    bs = min(int(config.batch_size), n)
    steps_per_epoch = max(1, n // bs)  # drop the ragged tail (reshuffled every epoch)
    epochs = planned_epochs(config, n)
    total_steps = steps_per_epoch * epochs
    warmup = min(steps_per_epoch, max(1, total_steps // 10))
    match = {"format": _CKPT_FORMAT, "data": data_hash or data_fingerprint(X),
             "build_args": _build_args_for_key(build_args), "config": _config_for_key(config)}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        enc = _Encoder(model.trunk, _feat_dim(model), config.proj_hidden, config.proj_dim)
    opt = torch.optim.AdamW(enc.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    start_epoch, seconds_before = 0, 0.0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.is_file():
        blob = _read_ckpt(ckpt)
        if _canonical(blob["match"]) != _canonical(match):
            diff = [k for k in match if _canonical(blob["match"].get(k)) != _canonical(match[k])]
            raise DataError(ckpt, f"this pretraining checkpoint was written for different {', '.join(diff)}",
                            "pass the same pool, network and config to resume, or another checkpoint path "
                            "(delete the file to start over)")
        enc.trunk.load_state_dict(blob["trunk"])
        enc.projector.load_state_dict(blob["projector"])
        opt.load_state_dict(blob["optimizer"])
        start_epoch, history, seconds_before = int(blob["epoch"]), list(blob["history"]), float(blob["seconds"])

    view_shape = crop_shape(tuple(Xt.shape[2:]), config.crop)
    _check_size((n, 1) + view_shape, build_args)
    aug = make_augment(view_shape, config)
    log_k = math.log(2 * bs - 1)
    t0 = time.perf_counter()
    epochs_done = start_epoch
    bar = tqdm(range(start_epoch + 1, epochs + 1), desc="pretrain (SimCLR)", disable=not progress,
               leave=False, initial=start_epoch, total=epochs)
    for epoch in bar:
        enc.train()
        s_perm, s_aug = _epoch_seeds(config.seed, epoch)
        g = torch.Generator().manual_seed(s_perm)
        aug.set_random_state(seed=s_aug)
        crops = _crop_rng(config.seed, epoch)
        perm = torch.randperm(n, generator=g)
        tot_loss = tot_acc = 0.0
        epoch_batches = [perm[i * bs:(i + 1) * bs] for i in range(steps_per_epoch)]
        for i, xb in enumerate(batches(Xt, epoch_batches, workers=workers)):
            step = (epoch - 1) * steps_per_epoch + i
            lr = _lr_at(step, total_steps, warmup, config.lr)
            for grp in opt.param_groups:
                grp["lr"] = lr
            z = enc(_views(random_crops(xb, view_shape, crops), aug))
            loss, acc = nt_xent(z[:len(xb)], z[len(xb):], config.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_loss += loss.item()
            tot_acc += acc.item()
        row = {"epoch": epoch, "loss": tot_loss / steps_per_epoch,
               "loss_norm": tot_loss / steps_per_epoch / log_k, "pos_acc": tot_acc / steps_per_epoch,
               "lr": lr, "seconds": seconds_before + time.perf_counter() - t0}
        history.append(row)
        epochs_done = epoch
        bar.set_postfix(loss=f"{row['loss']:.3f}", pos_acc=f"{row['pos_acc']:.2f}")
        if ckpt is not None:
            _write_ckpt(ckpt, {"format": _CKPT_FORMAT, "match": match, "epoch": epoch,
                               "trunk": enc.trunk.state_dict(), "projector": enc.projector.state_dict(),
                               "optimizer": opt.state_dict(), "history": history, "seconds": row["seconds"],
                               "rng": {"scheme": "numpy SeedSequence([seed, epoch]) per epoch",
                                       "seed": int(config.seed), "next_epoch": epoch + 1}})
        if config.max_seconds is not None and time.perf_counter() - t0 > config.max_seconds:
            break
    bar.close()
    trunk = copy.deepcopy(enc.trunk)
    if config.recalibrate_bn:
        # the BatchNorm statistics of training come from augmented views; embeddings / fine-tuning see clean images
        recalibrate_batchnorm(trunk, Xt, batch_size=256)
    trunk.eval()
    return PretrainResult(trunk_state=_clone_state(trunk), build_args=build_args, config=config,
                          history=history, seconds=seconds_before + time.perf_counter() - t0,
                          epochs_done=epochs_done, projector_state=_clone_state(enc.projector), epochs_planned=epochs)


def _write_ckpt(path: Path, payload: dict[str, Any]) -> Path:
    """Atomic; encrypted inside an encrypted study (``cache/pretrain/``), see :mod:`medwb.store.files`."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    return files.write_bytes(path, buf.getvalue())


def _torch_load(path: Path, what: str, fix: str) -> Any:
    """``torch.load`` of weights only; any unpickling failure is a DataError naming the file, ``what`` and ``fix``."""
    try:
        return torch.load(io.BytesIO(files.read_bytes(path)), map_location="cpu", weights_only=True)
    except MedwbError:  # encrypted with a key that is not at hand
        raise
    except Exception as e:  # any unpickling failure means a bad file
        raise DataError(path, f"not a readable {what} ({e.__class__.__name__})", fix) from e


def _read_ckpt(path: Path) -> dict[str, Any]:
    blob = _torch_load(path, "medwb pretraining checkpoint", "delete it to start over")
    if not isinstance(blob, dict) or blob.get("format") != _CKPT_FORMAT:
        raise DataError(path, "not a medwb pretraining checkpoint", "pass another path, or delete it to start over")
    return blob


# ----------------------------------------------------------------------------------------- using the result
def save_pretrained(result: PretrainResult, path: str | Path) -> Path:
    """Write a :class:`PretrainResult` (trunk weights, build_args, config, history) atomically to ``path``."""
    payload = {"format": FORMAT, "trunk_state": result.trunk_state, "build_args": result.build_args,
               "config": _config_for_key(result.config) | {"max_seconds": result.config.max_seconds},
               "history": result.history, "seconds": result.seconds, "epochs_done": result.epochs_done,
               "epochs_planned": result.epochs_planned}
    return _write_ckpt(Path(path), payload)


def load_pretrained(path: str | Path) -> PretrainResult:
    """Read a file written by :func:`save_pretrained`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "pretrained weights file not found", "pass the path written by save_pretrained")
    blob = _torch_load(path, "weights file", "pass a file written by save_pretrained or torch.save(state_dict)")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise DataError(path, "not a medwb pretraining result", "write it with medwb.models.pretrain.save_pretrained")
    return PretrainResult(trunk_state=blob["trunk_state"], build_args=blob["build_args"],
                          config=PretrainConfig.from_dict(blob["config"]), history=blob["history"],
                          seconds=float(blob["seconds"]), epochs_done=int(blob["epochs_done"]),
                          epochs_planned=int(blob.get("epochs_planned", 0)))


def _trunk_state_from_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """A user-supplied weights file: a save_pretrained result, a medwb checkpoint, or a plain state_dict (of
    the trunk, or of the whole network with ``trunk.`` keys)."""
    blob = _torch_load(path, "weights file",
                       "pass a file written by save_pretrained / save_checkpoint or torch.save(state_dict)")
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        return blob["trunk_state"], blob["build_args"]
    if isinstance(blob, dict) and "state_dict" in blob and isinstance(blob.get("meta"), dict):
        return blob["state_dict"], blob["meta"].get("build_args")
    if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
        return blob, None
    raise DataError(path, "no network weights found in this file",
                    "pass a file written by save_pretrained / save_checkpoint or torch.save(model.trunk.state_dict())")


def init_from_pretrained(model: TrunkHeadNet, pretrained: PretrainResult | Mapping[str, torch.Tensor] | str | Path
                         ) -> TrunkHeadNet:
    """Load pretrained trunk weights into ``model`` (in place; returned for chaining); the head is untouched.

    ``pretrained``: a :class:`PretrainResult`, a trunk ``state_dict``, or a weights file (save_pretrained,
    a medwb checkpoint, or a torch-saved trunk / whole-network state_dict). The trunk architecture must match:
    same build_args apart from the head (num_classes, dropout) and the init seed.
    """
    src_args: Mapping[str, Any] | None = None
    if isinstance(pretrained, PretrainResult):
        state, src_args = pretrained.trunk_state, pretrained.build_args
    elif isinstance(pretrained, (str, Path)):
        p = Path(pretrained)
        if not p.is_file():
            raise DataError(p, "pretrained weights file not found", "pass the path written by save_pretrained")
        state, src_args = _trunk_state_from_file(p)
    elif isinstance(pretrained, Mapping):
        state = pretrained
    else:
        raise DataError(None, f"cannot read pretrained weights from a {type(pretrained).__name__}",
                        "pass a PretrainResult, a trunk state_dict or a weights file path")
    if any(k.startswith("trunk.") for k in state):
        state = {k[len("trunk."):]: v for k, v in state.items() if k.startswith("trunk.")}
    if src_args is not None:
        a = {k: v for k, v in _build_args_for_key(src_args).items() if k not in _HEAD_ONLY_ARGS}
        b = {k: v for k, v in _build_args_for_key(model.build_args).items() if k not in _HEAD_ONLY_ARGS}
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise DataError(None, f"the pretrained trunk was built differently ({', '.join(f'{k}: {a.get(k)} vs {b.get(k)}' for k in diff)})",
                            "build the network with the pretrained build_args (num_classes, dropout, seed may differ)")
    try:
        model.trunk.load_state_dict(dict(state), strict=True)
    except RuntimeError as e:
        raise DataError(None, f"the pretrained weights do not fit this network's trunk ({str(e).splitlines()[0]})",
                        "build the network with the build_args used for pretraining") from e
    return model


def contrast_confidence(result: PretrainResult, X: Images, *, draws: int = 4, seed: int = 0) -> np.ndarray:
    """Per image of ``X``: how surely the pretrained trunk tells its two augmented views apart from the other
    images, as NT-Xent's softmax probability of the partner view in a random batch (training's batch size,
    augmentation and temperature), on the L2-normalised trunk features the cold start clusters, averaged over
    both views and ``draws`` batchings. Low = *hard to contrast*: "Making Your First Choice" (Chen et al. 2022,
    arXiv 2210.02442) found such images a better first batch on MedMNIST than easy (typical) ones; they average
    over the training epochs of MoCo, here the final trunk over several draws (the projection head is not kept in
    the cache). Deterministic for a ``seed``."""
    config = result.config
    model = build_from_args(dict(result.build_args))
    init_from_pretrained(model, result)
    trunk = model.trunk.eval()
    Xt = _check_pool(X, result.build_args)
    n = len(Xt)
    if n < 2:
        raise DataError(None, f"contrast confidence needs at least 2 images, got {n}", "pass the whole pool")
    n_batches = max(1, math.ceil(n / min(int(config.batch_size), n)))
    aug = make_augment(tuple(Xt.shape[2:]), config)
    total = np.zeros(n)
    with torch.no_grad():
        for draw in range(int(draws)):
            s_perm, s_aug = _epoch_seeds(seed, draw)
            aug.set_random_state(s_aug)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(s_perm))
            index = list(torch.tensor_split(perm, n_batches))  # near-equal sizes: as many negatives for everyone
            for idx, xb in zip(index, batches(Xt, index)):
                z, b = pooled_features(trunk(_views(xb, aug))), len(idx)
                sim, partner = _partner_logits(z[:b], z[b:], config.temperature)
                p = sim.softmax(1)[torch.arange(2 * b), partner].double()
                total[idx.numpy()] += ((p[:b] + p[b:]) / 2).numpy()
    return total / int(draws)


__all__ = ["Augment", "PretrainConfig", "PretrainResult", "RandAffineBatch", "RandIntensityBatch",
           "batch_adjust_contrast", "batch_gaussian_smooth", "contrast_confidence", "crop_shape",
           "data_fingerprint", "init_from_pretrained", "load_pretrained", "make_augment", "nt_xent", "pretrain",
           "pretrain_key", "random_crops", "save_pretrained"]
