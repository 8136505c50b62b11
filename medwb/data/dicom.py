"""DICOM with pydicom: a series folder, a DICOMDIR, a folder of mixed files, or one file.

- Files are found by the ``DICM`` preamble (or a ``.dcm`` suffix); a DICOMDIR lists its own files
  (``pydicom.fileset.FileSet``). One **case per series** (SeriesInstanceUID; anonymised files without it
  are grouped by folder + series number), split further if slices differ in size or orientation
  (localisers).
- A series is stacked into (rows, cols, slices) sorted by ImagePositionPatient projected on the slice
  normal (row x column direction cosines). Spacing = PixelSpacing (row, col) + the median slice step;
  uneven steps are noted. ``affine`` maps voxel (row, col, slice) to RAS mm (DICOM LPS with x, y flipped),
  as nibabel writes it, so maps saved with it overlay the series.
- MONOCHROME1 images (CR/DX, low values display white) are inverted so bright = dense as in MONOCHROME2
  (``invert_monochrome1``). Pixels pass through the modality LUT (RescaleSlope/Intercept -> HU for CT); compressed transfer syntaxes
  (JPEG 2000, JPEG-LS, RLE) are decoded by pylibjpeg-openjpeg / Pillow through pydicom.
- Objects without pixels (RTPLAN, RTSTRUCT, SR) and label objects (SEG) are skipped and listed in
  ``ds.notes``; a file that cannot be parsed is a DataError naming it.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medwb.data.cache import file_key
from medwb.data.dataset import Dataset, fmt_dims
from medwb.errors import DataError

NON_IMAGE = {"RTSTRUCT", "RTPLAN", "SR", "KO", "PR", "REG", "RTRECORD", "SEG", "RWV", "DOC"}
READ_FIX = "re-export or re-copy the file from the PACS/scanner; it is truncated or not DICOM"


NOT_DICOM_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gz", ".nii", ".npz", ".npy", ".csv",
                      ".txt", ".md", ".json", ".py", ".html", ".pdf", ".zip"}


def is_dicom_file(p: str | Path) -> bool:
    """True for a file with the DICOM 'DICM' preamble (or a .dcm suffix); common other types are not opened."""
    p = Path(p)
    suffix = p.suffix.lower()
    if suffix == ".dcm":
        return True
    if suffix in NOT_DICOM_SUFFIXES:
        return False
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def find_dicom_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """DICOM files under ``folder`` (recursive, sorted; DICOMDIR index files excluded)."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            if os.path.splitext(name)[1].lower() in NOT_DICOM_SUFFIXES:
                continue
            f = Path(dirpath) / name
            if is_dicom_file(f):
                out.append(f)
                if limit and len(out) >= limit:
                    return out
    return out


def pydicom_errors() -> tuple[type[BaseException], ...]:
    """What pydicom raises for damaged files. It has no common base class: besides its own InvalidDicomError and
    BytesLengthException, a malformed element surfaces as NotImplementedError (unknown VR bytes), struct.error,
    UnicodeDecodeError, IndexError, OverflowError, RecursionError (nested sequences)... A named tuple rather than
    ``except Exception`` so that interrupts and timeouts raised inside the reader are not mislabelled."""
    import struct

    from pydicom.errors import BytesLengthException, InvalidDicomError

    return (InvalidDicomError, BytesLengthException, OSError, EOFError, ValueError, KeyError, TypeError,
            AttributeError, IndexError, struct.error, ArithmeticError, RuntimeError)  # RuntimeError: NotImpl., Recursion


#: header elements medwb reads; decoded inside the read guard (pydicom converts values lazily, on first access)
HEADER_KEYWORDS = ("SOPClassUID", "Modality", "Rows", "Columns", "NumberOfFrames", "SeriesInstanceUID",
                   "SeriesNumber", "InstanceNumber", "PixelSpacing", "ImagerPixelSpacing", "ImageOrientationPatient",
                   "ImagePositionPatient", "SpacingBetweenSlices", "SliceThickness", "GridFrameOffsetVector",
                   "PatientID", "PatientSex", "PatientAge", "InstitutionName", "StudyDate", "StudyTime",
                   "PhotometricInterpretation", "BitsAllocated", "SamplesPerPixel", "PixelRepresentation",
                   "RescaleSlope", "RescaleIntercept")


def _dcmread(path: Path, header_only: bool = True):
    """Read one file; every parse failure (including values decoded later) becomes a DataError naming it."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=header_only, force=path.suffix.lower() == ".dcm")
            for kw in HEADER_KEYWORDS:  # decode now, so a malformed value fails here and not deep in geometry code
                ds.get(kw)
            for _ in getattr(ds, "file_meta", None) or ():  # iterating decodes (transfer syntax: read pixels)
                pass
    except pydicom_errors() as e:
        raise DataError(path, f"cannot read DICOM ({type(e).__name__}: {e})", READ_FIX) from e
    if header_only and "SOPClassUID" not in ds:  # required in every DICOM object: its absence means a cut-off header
        raise DataError(path, "cannot read DICOM: header incomplete (no SOPClassUID; file truncated?)", READ_FIX)
    return ds


def image_dims(h: Any, f: Path) -> tuple[int, int, int]:
    """(rows, columns, frames) of an image header, checked: each a single positive integer (NumberOfFrames
    optional, default 1). A value that decodes but is a list, empty or zero would otherwise fail later as a
    TypeError/ValueError/AttributeError (found by tests/test_fuzz.py on mutated rtdose.dcm)."""
    from pydicom.multival import MultiValue

    out = []
    for kw, default in (("Rows", None), ("Columns", None), ("NumberOfFrames", 1)):
        v = h.get(kw)
        if v is None or v == "":
            if default is None:
                raise DataError(f, f"DICOM image header has no {kw}", READ_FIX)
            out.append(default)
            continue
        try:
            n = None if isinstance(v, (list, tuple, bytes, MultiValue)) else int(v)
        except (TypeError, ValueError, OverflowError):
            n = None
        if n is None or n < 1:
            raise DataError(f, f"DICOM {kw} is {v!r}, not one positive integer", READ_FIX)
        out.append(n)
    return out[0], out[1], out[2]


def _int_or(v: Any, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return default


def _floats(v: Any, n: int) -> tuple[float, ...] | None:
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n else None


@dataclass
class Series:
    """One case: the sorted files of a series (or one multi-frame file) and its geometry."""

    case_id: str
    files: list[Path]
    modality: str
    rows: int
    cols: int
    frames: int = 1
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return len(self.files) if self.frames == 1 else self.frames


def _geometry(headers: list[Any], files: list[Path], case_id: str) -> tuple[list[Path], tuple, np.ndarray, list[str]]:
    """Sort slices along the normal and derive spacing + affine (voxel (row, col, slice) -> RAS)."""
    h0 = headers[0]
    notes: list[str] = []
    ps = _floats(h0.get("PixelSpacing"), 2) or _floats(h0.get("ImagerPixelSpacing"), 2) or (1.0, 1.0)
    iop = _floats(h0.get("ImageOrientationPatient"), 6)
    ipps = [_floats(h.get("ImagePositionPatient"), 3) for h in headers]
    thick = h0.get("SpacingBetweenSlices") or h0.get("SliceThickness")
    try:
        dz = float(thick) if thick is not None else 1.0
    except (TypeError, ValueError):
        dz = 1.0
    if iop is None or any(p is None for p in ipps):
        order = sorted(range(len(files)), key=lambda i: _int_or(headers[i].get("InstanceNumber") or i, i))
        if len(files) > 1:
            notes.append(f"{case_id}: no ImagePositionPatient/ImageOrientationPatient; slices sorted by "
                         "InstanceNumber, spacing from SliceThickness")
        aff = np.diag([ps[0], ps[1], dz, 1.0])
        return [files[i] for i in order], (ps[0], ps[1], dz), aff, notes
    row_cos, col_cos = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(row_cos, col_cos)
    pos = np.array(ipps, dtype=float)
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    along, pos = along[order], pos[order]
    if len(files) > 1:
        steps = np.diff(along)
        if np.any(np.abs(steps) < 1e-4):
            raise DataError(files[int(order[int(np.argmin(np.abs(steps)))])],
                            f"series {case_id!r} has two slices at the same position (several phases/echoes "
                            "in one series?)", "split the series (one phase/echo per folder) before opening")
        dz = float(np.median(steps))
        if steps.max() - steps.min() > 0.1 * dz:
            notes.append(f"{case_id}: uneven slice spacing ({steps.min():.3g}-{steps.max():.3g} mm; "
                         f"median {dz:.3g} used) - missing slices?")
        slice_vec = (pos[-1] - pos[0]) / (len(files) - 1)
    else:
        slice_vec = normal * dz
    lps = np.eye(4)
    lps[:3, 0] = col_cos * ps[0]  # moving down one row follows the column direction cosine
    lps[:3, 1] = row_cos * ps[1]  # moving right one column follows the row direction cosine
    lps[:3, 2] = slice_vec
    lps[:3, 3] = pos[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return [files[i] for i in order], (ps[0], ps[1], abs(dz)), ras, notes


class DicomDataset(Dataset):
    """DICOM series / DICOMDIR / single files as unlabelled image cases (split "unlabelled")."""

    fixed_uint8_range = False

    def __init__(self, path: str | Path, *, classes: Mapping[int, str] | None = None, modality: str | None = None,
                 **kw: Any) -> None:
        p = Path(path)
        notes: list[str] = []
        groups = self._list(p, notes)
        if not groups:
            raise DataError(p, "no DICOM images (only objects without pixel data, or no DICOM files)",
                            "point to a folder with DICOM image files or a DICOMDIR")
        self._series: dict[str, Series] = {}
        for g in groups:
            self._series[g.case_id] = g
            notes.extend(g.notes)
        single = p.is_file() and p.name.upper() != "DICOMDIR"
        ndim = 3 if any(s.depth > 1 for s in self._series.values()) else 2  # a folder of radiographs stays 2D
        rows = []
        for s in self._series.values():
            sp = s.spacing if ndim == 3 else s.spacing[:2]
            rows.append({"case_id": s.case_id, "split": "unlabelled", "source": str(s.files[0]),
                         "modality": s.modality, "spacing": fmt_dims(sp), "n_files": len(s.files), **s.meta})
        records = pd.DataFrame(rows)
        mods = records["modality"].value_counts()
        super().__init__(p, name=p.stem if single else (p.parent.name if p.name.upper() == "DICOMDIR" else p.name),
                         task="segmentation", ndim=ndim, modality=modality or str(mods.index[0]),
                         classes=classes or {0: "background"}, records=records, **kw)
        self.notes.extend(notes)

    # ---- listing -------------------------------------------------------------------------------------
    def _list(self, p: Path, notes: list[str]) -> list[Series]:
        if p.is_file() and p.name.upper() == "DICOMDIR":
            return self._from_dicomdir(p, notes)
        if p.is_dir() and (p / "DICOMDIR").is_file():
            return self._from_dicomdir(p / "DICOMDIR", notes)
        files = [p] if p.is_file() else find_dicom_files(p)
        if not files:
            return []
        groups: dict[tuple, list[tuple[Path, Any]]] = defaultdict(list)
        for f in files:
            h = _dcmread(f)
            if self._skip(f, h, notes):
                continue
            uid = str(h.get("SeriesInstanceUID") or "") or f"{f.parent}|{h.get('SeriesNumber', '')}"
            groups[(uid,)].append((f, h))
        return self._build(groups, p)

    def _from_dicomdir(self, dicomdir: Path, notes: list[str]) -> list[Series]:
        import pydicom
        from pydicom.fileset import FileSet

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fs = FileSet(pydicom.dcmread(dicomdir))
                # records are decoded while iterating: a damaged one must fail inside this guard too
                entries = [(Path(inst.path), id(inst.node.parent)) for inst in fs]
        except Exception as e:  # pydicom raises many types for a damaged DICOMDIR
            raise DataError(dicomdir, f"cannot read DICOMDIR ({type(e).__name__}: {e})", READ_FIX) from e
        groups: dict[tuple, list[tuple[Path, Any]]] = defaultdict(list)
        for f, series in entries:
            if not f.is_file():
                raise DataError(f, "file listed in the DICOMDIR is missing", "copy the whole DICOMDIR tree")
            h = _dcmread(f)
            if self._skip(f, h, notes):
                continue
            groups[(series,)].append((f, h))
        return self._build(groups, dicomdir.parent)

    @staticmethod
    def _skip(f: Path, h: Any, notes: list[str]) -> bool:
        mod = str(h.get("Modality", ""))
        if mod in NON_IMAGE or "Rows" not in h:
            notes.append(f"{f.name}: skipped ({mod or 'no modality'} object without image pixels)")
            return True
        return False

    def _build(self, groups: dict[tuple, list[tuple[Path, Any]]], root: Path) -> list[Series]:
        out: list[Series] = []
        used: set[str] = set()
        for key, members in groups.items():
            # split a series whose slices differ in size or orientation (localisers, mixed planes)
            parts: dict[tuple, list[tuple[Path, Any]]] = defaultdict(list)
            for f, h in members:
                iop = _floats(h.get("ImageOrientationPatient"), 6)
                rows, cols, frames = image_dims(h, f)
                sub = (rows, cols, tuple(round(v, 3) for v in iop) if iop else None,
                       str(f) if frames > 1 else "")
                parts[sub].append((f, h))
            for k, plist in enumerate(parts.values()):
                files = [f for f, _ in plist]
                headers = [h for _, h in plist]
                h0 = headers[0]
                cid = self._case_id(h0, files[0], root, used, k if len(parts) > 1 else None)
                rows, cols, frames = image_dims(h0, files[0])
                if frames > 1:
                    files_sorted, sp, aff, notes = _multiframe_geometry(h0, files[0], cid)
                else:
                    files_sorted, sp, aff, notes = _geometry(headers, files, cid)
                meta = {c: str(h0.get(tag)) for c, tag in (("patient_id", "PatientID"), ("sex", "PatientSex"),
                                                           ("age", "PatientAge"), ("site", "InstitutionName"))
                        if h0.get(tag) not in (None, "")}
                out.append(Series(cid, files_sorted, str(h0.get("Modality") or "OT"), rows,
                                  cols, frames, sp, aff, meta, notes))
        return out

    @staticmethod
    def _case_id(h: Any, f: Path, root: Path, used: set[str], part: int | None) -> str:
        """Readable unique id: PatientID_StudyDate+Time_ModalitySeriesNumber, else the folder/file name."""
        pid = str(h.get("PatientID") or "").strip()
        if f == root or not root.is_dir():
            base = f.stem
        elif pid:
            when = f"{h.get('StudyDate') or ''}{str(h.get('StudyTime') or '').split('.')[0]}"
            base = "_".join(v for v in (pid, when, f"{h.get('Modality') or ''}{h.get('SeriesNumber') or ''}") if v)
        else:
            rel = f.parent.relative_to(root)
            base = str(rel).replace("/", "_") if str(rel) != "." else root.name
        cid = base if part is None else f"{base}_part{part + 1}"
        n = 2
        while cid in used:
            cid = f"{base}_{n}"
            n += 1
        used.add(cid)
        return cid

    # ---- pixels --------------------------------------------------------------------------------------
    def _stat_key(self, row: Mapping[str, Any]) -> str:
        # "m1inv": statistics cached before MONOCHROME1 images were inverted are not reused
        key = file_key(*self._series[row["case_id"]].files, extra=f"{row['case_id']}|m1inv")
        return hashlib.sha1(key.encode()).hexdigest()

    def _read_raw(self, row: Mapping[str, Any]) -> np.ndarray:
        s = self._series[row["case_id"]]
        slices = [_pixels(f) for f in s.files]
        shapes = {a.shape for a in slices}
        if len(shapes) > 1:
            raise DataError(s.files[0], f"slices of series {s.case_id!r} have different sizes {sorted(shapes)}",
                            "keep one image size per series folder")
        if s.frames > 1:
            vol = slices[0]  # (frames, rows, cols[, 3])
            vol = np.moveaxis(vol, 0, 2)  # -> (rows, cols, frames[, 3])
        else:
            vol = np.stack(slices, axis=2)  # (rows, cols, slices[, 3])
        if vol.ndim == 4:
            vol = np.moveaxis(vol, -1, 0)
        else:
            vol = vol[None]
        if self.ndim == 2:
            vol = vol[..., 0]
        return np.ascontiguousarray(vol)

    def _case_spacing(self, row: Mapping[str, Any]) -> tuple[float, ...] | None:
        sp = self._series[row["case_id"]].spacing
        return sp if self.ndim == 3 else sp[:2]

    def affine(self, case_id: str) -> np.ndarray:
        """Voxel (row, col, slice) -> RAS mm, from ImageOrientationPatient / ImagePositionPatient."""
        self._row(case_id)
        return self._series[str(case_id)].affine.copy()

    def files(self, case_id: str) -> list[Path]:
        """The DICOM files of a case, in slice order."""
        return list(self._series[str(case_id)].files)


def _multiframe_geometry(h: Any, f: Path, cid: str) -> tuple[list[Path], tuple, np.ndarray, list[str]]:
    ps = _floats(h.get("PixelSpacing"), 2) or (1.0, 1.0)
    dz = _grid_frame_step(h, f)
    if dz is None:
        try:
            dz = float(h.get("SpacingBetweenSlices") or h.get("SliceThickness") or 1.0)
        except (TypeError, ValueError):
            dz = 1.0
    iop = _floats(h.get("ImageOrientationPatient"), 6)
    ipp = _floats(h.get("ImagePositionPatient"), 3)
    lps = np.diag([ps[0], ps[1], dz, 1.0])
    if iop and ipp:
        r, c = np.array(iop[:3]), np.array(iop[3:])
        lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = c * ps[0], r * ps[1], np.cross(r, c) * dz, ipp
    return [f], (ps[0], ps[1], abs(dz)), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, []


def _grid_frame_step(h: Any, f: Path) -> float | None:
    """Frame step (mm) of a multi-frame file (RT Dose) from Grid Frame Offset Vector (3004,000C), which must hold
    one number per frame; None when the element is absent (then SliceThickness is used)."""
    from pydicom.multival import MultiValue

    offsets = h.get("GridFrameOffsetVector")
    if offsets is None or offsets == "":
        return None
    frames = image_dims(h, f)[2]
    values = list(offsets) if isinstance(offsets, (list, tuple, MultiValue)) else [offsets]
    fix = ("correct Grid Frame Offset Vector (3004,000C) to one offset (mm) per frame, e.g. 0\\2.5\\5, or "
           "re-export the dose file from the planning system")
    try:
        nums = [float(v) for v in values]
    except (TypeError, ValueError):
        raise DataError(f, f"Grid Frame Offset Vector {values!r} holds a non-number or empty value", fix) from None
    if len(nums) != frames:
        raise DataError(f, f"Grid Frame Offset Vector has {len(nums)} value(s) for {frames} frames", fix)
    if not all(np.isfinite(nums)):
        raise DataError(f, f"Grid Frame Offset Vector {values!r} holds NaN/Inf", fix)
    return float(np.median(np.diff(nums))) if frames > 1 else None


def invert_monochrome1(arr: np.ndarray, ds: Any) -> np.ndarray:
    """MONOCHROME1 (CR/DX: low stored values display white) -> MONOCHROME2 orientation, so bright = dense in
    every case. Mirrors the stored values within the range that BitsStored / PixelRepresentation allow
    (unsigned: 2**b - 1 - v; signed: -1 - v), before the modality LUT: content-independent, so every slice of a
    series and every image of a set is flipped the same way, values stay in range and keep their dtype."""
    if arr.dtype.kind == "f":  # Float Pixel Data has no stored range: mirror within the image's own range
        return (float(np.nanmin(arr)) + float(np.nanmax(arr)) - arr).astype(arr.dtype)
    bits = int(ds.get("BitsStored") or arr.dtype.itemsize * 8)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    return np.clip(lo + hi - arr.astype(np.int64), lo, hi).astype(arr.dtype)


def _pixels(f: Path) -> np.ndarray:
    """Decoded pixels of one file, MONOCHROME1 inverted, with the modality LUT applied (HU for CT)."""
    from pydicom.pixels import apply_modality_lut

    ds = _dcmread(f, header_only=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
            if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
                arr = invert_monochrome1(arr, ds)
            if "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds:
                arr = apply_modality_lut(arr, ds)
    except Exception as e:  # decoders raise many types (ValueError, RuntimeError, OSError...)
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", ts)
        raise DataError(f, f"cannot decode DICOM pixel data ({type(e).__name__}: {e}; transfer syntax {name})",
                        "check the file is complete; for compressed data install pylibjpeg-openjpeg / Pillow "
                        "(both are medwb dependencies) or " + READ_FIX) from e
    arr = np.asarray(arr)
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr  # HU fit float32; halves memory
