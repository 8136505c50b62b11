"""Label masks: reading any mask file, the checks a mask passes before it is stored, and NIfTI export/import of
the current masks for editing in 3D Slicer / ITK-SNAP.

Masks are stored as int64 ``.npy`` under the study's ``masks/`` (names from :mod:`medwb.store.layout`). New code
passes the array to ``Study.add_label(mask=...)``; :func:`save_mask` remains for callers that still save first.
In an encrypted study masks are written and read through :mod:`medwb.store.files` (AES-GCM), and the NIfTI
export's file names are pseudonyms whose manifest is encrypted.
"""
from __future__ import annotations

import gzip
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medwb.data.npyheader import check_array_size, check_npy_file, check_npz_member, read_npy_header
from medwb.errors import DataError, MedwbError, StoreError
from medwb.store import files
from medwb.store.artifacts import register_artifact
from medwb.store.layout import NIFTI_MANIFEST, safe_name

if TYPE_CHECKING:
    from medwb.privacy.crypto import Key
    from medwb.store.study import Study


def read_mask(path: str | Path, *, key: Key | None = None) -> np.ndarray:
    """Read a mask file (.npy, .npz first array, .nii/.nii.gz, .png/.jpg) as an int64 array, as stored; an
    encrypted one is decrypted in memory with ``key``, else the key of the study that holds it."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "mask file not found", "check the path, or re-export the masks from the study")
    name = p.name.lower()
    try:
        with open(p, "rb") as f:
            sealed = files.is_encrypted(f.read(16))
        arr = _read_decrypted(p, name, key) if sealed else _read_plain(p, name)
    except MedwbError:
        raise
    except Exception as e:  # corrupt file of a known type
        raise DataError(p, f"cannot read mask ({type(e).__name__}: {e})", "re-save the mask as .nii.gz or .npy") from e
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(p, "mask holds non-integer values", "save label values as integers (0 = background)")
    elif arr.dtype.kind not in "iub":
        raise DataError(p, f"mask has dtype {arr.dtype}", "save label values as integers (0 = background)")
    return arr.astype(np.int64)


def _read_plain(p: Path, name: str) -> np.ndarray:
    if name.endswith(".npy"):
        check_npy_file(p)  # a forged header would make np.load allocate its claimed size first
        return np.load(p, allow_pickle=False)
    if name.endswith(".npz"):
        with np.load(p, allow_pickle=False) as z:
            check_npz_member(p, z.files[0])
            return z[z.files[0]]
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(str(p)).dataobj)
    if name.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")):
        from PIL import Image

        with Image.open(p) as im:
            return np.asarray(im.convert("L"))
    raise DataError(p, "unknown mask file type", "use .npy, .nii.gz or .png")


def _read_decrypted(p: Path, name: str, key: Key | None) -> np.ndarray:
    """An encrypted mask (.npy, or a NIfTI of an encrypted export), decrypted and parsed in memory only."""
    data = files.read_bytes(p, key=key)
    if name.endswith(".npy"):
        buf = io.BytesIO(data)
        shape, dtype = read_npy_header(buf)
        check_array_size(p, "the array", shape, dtype, stored_bytes=len(data) - buf.tell())
        return np.load(io.BytesIO(data), allow_pickle=False)
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(data) if name.endswith(".gz") else data).dataobj)
    raise DataError(p, "an encrypted file of a type medwb never encrypts", "pass the .npy or .nii.gz medwb wrote")


def save_npy(path: Path, arr: np.ndarray) -> None:
    """Write an array as .npy atomically (temporary file, fsync, rename): a crash leaves the old file or the new.
    Encrypted when ``path`` is inside an encrypted study (:mod:`medwb.store.files`)."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    files.write_bytes(path, buf.getvalue())


def check_mask_array(study: Study, case_id: str, mask: np.ndarray) -> np.ndarray:
    """The mask as int64 after checking it holds class values only (not probabilities, no unknown class)."""
    m = np.asarray(mask)
    if m.dtype.kind == "f" and not np.all(m == np.round(m)):
        raise DataError(None, f"mask for {case_id!r} has non-integer values", "pass label values (argmax), not probabilities")
    m = m.astype(np.int64)
    bad = sorted(set(np.unique(m).tolist()) - set(study.classes))
    if bad:
        raise DataError(None, f"mask for {case_id!r} holds values {bad} outside the classes {study.classes}", "map them to class values")
    return m


def save_mask(study: Study, case_id: str, mask: np.ndarray, *, tag: str) -> Path:
    """Write a label mask into ``masks/`` (int, .npy, named ``<case>__<tag>.npy``) and return its path, for
    add_label(mask_path=...). Prefer ``add_label(mask=...)``: the store then names the file itself, one per label,
    so two labels of one annotator on one case never overwrite each other."""
    study.check_case(str(case_id))
    m = check_mask_array(study, case_id, mask)
    out = study.layout.tagged_mask(case_id, tag)
    save_npy(out, m)
    return out


def spatial(mask: np.ndarray, ndim: int | None) -> np.ndarray:
    """Drop a leading channel axis and trailing singleton axes so masks from any tool compare to 'HxW[xD]'."""
    m = np.asarray(mask)
    while m.ndim > (ndim or 2) and m.shape[0] == 1:
        m = m[0]
    while m.ndim > (ndim or 2) and m.shape[-1] == 1:
        m = m[..., 0]
    return m


def parse_shape(s: Any) -> tuple[int, ...] | None:
    """A cohort ``shape`` cell ('28x28', '(1, 28, 28)', a list) as a tuple, None when absent or unreadable."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return None
    if isinstance(s, (list, tuple)):
        return tuple(int(x) for x in s)
    parts = re.split(r"[x,\s()]+", str(s).strip())
    try:
        return tuple(int(x) for x in parts if x)
    except ValueError:
        return None


def study_ndim(study: Study) -> int | None:
    """The cases' spatial dimensionality (cohort column ``ndim`` of the first case), None when unknown."""
    row = study.conn.execute("SELECT meta FROM cases LIMIT 1").fetchone()
    if row is None:
        return None
    nd = json.loads(row[0]).get("ndim")
    return int(nd) if nd is not None else None


def export_masks_nifti(
    study: Study, folder: str | Path, affine_lookup: Callable[[str], np.ndarray] | None = None,
    case_ids: Iterable[str] | None = None, *, plaintext: bool = False,
) -> pd.DataFrame:
    """Write the current mask labels as ``<case>.nii.gz`` (spatial axes only; 2D masks as HxWx1) for editing in
    3D Slicer / ITK-SNAP, plus ``manifest.csv`` (file -> case_id, label_id, source). ``affine_lookup(case_id)``
    gives the 4x4 affine (e.g. ``ds.affine``), identity otherwise. Returns the manifest.

    An encrypted study names the files by keyed pseudonyms and always encrypts the manifest (it maps them back
    to case ids); the NIfTI files are encrypted too unless ``plaintext=True`` (the user's choice to let the masks
    leave the protected zone for an editor; inside the study folder they are encrypted regardless)."""
    import nibabel as nib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labs = study.labels()
    labs = labs[labs["mask_path"].notna()]
    if case_ids is not None:
        labs = labs[labs["case_id"].isin([str(c) for c in case_ids])]
    ndim = study_ndim(study)
    image_key = None if plaintext else study.key
    rows = []
    for rec in labs.to_dict("records"):
        m = spatial(read_mask(rec["mask_path"]), ndim)
        if m.ndim == 2:
            m = m[..., None]
        aff = np.eye(4) if affine_lookup is None else np.asarray(affine_lookup(rec["case_id"]), dtype=float)
        if aff.shape != (4, 4):
            raise DataError(None, f"affine for {rec['case_id']!r} has shape {aff.shape}", "affine_lookup must return a 4x4 matrix")
        fname = study.layout.export_mask_name(rec["case_id"])
        img = nib.Nifti1Image(m.astype(np.int16), aff)
        img.header.set_intent("label")
        files.write_bytes(folder / fname, gzip.compress(img.to_bytes(), compresslevel=6), key=image_key)
        rows.append({"file": fname, "case_id": rec["case_id"], "label_id": rec["label_id"], "source": rec["source"],
                     "annotator": rec["annotator"]})
    manifest = pd.DataFrame(rows, columns=["file", "case_id", "label_id", "source", "annotator"])
    files.write_bytes(folder / NIFTI_MANIFEST, manifest.to_csv(index=False).encode(), key=study.key)
    register_artifact(study, folder, "export")  # outside the study: purge must find it
    return manifest


def import_masks(
    study: Study,
    folder: str | Path,
    annotator: str,
    *,
    source: str | None = None,
    seconds: float | None = None,
    shape_lookup: Callable[[str], Sequence[int]] | None = None,
) -> pd.DataFrame:
    """Import edited masks (.nii/.nii.gz/.npy/.png) from a folder, matched to cases by ``manifest.csv`` or by
    file name. Each mask is checked against the case image's shape (cases' ``shape`` column, or
    ``shape_lookup(case_id)``) and its values against the classes; everything is validated before anything is
    written, then written in one transaction through the label writer. ``source=None`` decides per case:
    ``corrected`` if the mask differs from the model's pre-label it replaces, else ``human``. Returns
    (case_id, label_id, source, changed)."""
    from medwb.store.labels import SOURCES, add_labels  # here: labels.py imports this module at its top

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "mask folder not found", "pass the folder the edited masks were saved to")
    if source is not None and source not in SOURCES:
        raise StoreError(f"label source {source!r} is not one of {SOURCES}. Fix: pick one of them, or None to decide per case")
    cases = study.cases().set_index("case_id")
    by_safe = {safe_name(c): c for c in cases.index} | {study.layout.case_name(c): c for c in cases.index}
    manifest: dict[str, str] = {}
    if (folder / NIFTI_MANIFEST).is_file():
        mf = pd.read_csv(io.BytesIO(files.read_bytes(folder / NIFTI_MANIFEST, key=study.key)), dtype=str)
        manifest = dict(zip(mf["file"], mf["case_id"]))
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name.lower().endswith((".nii", ".nii.gz", ".npy", ".png")))
    if not found:
        raise DataError(folder, "no mask files (.nii.gz, .nii, .npy, .png)", "save the edited masks into this folder")
    ndim = study_ndim(study)
    current = study.labels().set_index("case_id")
    todo = []
    for f in found:
        stem = re.sub(r"(\.nii\.gz|\.nii|\.npy|\.png)$", "", f.name, flags=re.I)
        cid = manifest.get(f.name) or (stem if stem in cases.index else by_safe.get(stem))
        if cid is None:
            raise DataError(f, "file name matches no case of the study", "name the file <case_id>.nii.gz or keep the export's manifest.csv")
        m = spatial(read_mask(f, key=study.key), ndim)
        want = tuple(shape_lookup(cid)) if shape_lookup else parse_shape(cases.at[cid, "shape"] if "shape" in cases.columns else None)
        if want is None:
            raise StoreError(f"{f}: the study does not know the image shape of {cid!r}. Fix: pass shape_lookup=lambda c: ds.load_image(c).shape[1:]")
        if tuple(m.shape) != tuple(want):
            raise DataError(f, f"mask shape {tuple(m.shape)} differs from the image shape {tuple(want)} of {cid!r}",
                            "save the mask on the case's own image grid (do not crop or resample)")
        bad = sorted(set(np.unique(m).tolist()) - set(study.classes))
        if bad:
            raise DataError(f, f"mask values {bad} are not classes of the study {study.classes}", f"use only {sorted(study.classes)}")
        prev_mask = None
        prev_src = None
        if cid in current.index and current.at[cid, "mask_path"]:
            prev_src = current.at[cid, "source"]
            prev_mask = spatial(read_mask(current.at[cid, "mask_path"]), ndim)
        changed = prev_mask is None or prev_mask.shape != m.shape or bool(np.any(prev_mask != m))
        if source is not None:
            src = source
        elif prev_src == "auto":  # the mask replaces a model pre-label
            src = "corrected" if changed else "human"
        else:
            src = "human"
        todo.append((cid, f, m, src, changed))
    if not annotator or not str(annotator).strip():
        raise StoreError("annotator is empty. Fix: pass who edited the masks")
    lids = add_labels(study, ({"case_id": cid, "mask": m, "source": src, "annotator": annotator, "seconds": seconds,
                               "note": f"imported from {f.name}" + ("" if changed else " (unchanged pre-label)")}
                              for cid, f, m, src, changed in todo))
    out = [{"case_id": cid, "label_id": lid, "source": src, "changed": changed}
           for (cid, f, m, src, changed), lid in zip(todo, lids)]
    return pd.DataFrame(out, columns=["case_id", "label_id", "source", "changed"])
