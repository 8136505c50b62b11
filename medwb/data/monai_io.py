"""A medwb Dataset as MONAI data: item dicts and a Compose whose first step loads pixels through the dataset.

Why: npz entries, DICOM series and outline masks need no special MONAI reader, and every pixel MONAI sees went
through the same validation and scaling as ``Dataset.arrays``.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from monai.transforms import Compose

    from medwb.data.dataset import Dataset


def monai_items(ds: Dataset, split: str | None = None) -> list[dict[str, Any]]:
    """MONAI-style data dicts ``{"image": source ref, "label": int | mask path | None, "case_id": ...}``.

    Use with ``monai.data.Dataset(ds.items("train"), transform=ds.transform(size=...))``.
    """
    c = ds.records  # no pixel statistics needed (ds.cohort would compute them)
    r = c if split is None else c[c["split"] == split]
    out = []
    for _, row in r.iterrows():
        lab = row["mask"] if ds.task == "segmentation" else (None if pd.isna(row["label"]) else int(row["label"]))
        out.append({"image": row["source"], "label": lab, "case_id": row["case_id"]})
    return out


def monai_transform(ds: Dataset, size: Sequence[int] | None = None) -> Compose:
    """MONAI Compose: load via the dataset, scale to [0,1], optional resize, to tensors."""
    from monai.transforms import Compose, EnsureTyped, Resized

    from medwb.data.dataset import MASK_RESIZE_MODE

    steps: list[Any] = [LoadCased(ds)]
    keys = ["image", "label"] if ds.task == "segmentation" else ["image"]
    if size is not None:
        modes = ["bilinear" if ds.ndim == 2 else "trilinear", MASK_RESIZE_MODE][: len(keys)]
        steps.append(Resized(keys=keys, spatial_size=tuple(size), mode=modes, allow_missing_keys=True))
    steps.append(EnsureTyped(keys=keys, allow_missing_keys=True))
    return Compose(steps)


class LoadCased:
    """MONAI-style dict transform: replace ``image`` (and a segmentation ``label``) by arrays read through
    a medwb Dataset, scaled to [0,1] as in ``Dataset.arrays``."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self._channels: int | None = ds.common_channels() if ds.may_mix_channels else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d["image"] = self.ds.to_channels(self.ds.scale(self.ds.load_raw(d["case_id"])), self._channels)
        if self.ds.task == "segmentation":
            m = self.ds.load_mask(d["case_id"])
            if m is None:
                d.pop("label", None)
            else:
                d["label"] = m
        elif d.get("label") is not None:
            d["label"] = np.int64(d["label"])
        return d


# ---- helpers shared by readers --------------------------------------------------------------------------
