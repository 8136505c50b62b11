"""The model's evidence on a classification round's proposed cases, kept in the study with its provenance: the
class probabilities of MC-dropout passes (mean and spread per class) and a saliency map (where the model looked).

Why in the store: a reader's page in the review app (``medwb review``) runs in its own kernel and loads no model;
the ``proposals`` table holds one class and one confidence per case, so a reader could not see how sure the model
was between the classes, nor what it looked at. When the loop proposes a classification round it writes them here
(:func:`medwb.al.class_evidence.save_round_class_evidence`), and the reader's page draws them
(:mod:`medwb.ui.widgets.class_evidence`).

One ``class_evidence`` row per (round, case): ``mean`` and ``std`` are JSON lists indexed by class value (the
model's output index), ``passes`` the MC-dropout passes, ``map_path`` the map file (NULL: no map, e.g. a network
without a convolution), ``map_class`` the class the map explains (the proposed class) and the registered model
version. The map is written with the store's atomic
``.npy`` writer (:func:`medwb.store.masks.save_npy`: encrypted in an encrypted study) under ``maps/saliency/``
(:meth:`medwb.store.layout.StudyLayout.saliency_map`) as float16 (a map scaled to [0, 1] needs no more), and reads
back as float32.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medwb.errors import DataError, MedwbError, StoreError
from medwb.store import files
from medwb.store.masks import save_npy
from medwb.store.values import now

if TYPE_CHECKING:
    from pathlib import Path

    from medwb.store.study import Study

COLUMNS = ["round", "case_id", "mean", "std", "passes", "map_path", "map_class", "model_version", "created_at"]


@dataclass(frozen=True)
class ClassEvidence:
    """One proposed case's stored evidence: ``mean`` / ``std`` (K,) probabilities by class value over ``passes``
    MC-dropout passes, the saliency ``map`` (the image's spatial shape; None when none was stored) of class
    ``map_class``, and the ``round`` and ``model_version`` that proposed it."""

    round: int
    mean: np.ndarray
    std: np.ndarray
    passes: int
    map: np.ndarray | None
    map_class: int | None
    model_version: str


def check_probabilities(case_id: str, mean: np.ndarray, std: np.ndarray) -> tuple[list[float], list[float]]:
    """``mean`` and ``std`` as lists after checking they are one finite probability (and spread) per class."""
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if m.ndim != 1 or m.shape != s.shape or len(m) < 2:
        raise DataError(None, f"class probabilities of {case_id!r} have shapes {m.shape} and {s.shape}",
                        "pass the mean and the standard deviation over MC passes, one value per class each")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and m.min() >= 0 and m.max() <= 1 and s.min() >= 0):
        raise DataError(None, f"class probabilities of {case_id!r} are not probabilities ({m.tolist()}, "
                        f"spread {s.tolist()})", "pass softmax outputs (mean over MC passes) and their std")
    return [float(v) for v in m], [float(v) for v in s]


def save_class_evidence(study: Study, round: int, case_id: str, mean: np.ndarray, std: np.ndarray, *,
                        passes: int, model_version: str, saliency: np.ndarray | None = None,
                        saliency_class: int | None = None) -> Path | None:
    """Store the class probabilities (``mean``, ``std`` by class value over ``passes`` MC-dropout passes) and the
    saliency map (the image's spatial shape, or None) of class ``saliency_class`` of ``case_id`` proposed in round
    ``round`` by the registered model ``model_version``, replacing an earlier one of that round; returns the map's
    file (None without one)."""
    cid = str(case_id)
    study.check_case(cid)
    if study.conn.execute("SELECT 1 FROM models WHERE version = ?", (str(model_version),)).fetchone() is None:
        raise StoreError(f"model version {model_version!r} is not registered in {study.folder}. Fix: pass the "
                         "version study.add_model returned for the model that made the probabilities")
    m, s = check_probabilities(cid, mean, std)
    if len(m) <= max(study.classes):
        raise DataError(None, f"{len(m)} class probabilities of {cid!r} for the classes {study.classes}",
                        "pass one probability per model output (the output index is the class value)")
    if int(passes) < 1:
        raise DataError(None, f"passes={passes} for {cid!r}", "pass the number of MC-dropout passes (>= 1)")
    path = None
    if saliency is not None:
        if saliency_class is None:
            raise DataError(None, f"saliency map of {cid!r} without its class", "pass saliency_class= (the class the "
                            "map explains, e.g. the proposed class)")
        study.check_value(saliency_class)
        a = np.asarray(saliency, dtype=np.float32)
        if a.ndim not in (2, 3) or not np.all(np.isfinite(a)):
            raise DataError(None, f"saliency map of {cid!r} has shape {a.shape} or non-finite values",
                            "pass one finite map of the image's spatial shape (H, W[, D])")
        path = study.layout.saliency_map(round, cid)
        save_npy(path, a.astype(np.float16))  # the file first: a crash before the row leaves a file rewritten later
    with study.transaction() as c:
        c.execute("INSERT OR REPLACE INTO class_evidence (round, case_id, mean, std, passes, map_path, map_class, "
                  "model_version, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                  (int(round), cid, json.dumps(m), json.dumps(s), int(passes),
                   None if path is None else study.rel(path), None if path is None else int(saliency_class),
                   str(model_version), now()))
    return path


def class_evidence(study: Study, round: int | None = None) -> pd.DataFrame:
    """The stored evidence rows (of ``round``, or all): round, case_id, mean, std (lists by class value), passes,
    map_path (absolute, None without a map), map_class, model_version, created_at."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM class_evidence"
    df = study.query(sql + ("" if round is None else " WHERE round = ?") + " ORDER BY round, case_id",
                     () if round is None else (int(round),))
    for col in ("mean", "std"):
        df[col] = [json.loads(v) for v in df[col]]
    df["map_path"] = [None if p is None else str(study.path(p)) for p in df["map_path"]]
    return df.reindex(columns=COLUMNS)


def read_map(path: Path, what: str = "saliency map") -> np.ndarray:
    """A stored map (``what``: saliency, uncertainty) as float32 (decrypted in memory in an encrypted study);
    DataError naming the file."""
    try:
        return np.load(io.BytesIO(files.read_bytes(path)), allow_pickle=False).astype(np.float32)
    except MedwbError:
        raise
    except Exception as e:  # a damaged file
        raise DataError(path, f"cannot read the {what} ({type(e).__name__}: {e})",
                        "let the researcher propose the round again (loop.propose() rewrites it)") from e


def case_class_evidence(study: Study, round: int, case_id: str) -> ClassEvidence | None:
    """The stored evidence of ``case_id`` in round ``round``; None when none was stored (a round before any model,
    a study made before evidence was stored, a segmentation study). A missing map file is a DataError naming it."""
    row = study.conn.execute("SELECT mean, std, passes, map_path, map_class, model_version FROM class_evidence "
                             "WHERE round = ? AND case_id = ?", (int(round), str(case_id))).fetchone()
    if row is None:
        return None
    mean, std, passes, rel, cls, version = row
    amap = None
    if rel is not None:
        p = study.path(rel)
        if p is None or not p.is_file():
            raise DataError(p, f"the model's saliency map of case {case_id!r} in round {round} is missing",
                            "restore the study's maps folder from a backup, or let the researcher propose the round "
                            "again (loop.propose() writes the missing maps)")
        amap = read_map(p)
    return ClassEvidence(int(round), np.asarray(json.loads(mean), dtype=np.float64),
                         np.asarray(json.loads(std), dtype=np.float64), int(passes), amap,
                         None if cls is None else int(cls), str(version))
