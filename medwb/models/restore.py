"""Restoration pretraining for segmenters (Models Genesis, Zhou et al. 2021): the UNet learns to undo corruptions.

Why beside SimCLR: SimCLR trains a segmenter's trunk through its *pooled* features, one vector per image, so the
decoder and the skip paths get no spatial target; on HC18 and MSD hippocampus its trunk did not help segmentation
rounds (benchmarks/active_learning/hc18/, hippocampus_medwb/). Restoring the image voxel by voxel from a corrupted
copy trains every layer the segmentation head will use. Selected with ``PretrainConfig(objective="restore")``; the
loop (:func:`medwb.models.pretrain.pretrain`) is shared: schedule, crops, seeds, checkpoints and resume.

Corruptions (:class:`Corrupt`), per image, drawn with MONAI's transforms of the same names: local pixel
shuffling (``RandCoarseShuffle``, p 0.5), then painting (p 0.9): in-painting (``RandCoarseDropout``: boxes refilled
with random values in the image's range) or out-painting (``dropout_holes=False``: only the boxes keep their
pixels), half each. The target is the augmented view itself (:class:`~medwb.models.pretrain.Augment`: affine,
flip, gamma / intensity scale = Models Genesis's non-linear intensity transform, blur, noise).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Corrupt:
    """Models Genesis's shuffling and in/out-painting of a batch (B, C, *spatial), each image its own draws
    (MONAI ``RandCoarseShuffle`` / ``RandCoarseDropout``; box sizes relative to the view). Seeded with
    ``set_random_state``."""

    def __init__(self, spatial_size: tuple[int, ...]) -> None:
        from monai.transforms import RandCoarseDropout, RandCoarseShuffle

        def box(div: int) -> list[int]:
            return [max(1, int(s) // div) for s in spatial_size]

        self.shuffle = RandCoarseShuffle(holes=4, max_holes=16, spatial_size=box(16), max_spatial_size=box(6),
                                         prob=1.0)
        self.inpaint = RandCoarseDropout(holes=1, max_holes=4, spatial_size=box(8), max_spatial_size=box(3),
                                         fill_value=None, prob=1.0)
        self.outpaint = RandCoarseDropout(holes=2, max_holes=5, spatial_size=box(4), max_spatial_size=box(2),
                                          dropout_holes=False, fill_value=None, prob=1.0)
        self.set_random_state(0)

    def set_random_state(self, seed: int) -> Corrupt:
        a, b, c, d = np.random.SeedSequence(int(seed)).generate_state(4)
        self.R = np.random.RandomState(int(a))
        self.shuffle.set_random_state(int(b))
        self.inpaint.set_random_state(int(c))
        self.outpaint.set_random_state(int(d))
        return self

    def _one(self, img: torch.Tensor) -> torch.Tensor:
        if self.R.uniform() < 0.5:
            img = torch.as_tensor(self.shuffle(img))
        if self.R.uniform() < 0.9:
            img = torch.as_tensor(self.inpaint(img) if self.R.uniform() < 0.5 else self.outpaint(img))
        return img

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        from monai.data import get_track_meta, set_track_meta

        before = get_track_meta()
        set_track_meta(False)
        try:
            return torch.stack([self._one(img.clone()) for img in xb]).float()
        finally:
            set_track_meta(before)


class Restorer(nn.Module):
    """trunk (per-voxel features) -> 1x1 convolution back to the image's channels (dropped after pretraining)."""

    def __init__(self, trunk: nn.Module, feat_dim: int, in_channels: int, spatial_dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.trunk = trunk
        self.projector = conv(feat_dim, in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.trunk(x))


def restoration_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean squared error, R^2 of the restoration: 1 - MSE / the target's variance; 0 = predicting the mean)."""
    loss = F.mse_loss(pred, target)
    r2 = 1.0 - loss.detach() / target.var().clamp_min(1e-8)
    return loss, r2
