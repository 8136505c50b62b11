"""MedMNIST-style ``.npz`` files: ``{split}_images`` / ``{split}_labels`` arrays, official splits kept.

Images are uint8 (N,H,W) grey, (N,H,W,3) colour or (N,H,W,D) 3D; labels (N,1) or (N,). Class names and
modality come from a small table of known MedMNIST sets, else class indices are their own names.
Arrays are read per split on first use (an npz member cannot be memory-mapped); statistics are computed
vectorised over the whole split, so a 6k-image file builds its cohort in about a second.
"""
from __future__ import annotations

import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medwb.data.cache import file_key
from medwb.data.dataset import STAT_COLUMNS, Dataset, fmt_dims
from medwb.data.hashing import phash_batch, pixel_sha256
from medwb.data.npyheader import check_npz_member
from medwb.data.npz_rows import NpzRows, stored_rows
from medwb.errors import DataError

# name prefix -> (classes, modality); MedMNIST v2 INFO for the sets medwb is tested on or commonly used.
KNOWN = {
    "pneumoniamnist": ({0: "normal", 1: "pneumonia"}, "XR"),
    "adrenalmnist3d": ({0: "normal", 1: "hyperplasia"}, "CT"),
    "breastmnist": ({0: "malignant", 1: "normal, benign"}, "US"),
    "nodulemnist3d": ({0: "benign", 1: "malignant"}, "CT"),
    "bloodmnist": ({0: "basophil", 1: "eosinophil", 2: "erythroblast", 3: "immature granulocytes", 4: "lymphocyte",
                    5: "monocyte", 6: "neutrophil", 7: "platelet"}, "microscopy"),
    "dermamnist": ({0: "actinic keratoses and intraepithelial carcinoma", 1: "basal cell carcinoma",
                    2: "benign keratosis-like lesions", 3: "dermatofibroma", 4: "melanoma", 5: "melanocytic nevi",
                    6: "vascular lesions"}, "dermoscopy"),
}
NPZ_SPLITS = ("train", "val", "test")
#: what numpy / zipfile raise for a damaged npz. numpy re-parses a broken .npy header with ``tokenize`` (Python-2
#: header fallback), which raises TokenError / SyntaxError (IndentationError) rather than ValueError.
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, tokenize.TokenError,
               SyntaxError)


#: cases converted and resized at a time by the vectorised ``arrays``
_CHUNK = 256


def _bad(path: Path, problem: str) -> DataError:
    return DataError(path, problem, "re-download or re-copy the file (check its size/MD5 against the "
                     "official release); a MedMNIST npz holds {train,val,test}_images and _labels")


class NpzDataset(Dataset):
    """A MedMNIST-style npz file as a Dataset (2D grey/RGB or 3D)."""

    def __init__(self, path: str | Path, *, classes: Mapping[int, str] | None = None,
                 modality: str | None = None, **kw: Any) -> None:
        path = Path(path)
        try:
            self._npz = np.load(path, allow_pickle=False)
            files = set(self._npz.files)
        except READ_ERRORS as e:
            raise _bad(path, f"cannot open as npz ({type(e).__name__}: {e}); the file is truncated or not an npz") from e
        splits = [s for s in NPZ_SPLITS if f"{s}_images" in files]
        if not splits:
            raise DataError(path, f"no '<split>_images' arrays in the npz (found: {sorted(files)[:8]})",
                            "store arrays as train_images/train_labels, val_images/..., test_images/...")
        self._arrays: dict[str, np.ndarray | NpzRows] = {}
        labels_all, rows, first_shape = [], [], None
        for s in splits:
            img_header = self._member_header(path, f"{s}_images")
            if f"{s}_labels" in files:
                self._member_header(path, f"{s}_labels")
            lab = self._member(path, f"{s}_labels") if f"{s}_labels" in files else None
            if len(img_header) < 3 or 0 in img_header[1:]:
                raise _bad(path, f"{s}_images has shape {img_header}: not a stack of images (N,H,W[,C|D])")
            n, shape = img_header[0], img_header[1:]
            if first_shape is None:
                first_shape = shape
            elif shape != first_shape:
                raise _bad(path, f"{s}_images has image shape {shape}, but {splits[0]}_images has {first_shape}")
            if lab is not None:
                if lab.ndim == 2 and lab.shape[1] != 1:
                    raise DataError(path, f"{s}_labels has shape {lab.shape}: multi-label data is not supported",
                                    "use one integer class per image")
                lab = lab.reshape(-1)
                if len(lab) != n:
                    raise _bad(path, f"{s}_images has {n} images but {s}_labels has {len(lab)} labels")
                if lab.dtype.kind not in "iu":
                    raise DataError(path, f"{s}_labels has dtype {lab.dtype}, not integer class indices",
                                    "store labels as integers 0..K-1")
                labels_all.append(lab)
            for i in range(n):
                rows.append({"case_id": f"{s}_{i:05d}", "split": s if lab is not None else "unlabelled",
                             "label": int(lab[i]) if lab is not None else pd.NA, "source": str(path),
                             "npz_split": s, "npz_index": i})
        if not rows:
            raise DataError(path, f"no images: {', '.join(f'{s}_images' for s in splits)} "
                            f"{'is' if len(splits) == 1 else 'are'} empty",
                            "export the dataset again with at least one image in a split")
        stem = path.stem.lower()
        known = next((v for k, v in KNOWN.items() if stem.startswith(k)), None)
        if known and "class_map" in files:  # a class subset (medwb.pipelines.class_sweep): new index -> original
            class_map = [int(c) for c in self._member(path, "class_map").reshape(-1)]
            known = ({i: known[0].get(c, str(c)) for i, c in enumerate(class_map)}, known[1])
        is3d = "3d" in stem or (len(first_shape) == 3 and first_shape[-1] != 3)
        self._rgb = len(first_shape) == 3 and first_shape[-1] == 3 and not is3d
        if classes is None:
            if known:
                classes = known[0]
            else:
                vals = sorted(set(np.concatenate(labels_all).tolist())) if labels_all else []
                # -1 and 255 (uint8's largest value) are the usual "unknown" markers: as classes of their own they
                # would be learnt and reported as a diagnosis; 255 is a class only in a contiguous 0..K-1 set
                sentinel = {255} | {int(np.iinfo(lab.dtype).max) for lab in labels_all if lab.dtype.itemsize < 8}
                contiguous = vals == list(range(len(vals)))
                odd = [v for v in vals if v < 0 or (v in sentinel and not contiguous)]
                if odd:
                    raise DataError(path, f"invalid labels: {odd[:10]} are not class indices (the labels hold "
                                    f"{len(vals)} distinct values: {vals[:12]}); -1 and 255 usually mark 'unknown'", "relabel or drop those cases so classes are 0..K-1, or declare "
                                    "the classes (open_dataset(..., classes={index: name}))")
                classes = {int(v): str(v) for v in vals}
        super().__init__(path, name=path.stem, task="classification", ndim=3 if is3d else 2,
                         modality=modality or (known[1] if known else "unknown"), classes=classes,
                         records=pd.DataFrame(rows), **kw)
        self._records["spacing"] = fmt_dims([1.0] * self.ndim)  # MedMNIST has no physical spacing: pixel units

    # npz members are zip entries: read them with clear errors for truncated/corrupt data
    def _member(self, path: Path, key: str) -> np.ndarray:
        try:
            return self._npz[key]
        except READ_ERRORS as e:
            raise _bad(path, f"array {key!r} cannot be read ({type(e).__name__}: {e}); the file is corrupt") from e

    def _member_header(self, path: Path, key: str) -> tuple[int, ...]:
        """Shape of an npz member from its .npy header, without decompressing the pixels; a header claiming more
        than the member holds, or than memory takes, is refused before numpy allocates anything."""
        try:
            return check_npz_member(path, key)[0]
        except DataError:
            raise
        except READ_ERRORS as e:
            raise _bad(path, f"array {key!r} header cannot be read ({type(e).__name__}: {e})") from e

    def _split_images(self, split: str) -> np.ndarray | NpzRows:
        """A split's images: read a few rows at a time when the member is uncompressed (memory stays flat for any
        pool size, :mod:`medwb.data.npz_rows`), else decompressed whole once."""
        if split not in self._arrays:
            try:
                rows = stored_rows(self.path, f"{split}_images")
            except READ_ERRORS as e:
                raise _bad(self.path, f"array '{split}_images' cannot be read ({type(e).__name__}: {e})") from e
            self._arrays[split] = rows if rows is not None else self._member(self.path, f"{split}_images")
        return self._arrays[split]

    def _to_raw(self, img: np.ndarray) -> np.ndarray:
        """One stored image -> channel-first."""
        return np.moveaxis(img, -1, 0) if self._rgb else img[None]

    def _read_raw(self, row: Mapping[str, Any]) -> np.ndarray:
        return np.ascontiguousarray(self._to_raw(self._split_images(row["npz_split"])[int(row["npz_index"])]))

    def _stat_key(self, row: Mapping[str, Any]) -> str:
        if not hasattr(self, "_file_key"):
            self._file_key = file_key(self.path)
        return f"{self._file_key}#{row['case_id']}"

    def _compute_stats(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Vectorised statistics per split in chunks of ~8M voxels: exact integer sums for integer data, float64
        per chunk otherwise; never a float64 copy of a whole split (1.6k x 64^3 volumes: ~15 s on a busy 2-core box)."""
        parts = []
        for s, grp in rows.groupby("npz_split", sort=False):
            images, index = self._split_images(str(s)), grp["npz_index"].to_numpy()
            one = self._to_raw(images[int(index[0])])
            per_case = int(np.prod(one.shape))
            step = max(1, 8_000_000 // per_case)
            df = pd.DataFrame(index=grp.index, columns=STAT_COLUMNS)
            cols = {k: np.zeros(len(index)) for k in ("intensity_min", "intensity_max", "intensity_mean", "intensity_std")}
            finite = np.ones(len(index), dtype=bool)
            hashes = np.zeros(len(index), dtype=np.uint64)
            sha: list[str] = []
            for a in range(0, len(index), step):  # a chunk of cases at a time, channel-first: never the whole split
                imgs = images[index[a:a + step]]
                chunk = raw = np.moveaxis(imgs, -1, 1) if self._rgb else imgs[:, None]
                c2 = chunk.reshape(len(chunk), -1)
                if chunk.dtype.kind in "ui":  # exact integer sums: much faster than float variance on 8-bit data
                    v = c2.astype(np.uint32 if chunk.dtype.itemsize == 1 else np.int64)
                    n_vox = c2.shape[1]
                    m = v.sum(axis=1, dtype=np.int64) / n_vox
                    sq = (v * v).sum(axis=1, dtype=np.int64) / n_vox
                    cols["intensity_min"][a:a + step] = c2.min(axis=1)
                    cols["intensity_max"][a:a + step] = c2.max(axis=1)
                    cols["intensity_mean"][a:a + step] = m
                    cols["intensity_std"][a:a + step] = np.sqrt(np.maximum(sq - m * m, 0.0))
                else:
                    f64 = c2.astype(np.float64)
                    ok = np.isfinite(f64).all(axis=1)
                    finite[a:a + step] = ok
                    f64[~np.isfinite(f64)] = 0.0
                    cols["intensity_min"][a:a + step] = f64.min(axis=1)
                    cols["intensity_max"][a:a + step] = f64.max(axis=1)
                    cols["intensity_mean"][a:a + step] = f64.mean(axis=1)
                    cols["intensity_std"][a:a + step] = f64.std(axis=1)
                    chunk = f64.reshape(chunk.shape)
                hashes[a:a + step] = phash_batch(chunk, self.ndim)
                sha.extend(pixel_sha256(np.ascontiguousarray(v)) for v in raw)
            df["shape"] = fmt_dims(one.shape[1:])
            df["channels"] = one.shape[0]
            for k, v in cols.items():
                df[k] = v
            df["sha256"] = sha
            df["phash"] = [f"{int(v):016x}" for v in hashes]
            df["dtype"] = one.dtype.name
            df["spacing_read"] = None
            df["problem"] = None
            for i in np.flatnonzero(~finite):
                idx = grp.index[i]
                df.loc[idx, ["intensity_min", "intensity_max", "intensity_mean", "intensity_std", "sha256",
                             "phash"]] = None
                df.loc[idx, "problem"] = (f"{self.path}: case {grp.loc[idx, 'case_id']!r} has NaN/Inf pixels. "
                                          "Fix: replace NaN/Inf or exclude the case")
            parts.append(df)
        return pd.concat(parts).loc[rows.index]

    def arrays(self, split: str, size=None, max_cases: int | None = None, seed: int = 0):
        """Vectorised fast path of Dataset.arrays (uint8 -> /255)."""
        from medwb.data.dataset import resize, subsample

        ids = self.case_ids(split)
        if not ids:
            raise KeyError(f"{self.name}: split {split!r} has no cases")
        ids = subsample(ids, max_cases, seed)
        rec = self._records.set_index("case_id").loc[ids]
        src, index = self._split_images(str(rec["npz_split"].iloc[0])), rec["npz_index"].to_numpy()
        # a chunk of cases at a time: only the result is held at full length (a split of 4000 64³ volumes
        # converted whole to float32 before resizing to 32³ peaked at 10 GB for a 0.5 GB result)
        X: np.ndarray | None = None
        for i0 in range(0, len(index), _CHUNK):
            imgs = src[index[i0:i0 + _CHUNK]]
            x = np.moveaxis(imgs, -1, 1) if self._rgb else imgs[:, None]
            if x.dtype.kind == "f":
                bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
                if bad.any():
                    raise DataError(self.path, f"case {ids[i0 + int(np.flatnonzero(bad)[0])]!r} has NaN/Inf "
                                    "pixels", "replace NaN/Inf or exclude the case")
                part = np.stack([self.scale(v) for v in x])
            else:
                part = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else np.stack([self.scale(v) for v in x])
            if size is not None and tuple(part.shape[2:]) != tuple(size):
                n, c = part.shape[:2]
                part = resize(part.reshape(n * c, *part.shape[2:]), size, "image").reshape(n, c, *size)
            if X is None:
                X = np.empty((len(index), *part.shape[1:]), np.float32)
            X[i0:i0 + len(part)] = part
        y = rec["label"].fillna(-1).to_numpy(dtype=np.int64)
        return X, y, ids
