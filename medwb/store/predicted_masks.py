"""The model's predicted masks of a segmentation round's proposed cases, kept in the study with their provenance.

Why in the store: a reader's page in the review app (``medwb review``) runs in its own kernel and loads no model;
the ``proposals`` table holds a class per case, so a segmentation reader's editor used to start from an empty
mask. When the loop proposes a segmentation round it writes each proposed case's predicted mask here
(:func:`medwb.al.prelabels.save_round_proposals`), and the reader's region-click editor starts from it
(:class:`medwb.ui.widgets.reader.LeasedCases`). Saving it unchanged stores it as the reader's label, source
``human`` (an accepted pre-label); an edited one is ``corrected`` (docs/store.md, "Provenance rules").

With the mask the loop also stores the model's voxel-wise uncertainty (MC-dropout predictive entropy, nats) when
it has one: a float16 file (``maps/uncertainty/``, :meth:`~medwb.store.layout.StudyLayout.uncertainty_map`), which
the reader's page draws beside the case
and cuts the editor's edge bands with (:func:`medwb.al.regions.with_edge_bands`), as the notebook's review does.

The file is written with the store's mask writer (:func:`medwb.store.masks.save_npy`: atomic, encrypted in an
encrypted study) under ``masks/prelabels/`` (:meth:`medwb.store.layout.StudyLayout.predicted_mask`), in the
smallest integer type that holds the classes (a 3D or large 2D mask in int64 is 8 bytes a voxel, and the loop
writes one per proposed case); it reads back as int64 like every mask. The ``predicted_masks`` row says which
round proposed the case and which registered model predicted the mask.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medwb.errors import DataError, StoreError
from medwb.store.masks import check_mask_array, read_mask, save_npy
from medwb.store.values import now

if TYPE_CHECKING:
    from pathlib import Path

    from medwb.store.study import Study

COLUMNS = ["round", "case_id", "mask_path", "model_version", "producer", "created_at"]


def save_predicted_mask(study: Study, round: int, case_id: str, mask: np.ndarray, *, model_version: str | None = None,
                        producer: str = "model", uncertainty: np.ndarray | None = None) -> Path:
    """Store ``mask`` (the image's own spatial shape, class values) as the predicted mask of ``case_id`` in round
    ``round`` by the registered model ``model_version``, replacing an earlier one of that round; returns its file.
    A label-free pre-label (before any model) names its ``producer`` ("structure:<kind>") and no model version.
    ``uncertainty``: the model's entropy map of the case (the mask's shape, finite), kept beside the mask in
    float16; without one an earlier map of the case and round is removed (it belonged to another mask)."""
    cid = str(case_id)
    study.check_case(cid)
    if producer == "model":
        if study.conn.execute("SELECT 1 FROM models WHERE version = ?", (str(model_version),)).fetchone() is None:
            raise StoreError(f"model version {model_version!r} is not registered in {study.folder}. Fix: pass the "
                             "version study.add_model returned for the model that predicted the mask")
    elif model_version is not None or not str(producer).startswith("structure:"):
        raise StoreError(f"producer {producer!r} with model version {model_version!r}. Fix: a model's mask gives its "
                         "registered version; a label-free one producer='structure:<kind>' and no version")
    m = check_mask_array(study, cid, mask)
    small = m.astype(np.promote_types(np.min_scalar_type(int(m.min(initial=0))), np.min_scalar_type(int(m.max(initial=0)))))
    u = None
    if uncertainty is not None:
        u = np.asarray(uncertainty, dtype=np.float64)
        if u.shape != m.shape or not np.isfinite(u).all():
            raise DataError(None, f"uncertainty map of case {cid!r} with shape {u.shape} (mask {m.shape}) or "
                            "non-finite values", "pass the model's entropy map at the mask's own size")
    path = study.layout.predicted_mask(round, cid)
    save_npy(path, small)  # the file first: a crash before the row leaves a file the next proposal overwrites
    umap = study.layout.uncertainty_map(round, cid)
    if u is not None:
        save_npy(umap, u.astype(np.float16))
    else:
        umap.unlink(missing_ok=True)
    with study.transaction() as c:
        c.execute("INSERT OR REPLACE INTO predicted_masks (round, case_id, mask_path, model_version, producer, "
                  "created_at) VALUES (?,?,?,?,?,?)", (int(round), cid, study.rel(path),
                                                        None if model_version is None else str(model_version),
                                                        str(producer), now()))
    return path


def predicted_masks(study: Study, round: int | None = None) -> pd.DataFrame:
    """The stored predicted masks (of ``round``, or all): round, case_id, mask_path (absolute), model_version
    (None for a label-free pre-label), producer ("model" or "structure:<kind>"), created_at."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM predicted_masks"
    df = study.query(sql + ("" if round is None else " WHERE round = ?") + " ORDER BY round, case_id",
                     () if round is None else (int(round),))
    df["mask_path"] = [str(study.path(p)) for p in df["mask_path"]]
    return df.reindex(columns=COLUMNS)


def predicted_mask(study: Study, round: int, case_id: str) -> np.ndarray | None:
    """The predicted mask of ``case_id`` in round ``round`` (int64, spatial), None when none was stored (a round
    before any model, a study made before masks were stored, a classification study)."""
    row = study.conn.execute("SELECT mask_path FROM predicted_masks WHERE round = ? AND case_id = ?",
                             (int(round), str(case_id))).fetchone()
    if row is None:
        return None
    p = study.path(row[0])
    if p is None or not p.is_file():
        raise DataError(p, f"the model's predicted mask of case {case_id!r} in round {round} is missing",
                        "restore the study's masks folder from a backup, or let the researcher propose the round "
                        "again (loop.propose() writes the missing masks)")
    return read_mask(p)


def predicted_uncertainty(study: Study, round: int, case_id: str) -> np.ndarray | None:
    """The uncertainty map (float32, the mask's shape) stored with the predicted mask of ``case_id`` in round
    ``round``; None when none was stored (no mask, a label-free pre-label, a study made before maps were kept)."""
    from medwb.store.class_evidence import read_map

    row = study.conn.execute("SELECT 1 FROM predicted_masks WHERE round = ? AND case_id = ?",
                             (int(round), str(case_id))).fetchone()
    path = study.layout.uncertainty_map(round, str(case_id))
    if row is None or not path.is_file():
        return None
    return read_map(path, "uncertainty map")
