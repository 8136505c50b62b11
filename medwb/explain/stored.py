"""How ``medwb explain`` writes and reads its files (maps, overlays, tables): through the store's file pair.

Why: maps hold the images they explain and index tables hold case ids, so an explanation folder inside an
encrypted study (``STUDY/maps``, ``STUDY/exports/explain``) must be encrypted when written, like the study's masks.
:func:`medwb.store.files.write_bytes` encrypts any path inside an encrypted study and writes plain bytes
elsewhere; the readers here decrypt the same way, so every viewer (report, notebook 03, verdict panel) reads
both. File names inside an encrypted study use the study's case pseudonyms instead of case ids.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medwb.store import cipher, files


def case_stem(out: str | Path, case_id: str) -> str:
    """The file stem of a case's map in ``out``: a keyed pseudonym inside an encrypted study, else the case id
    with unsafe characters replaced."""
    lay = cipher.owning_study(Path(out) / "x")
    if lay is None:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(case_id))
    return cipher.keyed_layout(lay.folder, cipher.study_key(lay)).case_name(str(case_id))


def write_file(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically (encrypted inside an encrypted study); parent folders are made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return files.write_bytes(path, data)


def read_file(path: str | Path) -> bytes:
    """The bytes of ``path``, decrypted when encrypted (a missing or wrong key: CryptoError naming the fix)."""
    return files.read_bytes(path)


def write_npz(path: str | Path, **arrays: Any) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_file(path, buf.getvalue())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a map NPZ, read into memory (never pickled objects)."""
    with np.load(io.BytesIO(read_file(path)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    return write_file(path, df.to_csv(index=False).encode())


def read_table(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """A CSV written by :func:`write_table` (``kwargs``: :func:`pandas.read_csv` options); empty file: empty table."""
    data = read_file(path)
    return pd.read_csv(io.BytesIO(data), **kwargs) if data.strip() else pd.DataFrame()


def write_json(path: str | Path, doc: Any) -> Path:
    return write_file(path, json.dumps(doc, indent=1).encode())


def load_nifti(path: str | Path) -> Any:
    """A NIfTI map (``.nii`` or ``.nii.gz``) as a nibabel image, decrypted in memory."""
    import gzip

    import nibabel as nib

    data = read_file(path)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return nib.Nifti1Image.from_bytes(data)
