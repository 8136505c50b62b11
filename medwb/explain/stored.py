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
from medwb.store.layout import StudyLayout, map_stem


def case_stem(out: str | Path, case_id: str) -> str:
    """The file stem of a case's map in ``out``: a keyed pseudonym inside an encrypted study, else the case id
    with unsafe characters replaced."""
    lay = cipher.owning_study(Path(out) / "x")
    if lay is None:
        return map_stem(case_id)
    return cipher.keyed_layout(lay.folder, cipher.study_key(lay)).case_name(str(case_id))


def source_study(model: object) -> StudyLayout | None:
    """The encrypted study a model comes from (a study folder, or a checkpoint file inside one), else None."""
    if not isinstance(model, (str, Path)):
        return None
    p = Path(model)
    lay = StudyLayout(p) if p.is_dir() else cipher.owning_study(p)
    return lay if lay is not None and cipher.is_encrypted(lay) else None


def protect_outside(source: StudyLayout | None, out: Path, *, plaintext: bool) -> bool:
    """An explanation of an encrypted study's model written outside any encrypted study: ``out`` becomes an
    encrypted zone with that study's key (maps hold its images, tables its case ids), unless ``plaintext``.
    Returns whether ``out`` lies outside the source study (its files are then registered there for purge)."""
    from medwb.privacy.outputs import protect_output

    zone = cipher.owning_study(out / "x")
    if source is None or (zone is not None and zone.folder.resolve() == source.folder.resolve()):
        return False
    if not plaintext and zone is None:
        protect_output(out, cipher.study_key(source))
    return True


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
