"""Label-safe batch augmentation for supervised and FixMatch training, and which one a dataset gets.

Why its own module: the supervised loop (:func:`medwb.models.train.train`), FixMatch's labelled batch and weak
view (:mod:`medwb.models.semi`) and the loop's default schedule all need the same choice, and the choice depends
on the images: a blood-cell smear or a skin lesion has no up or left, so every flip and 90-degree turn of it is
another real image of the same class; a chest X-ray or a hippocampus volume does (the heart is on the left,
label 1 is the anterior part), so only a small shift is label-safe there.

Measured (BloodMNIST, 1200 random labels of 11 959, from scratch, official test split; session-7 notes in
benchmarks/active_learning/bloodmnist_medwb/README.md): accuracy 0.859 with the shift, 0.896 with ``dihedral``.

Kinds:
- ``none``: the batch as it is;
- ``shift``: one random circular shift of up to 2 voxels per spatial axis for the whole batch;
- ``flip``: the shift, then each image mirrored along each spatial axis with probability 1/2 (its own draw);
- ``dihedral``: ``flip`` plus, per image, a transpose of the last two axes with probability 1/2 when they are
  the same length: all 8 symmetries of a square in 2D (in-plane ones in 3D);
- ``intensity``: the shift, then per image a random gamma, contrast, brightness and noise
  (:func:`intensity_perturb`): scanner and protocol variation of an MRI or CT, every voxel where it was (also the
  strong view of the mean teacher, :mod:`medwb.models.semi_seg`).
Masks (``y`` with the image's number of dimensions) move with their image; class labels are untouched.
"""
from __future__ import annotations

import math

import torch

AUGMENTS = ("none", "shift", "flip", "dihedral", "intensity")
#: modalities whose images have no preferred orientation (case-insensitive; DICOM SM = slide microscopy,
#: GM = general microscopy, XC = external-camera photography such as dermoscopy).
ORIENTATION_FREE = frozenset({"microscopy", "pathology", "histopathology", "cytology", "dermoscopy", "dermatology",
                              "sm", "gm", "xc"})


def check_augment(kind: str | bool) -> str:
    """The augmentation name for ``kind``; ``True`` / ``False`` (the older boolean setting) mean shift / none."""
    if kind is True:
        return "shift"
    if kind is False:
        return "none"
    if kind not in AUGMENTS:
        from medwb.errors import DataError

        raise DataError(None, f"unknown augmentation {kind!r}", f"use one of {', '.join(AUGMENTS)}")
    return str(kind)


def default_augment(modality: str | None) -> str:
    """``dihedral`` for orientation-free modalities (microscopy, pathology, dermoscopy), else ``shift``."""
    return "dihedral" if str(modality or "").strip().lower() in ORIENTATION_FREE else "shift"


def shift(x: torch.Tensor, y: torch.Tensor | None, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random circular shift of up to 2 voxels per spatial axis (same for image and mask): cheap, label-safe."""
    dims = tuple(range(2, x.ndim))
    shifts = tuple(int(s) for s in torch.randint(-2, 3, (len(dims),), generator=g))
    x = torch.roll(x, shifts=shifts, dims=dims)
    if y is not None and y.ndim == x.ndim:
        y = torch.roll(y, shifts=shifts, dims=dims)
    return x, y


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (a.ndim - 1))), a, b)


def augment_batch(x: torch.Tensor, y: torch.Tensor | None, g: torch.Generator,
                  kind: str = "shift") -> tuple[torch.Tensor, torch.Tensor | None]:
    """``kind`` (see the module doc) applied to a batch ``x`` (N, C, *spatial) and its masks ``y`` when given."""
    kind = check_augment(kind)
    if kind == "none":
        return x, y
    x, y = shift(x, y, g)
    if kind == "shift":
        return x, y
    if kind == "intensity":
        return intensity_perturb(x, g), y
    n, dims = x.shape[0], list(range(2, x.ndim))
    moves_y = y is not None and y.ndim == x.ndim
    for d in dims:
        m = torch.rand(n, generator=g) < 0.5
        x = _where(m, x.flip(d), x)
        if moves_y:
            y = _where(m, y.flip(d), y)
    if kind == "dihedral" and len(dims) >= 2 and x.shape[-1] == x.shape[-2]:
        m = torch.rand(n, generator=g) < 0.5
        x = _where(m, x.transpose(-1, -2), x)
        if moves_y:
            y = _where(m, y.transpose(-1, -2), y)
    return x, y


def intensity_perturb(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Scanner-like intensity change of a batch (N, C, *spatial): per volume a gamma in [0.7, 1.5] on its own min-max range,
    contrast x[0.85, 1.15] and brightness +-0.1 of its standard deviation around its mean, then Gaussian noise
    of 0-0.05 of its standard deviation. Intensities only: every voxel stays where it was."""
    n = x.shape[0]
    shape = (n,) + (1,) * (x.ndim - 1)
    flat = x.reshape(n, -1)
    lo, hi = flat.min(1).values.view(shape), flat.max(1).values.view(shape)
    span = (hi - lo).clamp_min(1e-6)
    gamma = torch.exp(torch.empty(n).uniform_(math.log(0.7), math.log(1.5), generator=g)).view(shape)
    out = ((x - lo) / span).clamp(0, 1) ** gamma * span + lo
    mean, std = out.reshape(n, -1).mean(1).view(shape), out.reshape(n, -1).std(1).view(shape).clamp_min(1e-6)
    contrast = torch.empty(n).uniform_(0.85, 1.15, generator=g).view(shape)
    bright = torch.empty(n).uniform_(-0.1, 0.1, generator=g).view(shape)
    out = (out - mean) * contrast + mean + bright * std
    sigma = torch.empty(n).uniform_(0.0, 0.05, generator=g).view(shape) * std
    return out + sigma * torch.randn(out.shape, generator=g)


__all__ = ["AUGMENTS", "ORIENTATION_FREE", "augment_batch", "check_augment", "default_augment", "intensity_perturb",
           "shift"]
