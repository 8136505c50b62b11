"""medwb.data: open a medical-imaging dataset as one cohort table + lazy pixels + MONAI-ready items.

``open_dataset(path)`` detects the format:

- ``*.npz``                         MedMNIST-style arrays (2D grey/RGB, 3D), official splits kept
- folder with ``dataset.json``      Medical Segmentation Decathlon (imagesTr/labelsTr, imagesTs = "unlabelled")
- folder with images/ + labels/     NIfTI pairs by file name; a flat folder of NIfTI files = unlabelled volumes
- ``*.nii``/``*.nii.gz``            one NIfTI volume
- DICOMDIR / folder of DICOM files  one case per series, stacked along the slice normal
- ``*.dcm`` file                    one DICOM image/volume
- folder of PNG/JPEG                class sub-folders (classification) or images/ + mask folder(s) (segmentation)

See docs/data.md.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medwb.data.dataset import TECHNICAL_COLUMNS, Dataset
from medwb.errors import DataError

__all__ = ["Dataset", "open_dataset", "detect_format", "TECHNICAL_COLUMNS"]

# TECHNICAL_COLUMNS (bookkeeping columns, never subgroups) lives with Dataset.subgroup_columns(), the one
# definition of which cohort columns are patient subgroups.
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _is_nifti(p: Path) -> bool:
    return p.name.lower().endswith(NIFTI_SUFFIXES)


def detect_format(path: str | Path) -> str:
    """'npz' | 'nifti' | 'dicom' | 'images' for a file or folder (DataError when nothing usable is there)."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "does not exist", "check the path (relative paths are from the current folder)")
    if p.is_file():
        name = p.name.lower()
        if name.endswith(".npz"):
            return "npz"
        if _is_nifti(p):
            return "nifti"
        if name == "dicomdir" or name.endswith(".dcm"):
            return "dicom"
        if name.endswith(IMAGE_SUFFIXES):
            return "images"
        from medwb.data.dicom import is_dicom_file

        if is_dicom_file(p):
            return "dicom"
        raise DataError(p, "unknown file type", "give an .npz, NIfTI, DICOM or PNG/JPEG file, or a folder")
    if (p / "dataset.json").is_file():
        return "nifti"
    if (p / "DICOMDIR").is_file():
        return "dicom"
    files = [f for f in p.iterdir() if not f.name.startswith(".")]
    if any(f.is_file() and _is_nifti(f) for f in files):
        return "nifti"
    subdirs = [f for f in files if f.is_dir()]
    if subdirs and any(_is_nifti(g) for d in subdirs for g in d.iterdir() if g.is_file()):
        return "nifti"
    if any(f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES) for f in files) or any(
        g.is_file() and g.name.lower().endswith(IMAGE_SUFFIXES) for d in subdirs for g in d.rglob("*")
    ):
        from medwb.data.dicom import find_dicom_files

        if not find_dicom_files(p, limit=1):
            return "images"
    from medwb.data.dicom import find_dicom_files

    if find_dicom_files(p, limit=1):
        return "dicom"
    if not any(f.is_file() for f in p.rglob("*")):
        raise DataError(p, "folder is empty", "point to the folder that holds the images (or copy them in)")
    raise DataError(p, "no images found (no .npz, NIfTI, DICOM, PNG or JPEG files)",
                    "point to a supported file or folder (see docs/data.md)")


def open_dataset(path: str | Path, *, classes: Mapping[int, str] | None = None,
                 metadata: str | Path | pd.DataFrame | None = None, cache_dir: str | Path | None = None,
                 progress: bool = True, **options: Any) -> Dataset:
    """Open a dataset (format auto-detected, see module doc) as a :class:`Dataset`.

    ``classes`` declares the class names (labels outside them are an error); ``metadata`` is a CSV or
    DataFrame with a ``case_id`` column joined onto the cohort (subgroups: sex, age, site, ...; a
    ``metadata.csv`` in the dataset folder is used automatically); ``cache_dir`` overrides where per-case
    statistics are cached ($MEDWB_CACHE, default ~/.cache/medwb). Other options go to the format reader.
    """
    p = Path(path)
    fmt = detect_format(p)
    if metadata is None and p.is_dir() and (p / "metadata.csv").is_file():
        metadata = p / "metadata.csv"
    kw: dict[str, Any] = dict(classes=classes, metadata=metadata, cache_dir=cache_dir, progress=progress, **options)
    if fmt == "npz":
        from medwb.data.npz import NpzDataset

        return NpzDataset(p, **kw)
    if fmt == "nifti":
        from medwb.data.nifti import open_nifti

        return open_nifti(p, **kw)
    if fmt == "dicom":
        from medwb.data.dicom import DicomDataset

        return DicomDataset(p, **kw)
    from medwb.data.images import ImageFolderDataset

    return ImageFolderDataset(p, **kw)
