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
  the same length: all 8 symmetries of a square in 2D (in-plane ones in 3D).
Masks (``y`` with the image's number of dimensions) move with their image; class labels are untouched.
"""
from __future__ import annotations

import torch

AUGMENTS = ("none", "shift", "flip", "dihedral")
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


__all__ = ["AUGMENTS", "ORIENTATION_FREE", "augment_batch", "check_augment", "default_augment", "shift"]
