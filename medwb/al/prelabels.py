"""Segmentation pre-labels at the image's own size: the model's mask, its voxel uncertainty, and NIfTI files
for editing in 3D Slicer / ITK-SNAP (re-imported with ``study.import_masks``).

Why apart from the loop: the loop trains at one input size, a person edits at the image's own size; these
functions do that conversion once, for the review widget, the NIfTI export and the auto-labels alike. When the
loop proposes a segmentation round, :func:`save_round_proposals` stores each proposed case's predicted mask in the
study (``Study.save_predicted_mask``), so a reader's page in ``medwb review``, which loads no model, starts its
mask editor from it; in a classification round it stores each proposed case's class probabilities and saliency
map (:mod:`medwb.al.class_evidence`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medwb.al.class_evidence import save_round_class_evidence
from medwb.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from torch import nn

    from medwb.al.loop import ActiveLearningLoop
    from medwb.data.dataset import Dataset


def predict_mask(model: nn.Module, x: np.ndarray, native: tuple[int, ...]) -> np.ndarray:
    """The model's predicted label mask of one input ``x`` (1, C, *size) at ``native`` size: its class
    probabilities resized (linear) and the most likely class taken there. Taking it at the model's size and
    resizing the label map gives blockier edges (a UNet's hippocampus pre-labels on 40 volumes: Dice 0.791 with
    the truth this way, 0.706 by a nearest resize of the label map)."""
    from medwb.data.dataset import resize
    from medwb.models import predict_proba

    prob = predict_proba(model, x)[0]  # (classes, *size)
    if tuple(native) != prob.shape[1:]:
        prob = np.asarray(resize(prob, native, "image"))
    return prob.argmax(0).astype(np.int64)


def entropy_map(model: nn.Module, x: np.ndarray, native: tuple[int, ...], *, passes: int, seed: int) -> np.ndarray:
    """Voxel-wise predictive entropy of MC-dropout samples of one input ``x`` (1, C, *size), resized (linear)
    to ``native``: the uncertainty map beside a pre-label in the review widget."""
    from medwb.models.uncertainty import mc_uncertainty_maps
    from medwb.data.dataset import resize

    ent = mc_uncertainty_maps(model, x, passes=passes, seed=seed, kinds=("entropy",))["entropy"][0]
    return ent if ent.shape == tuple(native) else np.asarray(resize(ent[None], native, "image"))[0]


def _case_view(loop: ActiveLearningLoop, case_id: str) -> tuple[nn.Module, np.ndarray, tuple[int, ...]] | None:
    """(current model, the case's input at the loop's size, the image's own spatial shape); None before any
    model and for classification."""
    model, _ = loop.current_model()
    if model is None or loop.ds.task != "segmentation":
        return None
    return model, loop.data.rows([str(case_id)]), loop.ds.spatial_shape(str(case_id))


def prelabel_mask(loop: ActiveLearningLoop, case_id: str) -> np.ndarray | None:
    """The loop's current model's mask for a pool case at the image's own size (segmentation pre-label;
    None before any model and for classification)."""
    view = _case_view(loop, case_id)
    return None if view is None else predict_mask(*view)


def uncertainty_map(loop: ActiveLearningLoop, case_id: str) -> np.ndarray | None:
    """MC-dropout entropy map of a pool case at the image's own size (the loop's ``mc_passes`` and seed), shown
    beside the pre-label in the review widget; None before any model and for classification."""
    view = _case_view(loop, case_id)
    return None if view is None else entropy_map(*view, passes=loop.mc_passes, seed=loop.seed)


def prelabel_round(loop: ActiveLearningLoop, batch: pd.DataFrame) -> pd.DataFrame:
    """Pre-label the open round's ``batch`` (:func:`medwb.al.autolabel.prelabel_batch`; its auto-label stats kept
    in the study, so a resumed round reuses them) and store it for the readers' pages (:func:`save_round_proposals`).

    A classification batch gets one set of MC-dropout passes: it serves both the auto-accept threshold's match of
    the batch's difficulty and the class probabilities stored for readers (same passes and seed as before, so
    the numbers are those either would compute)."""
    from medwb.al.autolabel import prelabel_batch
    from medwb.models.uncertainty import mc_dropout_proba

    cids = [str(c) for c in batch["case_id"]]
    done = set(loop.labeled()["case_id"].astype(str))
    X_lab = loop.data.rows([c for c in loop.data.pool_ids() if c in done])
    X_batch = loop.data.rows(cids)
    model = loop.current_model()[0]
    mc = (mc_dropout_proba(model, X_batch, passes=loop.mc_passes, seed=loop.seed)
          if model is not None and loop.ds.task == "classification" and len(cids) else None)
    batch, stats = prelabel_batch(model, batch, X_batch, loop.data.truth(cids), *loop.arrays("val")[:2], X_lab,
                                  task=loop.ds.task,
                                  target_error=loop.autolabel_target_error, seed=loop.seed, passes=loop.mc_passes,
                                  mc_batch=mc)
    loop.autolabel_stats = loop.study.save_round_autolabel(loop.round, stats)
    save_round_proposals(loop, batch, mc_batch=mc)
    return batch


def save_round_proposals(loop: ActiveLearningLoop, batch: pd.DataFrame, *,
                         mc_batch: np.ndarray | None = None) -> None:
    """Store the open round's pre-labelled ``batch`` for the readers' pages: its proposals (class, confidence,
    model version) and, in a round with a model, each case's predicted mask at the image's own size with its
    MC-dropout entropy map (segmentation, :mod:`medwb.store.predicted_masks`) or its MC-dropout class probabilities
    and saliency map (classification, :func:`medwb.al.class_evidence.save_round_class_evidence`), with the round
    and model version. A reopened round keeps what it has (same model) and writes only the missing ones. ``mc_batch``: the batch's MC-dropout samples
    (T, N, K) when already computed (classification)."""
    study, number, version = loop.study, loop.round, loop.current_model()[1]
    study.save_proposals(number, batch["case_id"], batch["prelabel"], batch["confidence"], version)
    if version is None and number is not None and loop.prelabel is not None:
        return save_label_free_masks(loop, batch)
    if version is None or number is None:
        return
    if loop.ds.task == "classification":
        return save_round_class_evidence(loop, batch, mc_batch=mc_batch)
    have = study.predicted_masks(number)
    kept = {c for c, p, v in zip(have["case_id"], have["mask_path"], have["model_version"])
            if v == version and Path(p).is_file()}
    for cid in [str(c) for c in batch["case_id"] if str(c) not in kept]:
        view = _case_view(loop, cid)  # the case read once for its mask and its entropy map
        if view is not None:  # with the entropy map the reader's page shows and cuts the edge bands by
            study.save_predicted_mask(number, cid, predict_mask(*view), model_version=version,
                                      uncertainty=entropy_map(*view, passes=loop.mc_passes, seed=loop.seed))


#: label-free pre-labels a loop can give its first round (name -> what it fits), before any model exists
LABEL_FREE = {"ellipse": "the filled best bright elliptical ring, e.g. a fetal skull (medwb.al.shape_prior)",
              "vessels": "the dark thin ridges, e.g. the vessels of a fundus photo (medwb.al.vessel_prior)"}


def label_free_mask(kind: str, image: np.ndarray, *, spacing: tuple[float, ...] | None = None,
                    random_state: int = 0) -> np.ndarray:
    """bool mask of one 2D image ((H,W) or (C,H,W)) at its own size: the label-free pre-label ``kind`` of
    :data:`LABEL_FREE` (every kind takes the same arguments; empty where it finds nothing)."""
    if kind == "ellipse":
        from medwb.al.shape_prior import ellipse_prelabel as fn
    elif kind == "vessels":
        from medwb.al.vessel_prior import vessel_prelabel as fn
    else:
        raise ConfigError(f"pre-label {kind!r} is unknown. Fix: choose one of {', '.join(LABEL_FREE)}")
    return fn(image, spacing=spacing, random_state=random_state)


def check_prelabel(kind: str, dataset: Dataset) -> str:
    """``kind`` when it is a known label-free pre-label and the dataset is 2D segmentation, else ConfigError."""
    if kind not in LABEL_FREE:
        raise ConfigError(f"pre-label {kind!r} is unknown. Fix: choose one of {', '.join(LABEL_FREE)}")
    if dataset.task != "segmentation" or dataset.ndim != 2:
        raise ConfigError(f"pre-label {kind!r} needs a 2D segmentation dataset; {dataset.name} is {dataset.ndim}D "
                          f"{dataset.task}. Fix: leave it out")
    return kind


def save_label_free_masks(loop: ActiveLearningLoop, batch: pd.DataFrame) -> None:
    """Before any model: each case's label-free pre-label (:func:`label_free_mask`, the loop's kind) stored as
    the round's predicted mask, producer ``structure:<kind>`` (its provenance, no model version), so a reader's page and
    :func:`proposed_mask` start from it. Cases that already have one keep it (a reopened round)."""
    from medwb.al.regions import spacing_of

    study, number, producer = loop.study, int(loop.round), f"structure:{loop.prelabel}"
    have = set(study.predicted_masks(number)["case_id"].astype(str))
    for cid in [str(c) for c in batch["case_id"] if str(c) not in have]:
        mask = label_free_mask(loop.prelabel, loop.ds.load_image(cid), spacing=spacing_of(loop.ds, cid),
                               random_state=loop.seed)
        study.save_predicted_mask(number, cid, mask.astype(np.int64), producer=producer)


def proposed_mask(loop: ActiveLearningLoop, case_id: str) -> np.ndarray | None:
    """The pre-label mask a reader starts from: the open round's stored predicted mask (what the app's readers
    see), else the loop's current model's (:func:`prelabel_mask`); None before any model."""
    stored = None if loop.round is None else loop.study.predicted_mask(loop.round, str(case_id))
    return stored if stored is not None else prelabel_mask(loop, case_id)


def write_masks_nifti(dataset: Dataset, case_ids: Iterable[str], mask_of: Callable[[str], np.ndarray],
                      folder: str | Path) -> pd.DataFrame:
    """Write ``mask_of(case_id)`` as ``<case>.nii.gz`` (label intent) in each image's own grid and affine, with
    ``manifest.csv`` (file, case_id) beside them; returns the manifest."""
    import nibabel as nib

    from medwb.store import safe_name

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for cid in [str(c) for c in case_ids]:
        m = np.asarray(mask_of(cid))
        vol = m[..., None] if m.ndim == 2 else m
        img = nib.Nifti1Image(vol.astype(np.int16), np.asarray(dataset.affine(cid), dtype=float))
        img.header.set_intent("label")
        fname = f"{safe_name(cid)}.nii.gz"
        nib.save(img, str(folder / fname))
        rows.append({"file": fname, "case_id": cid})
    manifest = pd.DataFrame(rows, columns=["file", "case_id"])
    manifest.to_csv(folder / "manifest.csv", index=False)
    return manifest


def export_prelabels_nifti(loop: ActiveLearningLoop, case_ids: Iterable[str], folder: str | Path) -> pd.DataFrame:
    """Write the cases' pre-label masks (the loop's current model, empty before any model) as NIfTI for
    editing; re-import the edited folder with ``study.import_masks(folder, annotator)``."""
    ds = loop.ds
    if ds.task != "segmentation":
        raise StoreError("NIfTI mask export is for segmentation studies. Fix: label classes in the review widget")

    def mask_of(cid: str) -> np.ndarray:
        m = prelabel_mask(loop, cid)
        return np.zeros(ds.spatial_shape(cid), dtype=np.int64) if m is None else m

    return write_masks_nifti(ds, case_ids, mask_of, folder)


def export_round_nifti(loop: ActiveLearningLoop) -> tuple[Path, pd.DataFrame]:
    """Propose (or reopen) the round and export its waiting cases' pre-labels under the study's
    ``exports/round_<n>_prelabels``; returns (folder, manifest)."""
    batch = loop.propose()
    out = Path(loop.study.folder) / "exports" / f"round_{loop.round:03d}_prelabels"
    return out, export_prelabels_nifti(loop, batch["case_id"], out)


def write_truth_nifti(dataset: Dataset, manifest: pd.DataFrame, folder: str | Path) -> pd.DataFrame:
    """Stand-in for the external editor (papermill, tests): overwrite the exported files with the dataset's
    reference masks."""
    return write_masks_nifti(dataset, manifest["case_id"], lambda c: dataset.load_mask(c)[0], folder)
