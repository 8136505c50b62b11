"""NIfTI volumes (nibabel): Medical Segmentation Decathlon folders, images/ + labels/ pairs, flat folders.

- MSD: ``dataset.json`` lists ``training`` (image + label, split "train") and ``test`` (images only, split
  "unlabelled"); its ``labels`` are the classes and its ``modality`` the modality. Multi-channel 4D images
  become channels (channel-first).
- images/ + labels/ (or masks/, segmentations/, annotations/): pairs by file name; a label may carry a
  ``_seg``/``_label``/``_mask`` suffix, an image an nnU-Net ``_0000`` channel suffix. Images without a label
  are "unlabelled".
- a flat folder of NIfTI files or one file: each file is an unlabelled case (``x_seg.nii.gz`` beside
  ``x.nii.gz`` is taken as its mask).

The array axes are kept as stored (H, W, D = NIfTI i, j, k), spacing is the header's voxel size and
``affine`` is the file's own (RAS) affine, so maps written with it land in the image's space.
"""
from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medwb.data.cache import StatsCache, file_key
from medwb.data.dataset import Dataset
from medwb.errors import DataError

SUFFIXES = (".nii.gz", ".nii")
LABEL_DIRS = ("labels", "labelsTr", "masks", "segmentations", "annotations", "label", "mask", "seg")
IMAGE_DIRS = ("images", "imagesTr", "image", "img", "volumes")
MASK_SUFFIX = re.compile(r"(_seg|_segmentation|_label|_labels|_mask|_gt)$", re.I)
#: what nibabel raises for a damaged file: besides OSError/ValueError its own exception classes, which derive from
#: plain Exception (a header whose vox_offset is 0 -> HeaderDataError, found by tests/test_fuzz.py)
READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, MemoryError, nib.filebasedimages.ImageFileError,
               nib.spatialimages.HeaderDataError, nib.spatialimages.HeaderTypeError, nib.spatialimages.ImageDataError,
               nib.wrapstruct.WrapStructError, nib.casting.CastingError)


def nifti_stem(p: str | Path) -> str:
    name = Path(p).name
    for s in SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def _is_nifti(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(SUFFIXES) and not p.name.startswith(".")


def _guess_modality(name: str) -> str:
    tokens = set(re.split(r"[^a-z0-9]+", name.lower()))
    if tokens & {"ct"}:
        return "CT"
    if tokens & {"mr", "mri", "t1", "t2", "flair", "dwi", "adc"}:
        return "MR"
    if tokens & {"pet"}:
        return "PT"
    return "unknown"


def check_geometry(hdr: Any, path: str | Path) -> None:
    """Refuse a header whose voxel-to-world geometry holds NaN/Inf (affine, coded sform/qform, spatial pixdim):
    resampling, spacing and every export would silently carry the NaN on."""
    try:
        ndim = min(3, len(hdr.get_data_shape()))
        parts = {"affine": hdr.get_best_affine(), "pixdim": np.asarray(hdr.get_zooms()[:ndim], dtype=float)}
        for name in ("sform", "qform"):
            mat, code = getattr(hdr, f"get_{name}")(coded=True)
            if code and mat is not None:
                parts[name] = mat
    except READ_ERRORS as e:
        raise DataError(path, f"the NIfTI orientation cannot be computed ({type(e).__name__}: {e})",
                        "re-export the file with a valid affine") from e
    bad = [k for k, v in parts.items() if not np.isfinite(np.asarray(v, dtype=float)).all()]
    if bad:
        raise DataError(path, f"the NIfTI header's {', '.join(bad)} hold NaN/Inf (no valid voxel-to-world geometry)",
                        "re-export the file from its source (or set a valid sform/qform, e.g. with nibabel or "
                        "fslorient) before using or sharing it")


def read_nifti(path: str | Path, what: str = "image") -> nib.Nifti1Image:
    """nibabel image with the header read and its geometry checked; DataError naming the file if it is not a
    readable NIfTI."""
    try:
        img = nib.load(str(path))
        img.shape  # noqa: B018 - touches the header
    except FileNotFoundError as e:
        raise DataError(path, f"{what} file is missing", "restore the file or remove it from the listing") from e
    except READ_ERRORS as e:
        raise DataError(path, f"cannot read NIfTI {what} header ({type(e).__name__}: {e})",
                        "re-export or re-copy the file; it is corrupt or not NIfTI") from e
    check_geometry(img.header, path)
    return img


def read_nifti_array(path: str | Path, what: str = "image") -> tuple[np.ndarray, nib.Nifti1Image]:
    img = read_nifti(path, what)
    try:
        data = np.asanyarray(img.dataobj)
    except READ_ERRORS as e:
        raise DataError(path, f"cannot read NIfTI {what} voxels ({type(e).__name__}: {e}); the file is "
                        "truncated or corrupt", "re-export or re-copy the file (compare its size with the original)") from e
    return data, img


class NiftiDataset(Dataset):
    """NIfTI volumes + optional label maps (see module doc for the layouts)."""

    fixed_uint8_range = False

    def __init__(self, path: str | Path, *, records: pd.DataFrame, name: str, modality: str,
                 classes: Mapping[int, str], **kw: Any) -> None:
        self._headers: dict[str, nib.Nifti1Image] = {}
        first, err = None, None
        for src in records["source"].iloc[:20]:  # one broken file must not make the whole set unopenable
            try:
                first = read_nifti(src)
                break
            except DataError as e:
                err = err or e
        if first is None:
            raise err  # type: ignore[misc]
        ndim = 2 if len(first.shape) == 2 else 3
        super().__init__(path, name=name, task="segmentation", ndim=ndim, modality=modality, classes=classes,
                         records=records, **kw)

    def _header(self, path: str, what: str = "image") -> nib.Nifti1Image:
        if path not in self._headers:
            if len(self._headers) > 256:
                self._headers.clear()
            self._headers[path] = read_nifti(path, what)
        return self._headers[path]

    def _read_raw(self, row: Mapping[str, Any]) -> np.ndarray:
        data, _ = read_nifti_array(row["source"])
        if data.ndim == 4:
            return np.moveaxis(data, -1, 0)
        if data.ndim > 4:
            raise DataError(row["source"], f"image has {data.ndim} dimensions {data.shape}",
                            "give 2D/3D images, or 4D with channels (modalities) last")
        return data[None]

    def _spatial_shape(self, row: Mapping[str, Any]) -> tuple[int, ...]:
        shape = self._header(row["source"]).shape
        return tuple(shape[:3]) if len(shape) >= 3 else tuple(shape)

    def _case_spacing(self, row: Mapping[str, Any]) -> tuple[float, ...] | None:
        hdr = self._header(row["source"])
        return tuple(float(z) for z in hdr.header.get_zooms()[: min(3, len(hdr.shape))])

    def _mask_spacing(self, row: Mapping[str, Any], ref: str) -> tuple[float, ...] | None:
        hdr = self._header(ref, "mask")
        return tuple(float(z) for z in hdr.header.get_zooms()[: min(3, len(hdr.shape))])

    def _read_mask_raw(self, row: Mapping[str, Any], ref: str) -> np.ndarray:
        data, _ = read_nifti_array(ref, "mask")
        if data.ndim == 4 and data.shape[-1] == 1:
            data = data[..., 0]
        return _as_labels(data, ref)[None]

    def affine(self, case_id: str) -> np.ndarray:
        """The image's own NIfTI affine (voxel -> RAS mm)."""
        return np.asarray(self._header(self._row(case_id)["source"]).affine, dtype=np.float64)


def _as_labels(data: np.ndarray, ref: str | Path) -> np.ndarray:
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise DataError(ref, "mask has NaN/Inf values", "re-export the label map with integer labels")
        r = np.rint(data)
        if np.abs(data - r).max() > 1e-3:
            raise DataError(ref, "mask holds non-integer values (a probability map?)",
                            "threshold/argmax it into integer label values")
        data = r
    return data.astype(np.int64)


def _pairs(images: list[Path], labels: list[Path]) -> dict[Path, Path]:
    """image -> label by stem (label may have a _seg/_label/_mask suffix, image an nnU-Net _0000 suffix)."""
    by_stem = {}
    for lab in labels:
        by_stem.setdefault(nifti_stem(lab), lab)
        by_stem.setdefault(MASK_SUFFIX.sub("", nifti_stem(lab)), lab)
    out = {}
    for img in images:
        s = nifti_stem(img)
        for key in (s, re.sub(r"_\d{4}$", "", s)):
            if key in by_stem:
                out[img] = by_stem[key]
                break
    return out


def _label_values(labels: list[str], root: Path, cache_dir: Any, progress: bool) -> list[int]:
    """Distinct label values over all masks (cached per file), for sets that do not declare classes."""
    cache = StatsCache(root, cache_dir)
    vals: set[int] = set()
    for ref in tqdm(labels, desc="label values", disable=not progress or len(labels) < 50, leave=False):
        try:
            key = file_key(ref, extra="label-values")
        except OSError:
            continue
        hit = cache.get(key)
        if hit is None:
            try:
                data, _ = read_nifti_array(ref, "mask")
            except DataError:
                continue  # reported when the mask is loaded / checked
            hit = {"values": np.unique(_as_labels(data, ref)).tolist()}
            cache.put(key, hit)
        vals.update(int(v) for v in hit["values"])
    cache.save()
    return sorted(vals | {0})


def open_nifti(path: str | Path, *, classes: Mapping[int, str] | None = None, modality: str | None = None,
               **kw: Any) -> NiftiDataset:
    """Open an MSD folder, an images/+labels/ folder, a flat NIfTI folder or one NIfTI file."""
    p = Path(path)
    rows: list[dict[str, Any]] = []
    name = nifti_stem(p) if p.is_file() else p.name
    if p.is_file():
        rows.append({"case_id": nifti_stem(p), "split": "unlabelled", "source": str(p), "mask": None})
    elif (p / "dataset.json").is_file():
        meta_path = p / "dataset.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(meta_path, f"cannot parse dataset.json ({e})", "fix the JSON syntax") from e
        name = str(meta.get("name") or p.name)
        if classes is None and isinstance(meta.get("labels"), dict):
            try:
                classes = {int(k): str(v) for k, v in meta["labels"].items()}
            except ValueError as e:
                raise DataError(meta_path, f"'labels' keys must be integers ({e})",
                                'write labels as {"0": "background", "1": ...}') from e
        mods = meta.get("modality") or {}
        if modality is None and isinstance(mods, dict) and mods:
            modality = "+".join(str(v) for _, v in sorted(mods.items()))
        for e in meta.get("training", []):
            if not isinstance(e, dict) or "image" not in e:
                raise DataError(meta_path, f"training entry {e!r} has no 'image'",
                                'list training cases as {"image": ..., "label": ...}')
            img = (p / e["image"]).resolve()
            rows.append({"case_id": nifti_stem(img), "split": "train", "source": str(img),
                         "mask": str((p / e["label"]).resolve()) if e.get("label") else None})
        for t in meta.get("test", []):
            t = t["image"] if isinstance(t, dict) else t
            img = (p / t).resolve()
            rows.append({"case_id": nifti_stem(img), "split": "unlabelled", "source": str(img), "mask": None})
        if not rows:
            raise DataError(meta_path, "dataset.json lists no training or test images",
                            "fill its 'training' / 'test' lists (MSD format)")
        missing = [r["source"] for r in rows if not Path(r["source"]).is_file()]
        if missing:
            raise DataError(missing[0], f"image listed in dataset.json is missing ({len(missing)} missing in all)",
                            "restore the files or remove them from dataset.json")
    else:
        subdirs = {d.name: d for d in p.iterdir() if d.is_dir()}
        img_dir = next((subdirs[n] for n in IMAGE_DIRS if n in subdirs), None)
        lab_dir = next((subdirs[n] for n in LABEL_DIRS if n in subdirs), None)
        if img_dir is not None:
            images = sorted(f for f in img_dir.iterdir() if _is_nifti(f))
            labels = sorted(f for f in lab_dir.iterdir() if _is_nifti(f)) if lab_dir else []
            if not images:
                raise DataError(img_dir, "no NIfTI images in the image folder", "put *.nii.gz images there")
        else:
            flat = sorted(f for f in p.iterdir() if _is_nifti(f))
            lab_set = {f for f in flat if MASK_SUFFIX.search(nifti_stem(f)) and
                       any(nifti_stem(g) == MASK_SUFFIX.sub("", nifti_stem(f)) for g in flat)}
            images, labels = [f for f in flat if f not in lab_set], sorted(lab_set)
        if not images:
            raise DataError(p, "no NIfTI images found", "put *.nii or *.nii.gz files in the folder (or images/)")
        pairs = _pairs(images, labels)
        unused = sorted(set(labels) - set(pairs.values()))
        if unused:
            raise DataError(unused[0], f"{len(unused)} label file(s) match no image by name",
                            "name each label like its image (optionally with _seg/_label/_mask)")
        for img in images:
            lab = pairs.get(img)
            rows.append({"case_id": nifti_stem(img), "split": "train" if lab else "unlabelled",
                         "source": str(img), "mask": str(lab) if lab else None})
        if classes is None:
            vals = _label_values([str(v) for v in pairs.values()], p, kw.get("cache_dir"), kw.get("progress", True))
            classes = {v: ("background" if v == 0 else f"label_{v}") for v in vals}
    records = pd.DataFrame(rows)
    records["modality"] = [modality or _guess_modality(Path(s).name) for s in records["source"]]
    if modality is None:
        modality = str(records["modality"].mode().iloc[0])
    if classes is None:
        classes = {0: "background"}
    ds = NiftiDataset(p, records=records, name=name, modality=modality, classes=classes, **kw)
    if p.is_dir() and not (p / "dataset.json").is_file():
        skipped = sorted(d.name for d in p.iterdir() if d.is_dir() and d.name not in IMAGE_DIRS + LABEL_DIRS)
        if skipped:
            ds.notes.append(f"sub-folder(s) {skipped} not part of this NIfTI set; open them separately")
    if p.is_dir() and not (p / "dataset.json").is_file() and records["mask"].notna().any():
        ds.missing_masks = records.loc[records["mask"].isna(), "case_id"].tolist()  # paired layout, label absent
    return ds
