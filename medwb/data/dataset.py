"""The one ``Dataset`` shape every format reader returns.

A reader (npz, NIfTI, DICOM, PNG/JPEG) only lists its cases (``_records``: a cheap, structural table) and
reads one case's raw pixels (``_read_raw`` / ``_read_mask_raw``). Everything else — the cohort table with
per-case statistics (computed once, cached on disk), validation (NaN/Inf, mask shape/spacing, label
values), ``arrays()`` for model code and MONAI-ready ``items()`` + ``transform()`` — lives here, so every
format behaves the same.

Scaling choice for ``arrays()`` / ``transform()``: 8-bit sources (MedMNIST npz, PNG/JPEG) are divided by
255 so intensities keep their meaning across images; scanner data (NIfTI, DICOM: CT in HU, MRI) is min-max
scaled per image to [0, 1]. ``load_image`` returns the raw intensities (float32) without scaling.
"""
from __future__ import annotations

import unicodedata
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medwb.data.cache import StatsCache, file_key, stats_cache_files
from medwb.data.hashing import phash, pixel_sha256
from medwb.errors import DataError

SPLITS = ("train", "val", "test", "unlabelled")
SUBGROUP_HINTS = ("sex", "age", "site")  # read from DICOM headers when present
#: cohort columns that are bookkeeping, never subgroups (even when a metadata table brings them, e.g. patient_id)
TECHNICAL_COLUMNS = frozenset({
    "case_id", "split", "label", "mask", "mask2", "modality", "ndim", "shape", "channels", "spacing",
    "intensity_min", "intensity_max", "intensity_mean", "intensity_std", "source", "sha256", "phash", "problem",
    "npz_split", "npz_index", "n_files", "patient_id",
})
COHORT_COLUMNS = [
    "case_id", "split", "label", "mask", "mask2", "modality", "ndim", "shape", "channels", "spacing",
    "intensity_min", "intensity_max", "intensity_mean", "intensity_std", "source", "sha256",
]
STAT_COLUMNS = ["shape", "channels", "intensity_min", "intensity_max", "intensity_mean", "intensity_std",
                "sha256", "phash", "dtype", "spacing_read", "problem"]


def fmt_dims(values: Sequence[float | int]) -> str:
    """(512, 512, 20) -> '512x512x20'; spacings keep up to 6 significant digits."""
    return "x".join(f"{v:.6g}" if isinstance(v, float) else str(int(v)) for v in values)


def parse_dims(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in str(text).split("x"))


class Dataset:
    """A medical-imaging dataset: a cohort table (one row per case) plus lazy pixel access.

    Attributes follow the data contract: ``name``, ``task`` ("classification" | "segmentation"),
    ``ndim`` (2 | 3), ``modality``, ``classes`` (index/label value -> name), ``cohort`` (DataFrame),
    ``path`` and ``notes`` (things skipped or assumed while opening, e.g. DICOM objects without pixels).
    """

    name: str
    task: str
    ndim: int
    modality: str
    classes: dict[int, str]

    def __init__(self, path: str | Path, *, name: str, task: str, ndim: int, modality: str,
                 classes: Mapping[int, str], records: pd.DataFrame, cache_dir: str | Path | None = None,
                 metadata: str | Path | pd.DataFrame | None = None, progress: bool = True) -> None:
        self.path = Path(path)
        self.name, self.task, self.ndim, self.modality = name, task, int(ndim), modality
        self.classes = normalize_classes(classes, self.path)
        self.notes: list[str] = []
        #: cases whose layout promises a mask that is not there (images/ without a matching mask file)
        self.missing_masks: list[str] = []
        self._cache_dir = cache_dir
        self._progress = progress
        self._image_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cohort: pd.DataFrame | None = None
        records, self._declared_subgroups = prepare_records(records, task=task, modality=modality,
                                                            classes=self.classes, metadata=metadata,
                                                            where=self.path)
        self._records = records
        self._rows = {cid: i for i, cid in enumerate(records["case_id"])}

    # ---- what a reader implements -------------------------------------------------------------------
    def _read_raw(self, row: Mapping[str, Any]) -> np.ndarray:
        """Channel-first raw pixels of one case in their stored dtype. Raise DataError on bad files."""
        raise NotImplementedError

    def _read_mask_raw(self, row: Mapping[str, Any], ref: str) -> np.ndarray:
        """Label map for one mask reference, shape (1, *spatial), integer label values."""
        raise NotImplementedError(f"{type(self).__name__} has no masks")

    def _stat_key(self, row: Mapping[str, Any]) -> str:
        """Cache key of one case's pixel statistics: changes when its file(s) change."""
        return file_key(row["source"], extra=str(row["case_id"]))

    def _case_spacing(self, row: Mapping[str, Any]) -> tuple[float, ...] | None:
        sp = row.get("spacing")
        return parse_dims(sp) if isinstance(sp, str) and sp else None

    def _compute_stats(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Per-case statistics for the given rows (default: read each case; npz overrides with a vector pass)."""
        out = []
        for row in tqdm(rows.to_dict("records"), total=len(rows), desc=f"{self.name}: image statistics",
                           disable=not self._progress or len(rows) < 50, leave=False):
            out.append(self._stats_of_row(row))
        return pd.DataFrame(out, index=rows.index, columns=STAT_COLUMNS)

    def _stats_of_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        try:
            raw = self._read_raw(row)
            self._validate_values(raw, row)
        except DataError as e:
            return {c: None for c in STAT_COLUMNS} | {"problem": str(e)}
        sp = self._case_spacing(row)
        return image_stats(raw, self.ndim) | {"spacing_read": fmt_dims(sp) if sp else None}

    # ---- cohort -------------------------------------------------------------------------------------
    @property
    def stats_cache_file(self) -> Path:
        """Where the per-case statistics are cached (outside any study: a study registers it for purge)."""
        return stats_cache_files(self.path, self._cache_dir)[0]

    @property
    def records(self) -> pd.DataFrame:
        """The reader's structural case table (source, split, label, mask; no pixel statistics): cheap."""
        return self._records

    @property
    def cohort(self) -> pd.DataFrame:
        """One row per case (see COHORT_COLUMNS; plus ``phash``, ``problem`` and any subgroup columns).

        Built on first access: per-case statistics come from the on-disk cache or are computed once
        (tqdm progress). A case whose file cannot be read gets empty statistics and a ``problem`` text;
        ``load_image`` raises the matching DataError and ``medwb check`` lists it.
        """
        if self._cohort is None:
            self._cohort = self._build_cohort()
        return self._cohort

    def _build_cohort(self) -> pd.DataFrame:
        return add_statistics(self._records, stat_key=self._stat_key, compute=self._compute_stats,
                              cache=StatsCache(self.path, self._cache_dir), name=self.name, where=self.path)

    # ---- pixels -------------------------------------------------------------------------------------
    def subgroup_columns(self, *, max_levels: int | None = None) -> list[str]:
        """Cohort columns that describe patient subgroups (sex, age, site, ...): medwb's one definition.

        The columns the source declares (a joined ``metadata.csv`` / metadata table, DICOM sex/age/site tags),
        never bookkeeping (``TECHNICAL_COLUMNS``) or reader columns (HC18's pixel size, npz indices). With
        ``max_levels``, only those a per-group analysis can split on: 2..``max_levels`` distinct values (the
        validation report uses 12; the explore tables bin numeric columns instead, so they pass None).
        """
        cols = list(self._declared_subgroups)
        if max_levels is None:
            return cols
        return [c for c in cols if 2 <= self._records[c].nunique(dropna=True) <= max_levels]

    def _row(self, case_id: str) -> pd.Series:
        try:
            return self._records.iloc[self._rows[str(case_id)]]
        except KeyError:
            raise KeyError(f"{self.name}: no case {case_id!r}") from None

    def case_ids(self, split: str | None = None) -> list[str]:
        return self._records.loc[slice(None) if split is None else self._records["split"] == split, "case_id"].tolist()

    def load_raw(self, case_id: str) -> np.ndarray:
        """Validated channel-first pixels in their stored dtype (uint8 stays uint8)."""
        row = self._row(case_id)
        key = str(case_id)
        if key in self._image_cache:
            self._image_cache.move_to_end(key)
            return self._image_cache[key]
        raw = self._read_raw(row)
        self._validate_values(raw, row)
        self._image_cache[key] = raw
        if len(self._image_cache) > 32:  # small LRU: lazy access must not grow into the whole set
            self._image_cache.popitem(last=False)
        return raw

    def load_image(self, case_id: str) -> np.ndarray:
        """float32 channel-first (C,H,W) or (C,H,W,D) raw intensities of one case."""
        return self.load_raw(case_id).astype(np.float32, copy=False)

    def load_mask(self, case_id: str, observer: int = 1) -> np.ndarray | None:
        """int64 label map (1,H,W[,D]) from observer 1 (``mask``) or 2 (``mask2``); None if the case has none.

        Raises DataError if the mask file is missing or unreadable, if its shape or spacing differs from
        the image, or if it holds label values outside ``classes``.
        """
        row = self._row(case_id)
        ref = row.get("mask" if observer == 1 else f"mask{observer}")
        if not isinstance(ref, str) or not ref:
            return None
        if not Path(ref).exists() and "::" not in ref:
            raise DataError(ref, f"mask of case {case_id!r} (observer {observer}) is missing",
                            "restore the mask file or remove the case from the label folder")
        mask = self._read_mask_raw(row, ref)
        img_shape = self._spatial_shape(row)
        if tuple(mask.shape[1:]) != img_shape:
            raise DataError(ref, f"mask shape {fmt_dims(mask.shape[1:])} does not match image shape "
                            f"{fmt_dims(img_shape)} of case {case_id!r} ({row['source']})",
                            "use the mask made for this image (same size), or resample it to the image grid")
        mask_sp = self._mask_spacing(row, ref)
        img_sp = self._case_spacing(row)
        if mask_sp is not None and img_sp is not None and not np.allclose(mask_sp, img_sp, rtol=1e-3, atol=1e-4):
            raise DataError(ref, f"mask spacing {fmt_dims(mask_sp)} differs from image spacing "
                            f"{fmt_dims(img_sp)} of case {case_id!r}",
                            "resample the mask onto the image grid (same spacing and size)")
        bad = np.setdiff1d(np.unique(mask), np.array(sorted(self.classes)))
        if len(bad):
            raise DataError(ref, f"mask holds label value(s) {bad.tolist()[:10]} outside the declared classes "
                            f"{sorted(self.classes)}", "fix the mask values or declare the labels "
                            "(dataset.json 'labels' or open_dataset(..., classes=...))")
        return mask.astype(np.int64, copy=False)

    def spatial_shape(self, case_id: str) -> tuple[int, ...]:
        """The image's own spatial size: from the file header where the format has one (NIfTI, DICOM, PNG)."""
        return self._spatial_shape(self._row(case_id))

    def _spatial_shape(self, row: Mapping[str, Any]) -> tuple[int, ...]:
        return tuple(self.load_raw(row["case_id"]).shape[1:])

    def _mask_spacing(self, row: Mapping[str, Any], ref: str) -> tuple[float, ...] | None:
        return None

    def affine(self, case_id: str) -> np.ndarray:
        """4x4 voxel-to-world (RAS, mm) matrix; for 2D and npz data a diagonal from the spacing."""
        row = self._row(case_id)
        sp = self._case_spacing(row) or (1.0,) * self.ndim
        a = np.eye(4)
        for i, s in enumerate(list(sp)[:3]):
            a[i, i] = s
        return a

    def _validate_values(self, raw: np.ndarray, row: Mapping[str, Any]) -> None:
        if raw.dtype.kind == "f":
            bad = ~np.isfinite(raw)
            if bad.any():
                raise DataError(row["source"], f"case {row['case_id']!r} has {int(bad.sum())} NaN/Inf voxel(s)",
                                "re-export the image without NaN/Inf (e.g. replace them with the background "
                                "value) or exclude the case")

    # ---- model-ready arrays -------------------------------------------------------------------------
    #: 8-bit formats (MedMNIST, PNG/JPEG) keep a fixed /255 scale; scanner data (NIfTI, DICOM) is min-max
    #: scaled per image, since its stored dtype (uint8 in one file, float in the next) says nothing about range.
    fixed_uint8_range: bool = True

    def scale(self, raw: np.ndarray) -> np.ndarray:
        return scale_01(raw, fixed_uint8=self.fixed_uint8_range)

    #: readers whose files may differ in channel count (a PNG/JPEG folder mixing grey and colour files); for
    #: them the common channel count is taken over the whole dataset (cohort statistics), so every split agrees.
    may_mix_channels: bool = False

    def common_channels(self, loaded: Mapping[str, int] | None = None) -> int | None:
        """Channel count ``arrays()`` / ``transform()`` give every case; None when the cases already agree.

        Rule: grey and RGB mixed -> 3 (a grey image is repeated into R=G=B: nothing invented, nothing lost).
        Any other mix (e.g. 1 and 4 MRI sequences) has no safe rule and is a DataError naming two cases.
        ``loaded``: case_id -> channels of the cases at hand (added to the dataset-wide counts).
        """
        per_case: dict[str, int] = dict(loaded or {})
        if self.may_mix_channels:
            for cid, ch in self._case_channels().items():
                per_case.setdefault(cid, ch)
        counts = set(per_case.values())
        if len(counts) <= 1:
            return None
        if counts == {1, 3}:
            return 3
        lo, hi = min(counts), max(counts)
        a = next(k for k, v in per_case.items() if v == lo)
        b = next(k for k, v in per_case.items() if v == hi)
        src = self._records.set_index("case_id")["source"]
        raise DataError(src.get(a, a), f"cases have different channel counts {sorted(counts)} (case {a!r}: {lo}, "
                        f"case {b!r} ({src.get(b, b)}): {hi}); only grey and RGB can be combined",
                        "store every case with the same channels (e.g. the same MRI sequences), or open the "
                        "differing cases as separate datasets")

    def _case_channels(self) -> dict[str, int]:
        """case_id -> channel count for every readable case (readers may answer from file headers)."""
        c = self.cohort
        return {str(cid): int(ch) for cid, ch in zip(c["case_id"], c["channels"]) if pd.notna(ch)}

    @staticmethod
    def to_channels(x: np.ndarray, channels: int | None) -> np.ndarray:
        if channels is None or x.shape[0] == channels:
            return x
        return np.repeat(x, channels, axis=0)  # grey -> R=G=B (common_channels allows only 1 -> 3)

    def arrays(self, split: str, size: Sequence[int] | None = None, max_cases: int | None = None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(X, y, case_ids) for one split. X float32 (N,C,H,W[,D]) in [0,1] (see module doc for scaling);
        y int64 (N,) for classification, int64 masks (N,1,H,W[,D]) for segmentation (-1 / absent: no label).

        ``size`` resizes with MONAI (images bilinear/trilinear, masks nearest) so variable-size sets stack;
        ``max_cases`` takes a seeded random subset (kept in cohort order).
        """
        ids = self.case_ids(split)
        if not ids:
            raise KeyError(f"{self.name}: split {split!r} has no cases (splits: "
                           f"{sorted(self._records['split'].unique())})")
        ids = subsample(ids, max_cases, seed)
        return self.inputs(ids, size, what=f"split {split!r}"), case_targets(self, ids, size), ids

    def inputs(self, case_ids: Sequence[str], size: Sequence[int] | None = None, *,
               what: str = "the cases asked for") -> np.ndarray:
        """Model inputs (float32 (N,C,H,W[,D]) in [0,1], common channels, resized to ``size``) of ``case_ids``:
        one way for a split (:meth:`arrays`) and a pool's shard (``medwb.compute``), so both see the same numbers."""
        ids = [str(c) for c in case_ids]
        # each case resized as soon as it is read (per channel, so before the grey -> RGB repeat gives the same
        # numbers): memory holds the cases at the model's size, never the whole list at the stored size
        xs = [x if size is None else resize(x, size, "image")
              for x in (self.scale(self.load_raw(c)) for c in tqdm(ids, desc=f"{self.name}: loading {what}",
                                                                   leave=False, disable=not self._progress
                                                                   or len(ids) < 200))]
        channels = self.common_channels({cid: x.shape[0] for cid, x in zip(ids, xs)})
        xs = [self.to_channels(x, channels) for x in xs]
        if len(shapes := sorted({x.shape for x in xs})) > 1:
            raise DataError(self.path, f"cases in {what} of {self.name} have different image sizes ({shapes[:3]}"
                            "...)", "pass size=(H, W[, D]) to arrays() to resize them")
        return np.stack(xs).astype(np.float32, copy=False)

    # ---- MONAI ----------------------------------------------------------------------------------------
    def items(self, split: str | None = None) -> list[dict[str, Any]]:
        """MONAI-style data dicts of a split (:func:`medwb.data.monai_io.monai_items`)."""
        from medwb.data.monai_io import monai_items

        return monai_items(self, split)

    def transform(self, size: Sequence[int] | None = None):  # -> monai.transforms.Compose
        """MONAI Compose that loads through this dataset (:func:`medwb.data.monai_io.monai_transform`)."""
        from medwb.data.monai_io import monai_transform

        return monai_transform(self, size)

    def __repr__(self) -> str:
        counts = self._records["split"].value_counts().to_dict()
        return (f"<medwb Dataset {self.name!r}: {self.task}, {self.ndim}D {self.modality}, "
                f"{len(self._records)} cases {counts}, classes {self.classes}>")

    def __len__(self) -> int:
        return len(self._records)



def case_targets(dataset: Dataset, case_ids: Sequence[str], size: Sequence[int] | None = None) -> np.ndarray:
    """Ground truth of ``case_ids`` as :meth:`Dataset.arrays` gives it: int64 classes (N,) (-1: no label), or
    int64 masks (N, 1, *size) resized nearest (-1 everywhere: no mask)."""
    ids = [str(c) for c in case_ids]
    if dataset.task == "classification":
        return dataset.records.set_index("case_id").loc[ids, "label"].fillna(-1).to_numpy(dtype=np.int64)
    ys = []
    for cid in ids:
        m = dataset.load_mask(cid)
        m = np.full((1, *dataset.spatial_shape(cid)), -1, dtype=np.int64) if m is None else m
        ys.append(m if size is None else resize(m, size, "mask"))
    return np.stack(ys).astype(np.int64, copy=False)


def scale_01(raw: np.ndarray, fixed_uint8: bool = True) -> np.ndarray:
    """uint8 -> /255 (keeps meaning across images); anything else -> per-image min-max to [0,1]."""
    if fixed_uint8 and raw.dtype == np.uint8:
        return raw.astype(np.float32) / 255.0
    x = raw.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


#: how label maps are resized: torch's "nearest" picks source voxel floor(i * scale), half a voxel off the centre
#: the linear resize of the image uses, so a mask drifted against its image by up to a voxel (hippocampus masks
#: resized to 32x48x32 and back: Dice 0.729 with the truth; "nearest-exact", centre-aligned: 0.965)
MASK_RESIZE_MODE = "nearest-exact"


def resize(x: np.ndarray, size: Sequence[int], kind: str) -> np.ndarray:
    """MONAI Resize of one channel-first array; images linear, masks nearest (centre-aligned with the image's
    resize, :data:`MASK_RESIZE_MODE`; label values kept)."""
    from monai.transforms import Resize

    spatial = x.ndim - 1
    if len(size) != spatial:
        raise ValueError(f"size {tuple(size)} has {len(size)} dims but the data is {spatial}D")
    if tuple(x.shape[1:]) == tuple(size):
        return x
    mode = MASK_RESIZE_MODE if kind == "mask" else ("bilinear" if spatial == 2 else "trilinear")
    out = Resize(spatial_size=tuple(size), mode=mode, anti_aliasing=False)(x.astype(np.float32))
    out = np.asarray(out)
    return out.round().astype(np.int64) if kind == "mask" else out.astype(np.float32)


def subsample(ids: list[str], max_cases: int | None, seed: int) -> list[str]:
    if max_cases is None or max_cases >= len(ids):
        return list(ids)
    pick = np.sort(np.random.default_rng(seed).choice(len(ids), size=max_cases, replace=False))
    return [ids[i] for i in pick]


def default_size(dataset: Dataset) -> tuple[int, ...] | None:
    """Training size: None for fixed-size classification sets; otherwise the median shape rounded to a multiple
    of 16 (UNet-friendly) and capped for CPU (2D 128, 3D 48)."""
    shapes = [s for s in dataset.cohort["shape"].dropna().astype(str)]
    dims = np.array([[int(float(v)) for v in s.split("x")] for s in shapes])
    if dataset.task == "classification" and (dims == dims[0]).all():
        return None
    cap = 128 if dataset.ndim == 2 else 48
    med = np.median(dims, axis=0)
    return tuple(int(min(cap, max(16, 16 * round(m / 16)))) for m in med)


def image_stats(raw: np.ndarray, spatial_dims: int) -> dict[str, Any]:
    x = raw.astype(np.float64, copy=False)
    return {
        "spacing_read": None, "shape": fmt_dims(raw.shape[1:]), "channels": int(raw.shape[0]),
        "intensity_min": float(x.min()), "intensity_max": float(x.max()),
        "intensity_mean": float(x.mean()), "intensity_std": float(x.std()),
        "sha256": pixel_sha256(raw), "phash": phash(raw, spatial_dims=min(raw.ndim - 1, 3)),
        "dtype": raw.dtype.name, "problem": None,
    }


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if v is pd.NA or (isinstance(v, float) and v != v):
        return None
    return v


def _join_metadata(records: pd.DataFrame, metadata: str | Path | pd.DataFrame, where: Path) -> pd.DataFrame:
    """Left-join a subgroup table (sex, age, site, ...) on case_id; unknown ids are an error (typos)."""
    if isinstance(metadata, pd.DataFrame):
        table, src = metadata.copy(), "metadata table"
    else:
        src = str(metadata)
        try:
            table = pd.read_csv(metadata)
        except (OSError, ValueError) as e:
            raise DataError(metadata, f"cannot read metadata table ({e})", "give a readable CSV with a case_id column") from e
    if "case_id" not in table:
        raise DataError(src, "metadata table has no 'case_id' column",
                        f"add a case_id column with ids as in the cohort (e.g. {records['case_id'].iloc[0]!r})")
    table["case_id"] = table["case_id"].astype(str)
    unknown = set(table["case_id"]) - set(records["case_id"])
    if unknown:
        raise DataError(src, f"{len(unknown)} case id(s) not in the dataset at {where}, e.g. "
                        f"{sorted(unknown)[:3]}", "use the ids from the cohort table (ds.cohort.case_id)")
    if table["case_id"].duplicated().any():
        raise DataError(src, "metadata table lists a case_id twice", "keep one row per case")
    protected = {"case_id", "source", "mask", "mask2", "sha256"}
    cols = [c for c in table.columns if c not in protected]
    over = [c for c in cols if c in records.columns]
    merged = records.drop(columns=over).merge(table[["case_id", *cols]], on="case_id", how="left")
    if "split" in over:
        merged["split"] = merged["split"].fillna(records["split"])
    if "label" in over:
        merged["label"] = merged["label"].astype("Int64")
    return merged


def class_name(text: object) -> str:
    """A class name in Unicode NFC: "Café" typed on Linux (NFC) and copied from macOS (NFD) must be one class."""
    return unicodedata.normalize("NFC", str(text))


def normalize_classes(classes: Mapping[int, str], where: Path) -> dict[int, str]:
    """``index -> name`` with NFC names; two indices whose names only differ in Unicode form are an error."""
    out = {int(k): class_name(v) for k, v in classes.items()}
    seen: dict[str, int] = {}
    for k, v in out.items():
        if v in seen:
            raise DataError(where, f"classes {seen[v]} and {k} have the same name {v!r} (written in two Unicode "
                            "forms, e.g. NFC and NFD)", "give each class one name, or merge the two classes")
        seen[v] = k
    return out


def prepare_records(records: pd.DataFrame, *, task: str, modality: str, classes: Mapping[int, str],
                    metadata: str | Path | pd.DataFrame | None, where: Path) -> tuple[pd.DataFrame, list[str]]:
    """A reader's case table made uniform (unique ids, default columns, typed labels and masks, metadata
    joined, labels checked) and the subgroup columns the source declares."""
    records = records.reset_index(drop=True)
    dup = records["case_id"][records["case_id"].duplicated()]
    if len(dup):
        first = dup.iloc[0]
        srcs = records.loc[records["case_id"] == first, "source"].tolist()
        raise DataError(srcs[-1], f"duplicate case id {first!r} (also from {srcs[0]}); "
                        f"{dup.nunique()} case id(s) occur more than once",
                        "give every case a unique file name (or unique id column) and open again")
    for col, default in (("label", pd.NA), ("mask", None), ("mask2", None), ("modality", modality),
                         ("spacing", None)):
        if col not in records:
            records[col] = default
    records["label"] = records["label"].astype("Int64")
    # subgroup columns the source declares (DICOM sex/age/site, a joined metadata table): subgroup_columns()
    declared = [c for c in SUBGROUP_HINTS if c in records and records[c].notna().any()]
    if metadata is not None:
        before = set(records.columns)
        records = _join_metadata(records, metadata, where)
        declared += [c for c in records.columns if c not in before and c not in declared]
    declared = [c for c in declared if c not in TECHNICAL_COLUMNS]
    for col in ("mask", "mask2"):  # str or None (object dtype, so pandas keeps None rather than NaN)
        records[col] = pd.Series([v if isinstance(v, str) and v else None for v in records[col]],
                                 index=records.index, dtype=object)
    check_labels(records, task=task, classes=classes)
    return records, declared


def check_labels(records: pd.DataFrame, *, task: str, classes: Mapping[int, str]) -> None:
    """A classification label outside the declared classes is an error naming the first such case."""
    if task != "classification":
        return
    lab = records["label"].dropna()
    neg = lab[lab < 0]
    if len(neg):  # -1 is how medwb marks an unlabelled case (arrays()): a negative class would be read as one
        first = records.loc[neg.index[0]]
        raise DataError(first["source"], f"{len(neg)} invalid label(s): negative values "
                        f"{sorted(set(neg.astype(int)))[:10]} (first: case {first['case_id']!r}) are not class "
                        "indices (-1 usually marks 'unknown')",
                        "give those cases a class index 0..K-1, or leave them out of the labels (unlabelled)")
    bad = lab[~lab.isin(list(classes))]
    if len(bad):
        first = records.loc[bad.index[0]]
        raise DataError(first["source"], f"{len(bad)} label(s) outside the declared classes "
                        f"{sorted(classes)}: values {sorted(set(bad.astype(int)))[:10]} "
                        f"(first: case {first['case_id']!r})",
                        "fix the labels, or declare every class (open_dataset(..., classes={...}))")


def add_statistics(records: pd.DataFrame, *, stat_key: Callable[[Mapping[str, Any]], str],
                   compute: Callable[[pd.DataFrame], pd.DataFrame], cache: StatsCache, name: str,
                   where: Path) -> pd.DataFrame:
    """The cohort table: ``records`` plus per-case pixel statistics, from ``cache`` or ``compute``-d once
    (new ones are cached); unreadable cases keep empty statistics and a ``problem`` text (one warning)."""
    rec = records.copy()
    keys, cached, missing = [], {}, []
    for i, row in zip(rec.index, rec.to_dict("records")):
        try:
            k = stat_key(row)
        except OSError:
            k = None
        keys.append(k)
        hit = cache.get(k) if k else None
        if hit is not None:
            cached[i] = hit
        else:
            missing.append(i)
    stats = pd.DataFrame.from_dict(cached, orient="index", columns=STAT_COLUMNS) if cached else None
    if missing:
        new = compute(rec.loc[missing])
        for i, vals in zip(new.index, new[STAT_COLUMNS].to_dict("records")):
            if keys[i] and not vals.get("problem"):
                cache.put(keys[i], {c: _plain(v) for c, v in vals.items()})
        cache.save()
        stats = new if stats is None else pd.concat([stats, new])
    stats = stats.reindex(rec.index) if stats is not None else pd.DataFrame(index=rec.index,
                                                                             columns=STAT_COLUMNS)
    for c in STAT_COLUMNS:
        rec[c] = stats[c].to_numpy()
    rec["ndim"] = [len(parse_dims(s)) if isinstance(s, str) else pd.NA for s in rec["shape"]]
    rec["ndim"] = rec["ndim"].astype("Int64")
    rec["channels"] = rec["channels"].astype("Int64")
    for c in ("intensity_min", "intensity_max", "intensity_mean", "intensity_std"):
        rec[c] = pd.to_numeric(rec[c], errors="coerce").astype("float64")
    # spacing: from the listing, else what the reader found in the file header, else pixel units
    rec["spacing"] = [s if isinstance(s, str) else (r if isinstance(r, str) else (
        fmt_dims([1.0] * len(parse_dims(sh))) if isinstance(sh, str) else None))
        for s, r, sh in zip(rec["spacing"], rec.pop("spacing_read"), rec["shape"])]
    rec = rec.drop(columns=["dtype"])  # kept in the stats cache only (scaling is decided per reader)
    front = [c for c in COHORT_COLUMNS if c in rec]
    rest = [c for c in rec.columns if c not in front]
    n_bad = int(rec["problem"].notna().sum())
    if n_bad:
        warnings.warn(f"{name}: {n_bad} case(s) could not be read (see cohort['problem'] or "
                      f"`medwb check {where}`)", stacklevel=4)
    return rec[front + rest]
