"""Who answers for a proposed case, and the one place the active-learning code writes a label.

An oracle is anything that labels one case at a time: a person through the review widget, a mask edited in 3D
Slicer, or :func:`simulated_oracle` (the dataset's ground truth, for simulation and tests). Every label the loop,
the auto-labeller and the review widget write goes through :func:`record_label`, so the naming of mask files
and the provenance fields follow one rule.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from medwb.errors import DataError

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset
    from medwb.store import Study


@dataclass
class LabelAnswer:
    """One annotator's answer for one case (what the store records, plus provenance).

    Segmentation answers carry either a ``mask`` array (saved into the study's ``masks/``) or the path of a mask
    file already written (e.g. a NIfTI edited in 3D Slicer / ITK-SNAP).
    """

    value: int | None = None  # class index (classification)
    mask: np.ndarray | None = None  # label mask (segmentation), spatial shape of the image
    mask_path: str | None = None  # or an existing mask file
    source: str = "human"  # "human" | "auto" | "corrected"
    annotator: str = "annotator"
    seconds: float | None = None
    note: str = ""  # why (e.g. "accepted pre-label 1"), kept with the label


class Oracle(Protocol):
    """Anything that labels one proposed case: ``oracle(case_id, prelabel) -> LabelAnswer | None`` (None = skip)."""

    def __call__(self, case_id: str, prelabel: dict[str, Any] | None) -> LabelAnswer | None: ...


def record_label(study: Study, case_id: str, answer: LabelAnswer, *, round: int | None = None,
                 model_version: str | None = None) -> int:
    """Write one label (and its mask, if the answer carries an array) in the study; returns the label id.

    The single label writer of the active-learning code (loop, auto-labels, review widget): the store names and
    saves the mask itself (``Study.add_label(mask=...)``, one naming rule, unique per label).
    """
    return study.add_label(
        str(case_id), value=answer.value, mask=answer.mask, mask_path=answer.mask_path, source=answer.source,
        annotator=answer.annotator, seconds=answer.seconds, round=round, model_version=model_version,
        note=answer.note,
    )


def ground_truth(dataset: Dataset) -> Callable[[str], Any]:
    """``truth(case_id)``: the dataset's class (int) or mask (channel-first array) of a case, for a simulated
    reviewer (:meth:`medwb.ui.widgets.review.ReviewQueue.run_oracle`)."""
    labels = dataset.cohort.set_index("case_id")["label"]
    if dataset.task == "classification":
        return lambda c: int(labels[c])
    return lambda c: dataset.load_mask(c)


def simulated_oracle(dataset: Dataset, *, annotator: str = "simulated-oracle") -> Oracle:
    """An annotator that answers with the dataset's ground truth (simulation, tests, notebook under papermill).

    Provenance is what a person would produce: ``corrected`` when a class pre-label was shown and was wrong,
    ``human`` otherwise (accepting a right pre-label is still a human decision).
    """
    labels = dataset.cohort.set_index("case_id")["label"]

    def answer(case_id: str, prelabel: dict[str, Any] | None) -> LabelAnswer:
        cid = str(case_id)
        if dataset.task == "classification":
            y = labels.get(cid, pd.NA)
            if pd.isna(y):
                raise DataError(dataset.name, f"case {cid} has no ground-truth label for the simulated oracle",
                                "simulate only on splits that carry labels (train/val/test)")
            value = int(y)
            pre = None if prelabel is None else prelabel.get("value")
            source = "corrected" if pre is not None and int(pre) != value else "human"
            return LabelAnswer(value=value, source=source, annotator=annotator, seconds=0.0)
        mask = dataset.load_mask(cid)
        if mask is None:
            raise DataError(dataset.name, f"case {cid} has no ground-truth mask for the simulated oracle",
                            "simulate only on cases that have a mask")
        return LabelAnswer(mask=np.asarray(mask)[0], source="human", annotator=annotator, seconds=0.0)

    return answer


def label_targets(labels: pd.DataFrame, task: str, spatial: tuple[int, ...]) -> np.ndarray:
    """Training targets from stored label rows (the reverse of :func:`record_label`): class values, or the
    mask files resized (nearest) to the training grid ``spatial`` as (N, 1, *spatial)."""
    if task == "classification":
        return labels["value"].astype(int).to_numpy()
    from medwb.data.dataset import resize
    from medwb.store import read_mask

    masks = []
    for mp in labels["mask_path"]:
        m = read_mask(mp)
        while m.ndim > len(spatial):
            m = m[0]
        m = m[None]
        if tuple(m.shape[1:]) != spatial:
            m = resize(m, spatial, "mask")
        masks.append(np.asarray(m, dtype=np.int64))
    return np.stack(masks)
