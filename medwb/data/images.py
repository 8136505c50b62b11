"""Folders of PNG/JPEG (also BMP/TIFF) images, read with Pillow.

Layouts, detected in this order:

- **segmentation**: an ``images/`` (or ``image/``, ``imgs/``, ``img/``) folder plus one or more mask folders
  (any other sub-folder with images). A mask belongs to the image whose file stem is its stem or a prefix of
  it at a ``_``/``-`` boundary (``Image_01L_1stHO.png`` -> ``Image_01L``; ``000_HC_Annotation.png`` ->
  ``000_HC``). Mask folders in name order are observers: the first gives ``mask``, the second ``mask2``
  (CHASE_DB1: manual_1stHO, manual_2ndHO). Images without a mask are split "unlabelled".
- **classification**: class sub-folders (``NORMAL/``, ``PNEUMONIA/``), optionally inside split folders
  (``train/``, ``val/``, ``test/``); class indices follow sorted folder names. Without split folders all
  cases are "train" (give a ``split`` column in ``metadata.csv`` to change that).
- a flat folder of images: unlabelled cases.

Masks: binary masks (0/255, 0/1, 1-bit, JPEG-noisy) become 0/1; RGB masks must have equal channels.
Masks given as **outlines** (HC18's sonographer ellipses) are filled with ``scipy.ndimage.binary_fill_holes``:
a mask counts as an outline when one enclosed hole is >= 60 % of the filled area (a 1-pixel ring: ~99 %;
CHASE_DB1 vessel trees, whose loops enclose small gaps, stay <= 35 %). ``fill_outlines=True/False``
forces the choice. A CSV in the folder whose first column lists the image file names (HC18's
``pixel_size_and_HC.csv``) is joined onto the cohort; a pixel-size/spacing column becomes ``spacing``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from medwb.data.dataset import Dataset, class_name, fmt_dims
from medwb.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IMAGE_DIRS = ("images", "image", "imgs", "img")
SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
              "test": "test", "testing": "test"}
OUTLINE_HOLE_FRACTION = 0.6
TO_RGB = ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr")  # Pillow modes read_image_file converts to RGB ("1" -> "L")
# folder-name prefix -> (modality, foreground class name) for public sets medwb is tested on
KNOWN = {"chase": ("fundus", "vessel"), "hc18": ("US", "fetal head")}


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _has_image(d: Path) -> bool:
    with os.scandir(d) as it:
        return any(not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
                   and e.is_file() for e in it)


def _images_in(d: Path) -> list[Path]:
    """Image files of a folder, sorted by name (os.scandir: one system call per folder, not per file)."""
    with os.scandir(d) as it:
        names = sorted(e.name for e in it if not e.name.startswith(".") and e.is_file()
                       and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
    return [d / n for n in names]


def _snake(name: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^0-9a-z]+", "_", name.strip().lower())).strip("_")


def read_image_file(path: str | Path, what: str = "image") -> np.ndarray:
    """Decode a PNG/JPEG/... to (H,W) or (H,W,C) (DataError naming the file if it is truncated or corrupt)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in TO_RGB:
                im = im.convert("RGB")
            elif im.mode == "1":
                im = im.convert("L")
            return np.asarray(im)
    except FileNotFoundError as e:
        raise DataError(path, f"{what} file is missing", "restore the file or remove it from the folder") from e
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DataError(path, f"cannot decode {what} ({type(e).__name__}: {e}); the file is truncated or corrupt",
                        "re-export or re-copy the file (compare its size with the original)") from e


def is_outline(mask: np.ndarray) -> tuple[bool, np.ndarray]:
    """(is it an outline?, filled mask) for a binary 2D mask; see module doc for the rule."""
    filled = ndimage.binary_fill_holes(mask)
    holes = filled & ~mask
    if not holes.any():
        return False, filled
    lab, n = ndimage.label(holes)
    biggest = np.bincount(lab.ravel())[1:].max()
    return bool(biggest >= OUTLINE_HOLE_FRACTION * filled.sum()), filled


def mask_values(arr: np.ndarray, ref: str | Path, fill_outlines: bool | None) -> np.ndarray:
    """Decoded mask image -> integer label map (H,W); binary masks -> 0/1, outlines filled."""
    if arr.ndim == 3:
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise DataError(ref, "colour mask (channels differ)", "save masks as grey label images (one value per class)")
        arr = arr[..., 0]
    vals = np.unique(arr)
    jpeg = Path(ref).suffix.lower() in (".jpg", ".jpeg")
    if jpeg or set(vals.tolist()) <= {0, 255} or set(vals.tolist()) <= {0, 1}:
        m = arr > (127 if arr.max() > 1 else 0)
        if fill_outlines is not False:
            outline, filled = is_outline(m)
            if fill_outlines or outline:
                m = filled
        return m.astype(np.int64)
    return arr.astype(np.int64)


class ImageFolderDataset(Dataset):
    """A PNG/JPEG folder (segmentation with image + mask folders, or class sub-folders)."""

    may_mix_channels = True  # grey PNGs next to colour JPEGs: arrays() makes them all RGB (Dataset.common_channels)

    def __init__(self, path: str | Path, *, classes: Mapping[int, str] | None = None, modality: str | None = None,
                 fill_outlines: bool | None = None, **kw: Any) -> None:
        p = Path(path)
        self.fill_outlines = fill_outlines
        if p.is_file():
            rows, task, found = [{"case_id": p.stem, "split": "unlabelled", "source": str(p)}], "classification", {}
        else:
            rows, task, found = self._scan(p)
        if not rows:
            raise DataError(p, "no PNG/JPEG images found", "put the images in the folder (or images/ + masks/)")
        records = pd.DataFrame(rows)
        if not p.is_file():
            records = self._join_tables(p, records)
        known = next((v for k, v in KNOWN.items() if p.name.lower().startswith(k)), None)
        if classes is None:
            fg = known[1] if known else "foreground"
            classes = found or ({0: "background", 1: fg} if task == "segmentation" else {})
        super().__init__(p, name=p.stem if p.is_file() else p.name, task=task, ndim=2,
                         modality=modality or (known[0] if known else "unknown"), classes=classes, records=records, **kw)
        if task == "segmentation":
            self.missing_masks = self._records.loc[self._records["mask"].isna(), "case_id"].tolist()

    # ---- layout --------------------------------------------------------------------------------------
    def _scan(self, p: Path) -> tuple[list[dict[str, Any]], str, dict[int, str]]:
        subdirs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
        img_dir = next((d for d in subdirs if d.name.lower() in IMAGE_DIRS and _images_in(d)), None)
        if img_dir is not None:
            mask_dirs = [d for d in subdirs if d != img_dir and _images_in(d)]
            return self._scan_segmentation(img_dir, mask_dirs), "segmentation", {}
        split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_DIRS]
        if split_dirs:
            groups = [(SPLIT_DIRS[d.name.lower()], d) for d in split_dirs]
        else:
            groups = [("train", p)]
        class_names = sorted({class_name(c.name) for _, g in groups for c in g.iterdir()
                              if c.is_dir() and not c.name.startswith(".") and _has_image(c)})
        if class_names:
            idx = {n: i for i, n in enumerate(class_names)}
            rows = []
            for split, g in groups:
                for cdir in sorted(c for c in g.iterdir() if c.is_dir() and class_name(c.name) in idx):
                    prefix = class_name(cdir.relative_to(p))
                    for f in _images_in(cdir):
                        src = str(f)
                        rows.append({"case_id": f"{prefix}/{class_name(os.path.splitext(f.name)[0])}",
                                     "split": split, "label": idx[class_name(cdir.name)], "source": src})
            return rows, "classification", {i: n for n, i in idx.items()}
        flat = _images_in(p)
        return [{"case_id": f.stem, "split": "unlabelled", "source": str(f)} for f in flat], "classification", {}

    def _scan_segmentation(self, img_dir: Path, mask_dirs: list[Path]) -> list[dict[str, Any]]:
        images = _images_in(img_dir)
        stems = {f.stem for f in images}
        masks: list[dict[str, Path]] = []
        for md in mask_dirs:
            by_image: dict[str, Path] = {}
            for f in _images_in(md):
                owner = _owner(f.stem, stems)
                if owner is None:
                    raise DataError(f, f"mask matches no image in {img_dir.name}/ by name",
                                    "name masks like their image (e.g. IMG.png -> IMG_mask.png) or remove it")
                if owner in by_image:
                    raise DataError(f, f"second mask for image {owner!r} in {md.name}/ (also {by_image[owner].name})",
                                    "keep one mask per image per folder")
                by_image[owner] = f
            masks.append(by_image)
        rows = []
        for f in images:
            row: dict[str, Any] = {"case_id": f.stem, "source": str(f)}
            for k, by_image in enumerate(masks):
                ref = by_image.get(f.stem)
                row["mask" if k == 0 else f"mask{k + 1}"] = str(ref) if ref else None
            row["split"] = "train" if row.get("mask") else "unlabelled"
            rows.append(row)
        return rows

    def _join_tables(self, p: Path, records: pd.DataFrame) -> pd.DataFrame:
        """Join per-image CSV tables (first column = image file names) found in the folder."""
        csvs = [c for c in sorted(p.glob("*.csv")) if c.name != "metadata.csv"]  # metadata.csv: joined on case_id
        if not csvs:
            return records
        file_names = [os.path.basename(s) for s in records["source"]]
        for csv in csvs:
            try:
                table = pd.read_csv(csv)
            except (OSError, ValueError) as e:
                raise DataError(csv, f"cannot read table ({e})", "fix or remove the CSV") from e
            if table.empty or not table.iloc[:, 0].astype(str).isin(file_names).any():
                continue
            table = table.rename(columns={c: _snake(c) for c in table.columns})
            key = table.columns[0]
            table = table.drop_duplicates(subset=[key]).set_index(key)
            table.index = table.index.astype(str)
            extra = table.reindex(file_names)
            extra.index = records.index
            records = pd.concat([records, extra[[c for c in extra.columns if c not in records]]], axis=1)
            sp_col = next((c for c in table.columns if "spacing" in c or ("pixel" in c and "size" in c)), None)
            if sp_col is not None:
                records["spacing"] = [fmt_dims([float(v), float(v)]) if pd.notna(v) else None
                                      for v in records[sp_col]]
        return records

    # ---- pixels --------------------------------------------------------------------------------------
    def _read_raw(self, row: Mapping[str, Any]) -> np.ndarray:
        arr = read_image_file(row["source"])
        return np.ascontiguousarray(np.moveaxis(arr, -1, 0) if arr.ndim == 3 else arr[None])

    def _spatial_shape(self, row: Mapping[str, Any]) -> tuple[int, ...]:
        try:
            with Image.open(row["source"]) as im:
                return (im.size[1], im.size[0])
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(row["source"], f"cannot open image ({e})", "re-copy the file") from e

    def _read_mask_raw(self, row: Mapping[str, Any], ref: str) -> np.ndarray:
        return mask_values(read_image_file(ref, "mask"), ref, self.fill_outlines)[None]

    def _case_channels(self) -> dict[str, int]:
        """Channels from each file's header (Pillow mode, no decoding; as read_image_file converts them), so
        arrays() need not build the whole cohort first. Unreadable files are left out (they fail when loaded)."""
        if self._cohort is not None:
            return super()._case_channels()
        if getattr(self, "_channels_by_case", None) is None:
            out: dict[str, int] = {}
            for cid, src in zip(self._records["case_id"], self._records["source"]):
                try:
                    with Image.open(src) as im:
                        mode = im.mode
                except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
                    continue
                out[str(cid)] = 1 if mode == "1" else (3 if mode in TO_RGB else Image.getmodebands(mode))
            self._channels_by_case = out
        return self._channels_by_case


def _owner(mask_stem: str, image_stems: set[str]) -> str | None:
    """The image stem a mask stem belongs to: itself, or its longest prefix ending at a _ or - boundary."""
    if mask_stem in image_stems:
        return mask_stem
    cuts = [m.start() for m in re.finditer(r"[_\-]", mask_stem)]
    for c in reversed(cuts):
        if mask_stem[:c] in image_stems:
            return mask_stem[:c]
    return None
