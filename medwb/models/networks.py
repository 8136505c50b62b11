"""Compact MONAI networks for CPU, split into a deterministic trunk and a stochastic head.

Why this shape: active learning retrains every round on a few hundred labels, so the networks are small,
use batch-independent normalisation where it matters (GroupNorm / InstanceNorm for segmenters) and split
into a ``trunk`` and a ``head`` (dropout + linear / 1x1 conv). The split lets :mod:`medwb.models.uncertainty`
run the trunk once and sample only the head for MC dropout.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Literal

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets import UNet
from torch import nn

from medwb.errors import DataError

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset

Task = Literal["classification", "segmentation"]

_DROPOUT_ND = {1: nn.Dropout, 2: nn.Dropout2d, 3: nn.Dropout3d}

class TrunkHeadNet(nn.Module):
    """``forward(x) = head(trunk(x))``; ``build_args`` holds what is needed to rebuild it (checkpoints)."""

    def __init__(self, trunk: nn.Module, head: nn.Module, build_args: dict[str, Any]) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.build_args = dict(build_args)

    @property
    def task(self) -> Task:
        kind = self.build_args["kind"]
        if kind == "ensemble":
            kind = self.build_args["members"][0]["kind"]
        return "segmentation" if kind == "segmenter" else "classification"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def _check_dims(spatial_dims: int, in_channels: int, num_classes: int) -> None:
    if spatial_dims not in (2, 3):
        raise DataError(None, f"spatial_dims={spatial_dims} is not supported", "use 2 (images) or 3 (volumes)")
    if in_channels < 1 or num_classes < 2:
        raise DataError(None, f"in_channels={in_channels}, num_classes={num_classes} is not a valid network",
                        "use in_channels >= 1 and num_classes >= 2 (binary tasks have 2 classes)")


def _norm(kind: str, channels: int) -> tuple[str, dict[str, Any]] | str:
    """``batch`` (classifier default): converges in a few epochs on 300 images where GroupNorm needs many more
    (measured: val AUC 0.96 vs 0.70 after 2-4 epochs); made safe for tiny labelled sets by :func:`train`
    (no 1-image batches, running statistics recomputed exactly on the labelled set after training). ``group``
    (4 channels per group) / ``instance``: batch-independent alternatives."""
    if kind == "group":
        return ("group", {"num_groups": max(2, channels // 4)})
    if kind in ("batch", "instance"):
        return kind
    raise DataError(None, f"unknown normalisation {kind!r}", "use 'group', 'batch' or 'instance'")


def _checked_channels(spatial_dims: int, in_channels: int, num_classes: int,
                      channels: tuple[int, ...] | None) -> tuple[int, ...]:
    """Validate the builder arguments; default widths keep a 28 px / 28^3 round fast on 2 CPU cores."""
    _check_dims(spatial_dims, in_channels, num_classes)
    if channels is None:
        channels = (16, 32, 64, 128) if spatial_dims == 2 else (8, 16, 32, 64)
    return tuple(int(c) for c in channels)


def build_classifier(spatial_dims: int, in_channels: int, num_classes: int, *, dropout: float = 0.3,
                     seed: int = 0, channels: tuple[int, ...] | None = None, norm: str = "batch") -> TrunkHeadNet:
    """A small residual CNN (MONAI ``Convolution`` + ``ResidualUnit`` with GroupNorm) for 2D or 3D.

    ``trunk``: stem conv, three stride-2 residual stages, global average pooling -> (N, F) features, no dropout.
    ``head``: ``Dropout(dropout)`` + ``Linear(F, num_classes)`` (logits). Same ``seed`` -> same weights.
    Default widths (2D 16-32-64-128, 3D 8-16-32-64) keep a 28 px / 28^3 round on 2 CPU cores fast.
    ``norm``: ``batch`` (default, see :func:`_norm`), ``group`` or ``instance``.
    """
    channels = _checked_channels(spatial_dims, in_channels, num_classes, channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = [
            Convolution(spatial_dims, in_channels, channels[0], strides=1, kernel_size=3, act="RELU",
                        norm=_norm(norm, channels[0]))
        ]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers.append(ResidualUnit(spatial_dims, c_in, c_out, strides=2, kernel_size=3, subunits=2,
                                       act="RELU", norm=_norm(norm, c_out)))
        pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        trunk = nn.Sequential(*layers, pool, nn.Flatten(1))
        head = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(channels[-1], num_classes))
    args = dict(kind="classifier", spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                dropout=dropout, seed=seed, channels=list(channels), norm=norm)
    return TrunkHeadNet(trunk, head, args)


#: the segmenter's default UNet widths, 2D and 3D. 3D used (8, 16, 32, 64) until session 21: on MSD hippocampus
#: (32x48x32, the loop's supervised round) these widths gave test Dice 0.826 +- 0.001 with 17 labelled volumes
#: (3 seeds) against 0.817 +- 0.004, and 0.858 against 0.851 with all 169, at about the same training time on
#: 2 CPU cores (benchmarks/active_learning/hippocampus_semi/probes/)
SEGMENTER_CHANNELS = (16, 32, 64, 128)


def build_segmenter(spatial_dims: int, in_channels: int, num_classes: int, *, dropout: float = 0.2,
                    seed: int = 0, channels: tuple[int, ...] | None = None, features: int = 16) -> TrunkHeadNet:
    """A MONAI ``UNet`` (residual units, InstanceNorm) whose last decoder block feeds a stochastic head.

    ``trunk``: ``UNet(out_channels=features)`` + PReLU -> per-voxel features, no dropout.
    ``head``: channel dropout (``Dropout2d``/``Dropout3d``, p=dropout) + 1x1 conv to ``num_classes`` logits.
    Widths :data:`SEGMENTER_CHANNELS` unless ``channels`` is given. Inputs must have spatial sizes divisible by
    2**(len(channels)-1) (8 with the defaults).
    """
    channels = _checked_channels(spatial_dims, in_channels, num_classes,
                                 SEGMENTER_CHANNELS if channels is None else channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet(spatial_dims, in_channels, features, channels=channels, strides=(2,) * (len(channels) - 1),
                    num_res_units=1, norm="INSTANCE", act="PRELU", dropout=0.0)
        trunk = nn.Sequential(unet, nn.PReLU())
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        head = nn.Sequential(_DROPOUT_ND[spatial_dims](p=dropout), conv(features, num_classes, kernel_size=1))
    args = dict(kind="segmenter", spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                dropout=dropout, seed=seed, channels=list(channels), features=features)
    return TrunkHeadNet(trunk, head, args)


def feature_width(build_args: dict[str, Any]) -> int:
    """Channels of a network's trunk output (what its head and the embeddings see), from its ``build_args``."""
    if build_args["kind"] == "ensemble":
        return sum(feature_width(m) for m in build_args["members"])
    return int(build_args["features"]) if build_args["kind"] == "segmenter" else int(build_args["channels"][-1])


class ParallelTrunks(nn.Module):
    """An ensemble's trunks side by side: their features concatenated on the channel axis (what its head splits
    again, and what embeddings for core-set / BADGE / hybrid distances see)."""

    def __init__(self, trunks: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(trunks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([t(x) for t in self.members], dim=1)


class MeanProbabilityHead(nn.Module):
    """Each member's head on its own share of the features; the output is the log of the mean of their softmax
    probabilities, so ``softmax(output)`` is the ensemble's probability (what every medwb prediction takes) and
    MC dropout samples every member's head at once."""

    def __init__(self, heads: list[nn.Module], widths: list[int]) -> None:
        super().__init__()
        self.members = nn.ModuleList(heads)
        self.widths = [int(w) for w in widths]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        parts = torch.split(features, self.widths, dim=1)
        probs = torch.stack([torch.softmax(h(f), dim=1) for h, f in zip(self.members, parts)]).mean(0)
        return torch.log(probs.clamp_min(1e-12))


def build_ensemble(members: list[TrunkHeadNet]) -> TrunkHeadNet:
    """One network whose prediction is the mean probability of ``members`` (copied; same task, dimensions and
    classes), so every medwb consumer (scoring, MC dropout, embeddings, checkpoints, explanations) takes an
    ensemble of checkpoints as it takes one network. Its ``build_args`` are the first member's with
    ``kind="ensemble"`` and ``members`` (every member's), so checkpoints rebuild it with :func:`build_from_args`.
    Measured as a round's model (supervised + FixMatch candidates): no better than FixMatch alone inside the loop
    (benchmarks/active_learning/pneumonia_ensemble/), so rounds do not use it."""
    if len(members) < 2:
        raise DataError(None, f"an ensemble of {len(members)} network(s)", "pass two or more networks")
    first = members[0].build_args
    for m in members[1:]:
        if any(m.build_args.get(k) != first.get(k) for k in ("spatial_dims", "in_channels", "num_classes")):
            raise DataError(None, "ensemble members differ in dimensions, input channels or classes",
                            "combine networks built for the same dataset")
    args = {**first, "kind": "ensemble", "members": [dict(m.build_args) for m in members]}
    trunk = ParallelTrunks([copy.deepcopy(m.trunk) for m in members])
    head = MeanProbabilityHead([copy.deepcopy(m.head) for m in members],
                               [feature_width(m.build_args) for m in members])
    return TrunkHeadNet(trunk, head, args)


def build_from_args(build_args: dict[str, Any]) -> TrunkHeadNet:
    """Rebuild a network from its ``build_args`` (as stored in checkpoints)."""
    a = dict(build_args)
    kind = a.pop("kind")
    if kind == "ensemble":
        return build_ensemble([build_from_args(m) for m in a["members"]])
    if "channels" in a and a["channels"] is not None:
        a["channels"] = tuple(a["channels"])
    fn = {"classifier": build_classifier, "segmenter": build_segmenter}.get(kind)
    if fn is None:
        raise DataError(None, f"unknown network kind {kind!r} in checkpoint", "use 'classifier' or 'segmenter'")
    sd, ic, nc = a.pop("spatial_dims"), a.pop("in_channels"), a.pop("num_classes")
    return fn(sd, ic, nc, **a)




def num_classes_of(dataset: Dataset) -> int:
    """Output channels for a dataset: its largest class value + 1, at least 2 (binary tasks keep two logits)."""
    return max(2, max(int(k) for k in dataset.classes) + 1)


def build_for_dataset(dataset: Dataset, seed: int = 0) -> TrunkHeadNet:
    """The default network for a dataset: :func:`build_classifier` or :func:`build_segmenter` with its
    dimensionality, channel count (cohort column ``channels``, else 1) and :func:`num_classes_of`."""
    c = int(dataset.cohort["channels"].dropna().iloc[0]) if "channels" in dataset.cohort else 1
    build = build_classifier if dataset.task == "classification" else build_segmenter
    return build(dataset.ndim, c, num_classes_of(dataset), seed=seed)
