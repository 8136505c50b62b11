"""``medwb check``: a data-quality report that lists every problem instead of stopping at the first.

What is checked: the dataset opens (structure, declared classes, unique case ids); every image reads
(truncated/corrupt files, NaN/Inf); every mask reads and matches its image (shape, spacing, label
values); masks that the layout promises but are absent; exact duplicates (same pixel sha256) and near
duplicates (perceptual-hash Hamming distance <= ``near_duplicate_distance``), flagged when they cross
splits (train/val/test leakage). Plus counts per split and class, shapes, spacings and intensity ranges.

Errors (unreadable or inconsistent data) make ``medwb check`` exit non-zero. Duplicates and missing masks
are warnings: the data can still be used, but leakage must be handled (drop or regroup the copies) before
a test result means anything.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medwb.data.hashing import near_duplicate_pairs, shrink
from medwb.errors import DataError

DUP_COLUMNS = ["kind", "distance", "similarity", "case_a", "split_a", "case_b", "split_b", "cross_split", "source_a", "source_b"]


@dataclass
class QualityReport:
    """Result of :func:`check_dataset`. ``errors`` non-empty means the data is not usable as it is."""

    path: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict[str, object] = field(default_factory=dict)
    counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    shapes: pd.DataFrame = field(default_factory=pd.DataFrame)
    intensity: pd.DataFrame = field(default_factory=pd.DataFrame)
    duplicates: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DUP_COLUMNS))
    cohort: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_text(self, max_items: int = 20) -> str:
        out = [f"medwb check: {self.path}"]
        if self.summary:
            s = self.summary
            out.append(f"dataset {s['name']!r}: {s['task']}, {s['ndim']}D {s['modality']}, {s['cases']} cases, "
                       f"classes {s['classes']}")
        for title, df in (("Cases per split and class", self.counts), ("Shapes (spatial) and spacing", self.shapes),
                          ("Intensity per split", self.intensity)):
            if not df.empty:
                out += ["", f"{title}:", df.to_string()]
        d = self.duplicates
        if self.summary:
            out += ["", "Duplicates (exact: same pixel sha256; near: perceptual-hash Hamming distance "
                    f"<= {self.summary.get('near_duplicate_distance')} and thumbnail correlation "
                    f">= {self.summary.get('near_duplicate_min_corr')}):"]
            for kind in ("exact", "near"):
                k = d[d["kind"] == kind]
                cross = k[k["cross_split"]]
                pairs = ", ".join(f"{a}-{b}: {n}" for (a, b), n in
                                  cross.groupby(["split_a", "split_b"]).size().items())
                out.append(f"  {kind}: {len(k)} pair(s), {len(cross)} across splits" + (f" ({pairs})" if pairs else ""))
            for _, r in d.sort_values(["cross_split", "kind", "distance"], ascending=[False, True, True]).head(
                    max_items).iterrows():
                out.append(f"    {r['kind']:5s} d={r['distance']} r={r['similarity']:.3f}  {r['case_a']} [{r['split_a']}]  ==  "
                           f"{r['case_b']} [{r['split_b']}]")
            if len(d) > max_items:
                out.append(f"    ... {len(d) - max_items} more (QualityReport.duplicates)")
        for title, items in (("Notes", self.notes), ("Warnings", self.warnings), ("Errors", self.errors)):
            if items:
                out += ["", f"{title} ({len(items)}):"] + [f"  - {m}" for m in items[:max_items]]
                if len(items) > max_items:
                    out.append(f"  ... {len(items) - max_items} more")
        out += ["", f"Result: {'OK' if self.ok else f'{len(self.errors)} error(s)'}, {len(self.warnings)} warning(s)"]
        return "\n".join(out)


def check_dataset(path: str | Path, near_duplicate_distance: int = 4, *, near_duplicate_min_corr: float = 0.95,
                  max_mask_cases: int | None = None, cache_dir: str | Path | None = None, progress: bool = True,
                  **open_options) -> QualityReport:
    """Open ``path`` and report every problem found (see module doc).

    Near duplicates: perceptual hashes within ``near_duplicate_distance`` bits are only candidates; a pair
    is reported when the two images' 32-pixel thumbnails also correlate >= ``near_duplicate_min_corr``
    (on PneumoniaMNIST a 64-bit hash alone pairs ~250 merely similar chest X-rays at distance 4). Thumbnails
    are block means to ~32-63 px per axis.

    ``max_mask_cases`` caps how many cases' masks are read and compared with their images (seeded sample;
    None = all); images are always all read once for the cohort statistics (cached afterwards).
    """
    from medwb.data import open_dataset

    rep = QualityReport(path=str(path))
    try:
        ds = open_dataset(path, cache_dir=cache_dir, progress=progress, **open_options)
    except DataError as e:
        rep.errors.append(str(e))
        return rep
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unreadable cases are listed below as errors
        c = ds.cohort
    rep.cohort = c
    rep.notes.extend(ds.notes)
    rep.summary = {"name": ds.name, "task": ds.task, "ndim": ds.ndim, "modality": ds.modality, "cases": len(c),
                   "classes": ds.classes, "near_duplicate_distance": near_duplicate_distance,
                   "near_duplicate_min_corr": near_duplicate_min_corr}
    rep.errors.extend(p for p in c["problem"].dropna())
    chans = c["channels"].dropna().astype(int).value_counts().sort_index()
    if len(chans) > 1:
        counts = ", ".join(f"{n} with {k} channel(s)" for k, n in chans.items())
        if set(chans.index) == {1, 3}:
            rep.warnings.append(f"grey and colour images mixed ({counts}): arrays()/transform() repeat grey "
                                "images into 3 channels (R=G=B); convert the files if that is not wanted")
        else:
            rep.errors.append(f"{path}: cases have different channel counts ({counts}). Fix: store every case "
                              "with the same channels, or open the differing cases as separate datasets")

    # masks: every reference read and compared with its image
    if ds.task == "segmentation":
        obs_cols = [col for col in c.columns if (col == "mask" or (col.startswith("mask") and col[4:].isdigit()))
                    and (col == "mask" or c[col].notna().any())]
        todo = c[c[obs_cols].notna().any(axis=1) & c["problem"].isna()]
        if max_mask_cases is not None and len(todo) > max_mask_cases:
            todo = todo.sample(n=max_mask_cases, random_state=0).sort_index()
            rep.notes.append(f"masks checked for {max_mask_cases} of {len(c)} cases (max_mask_cases)")
        missing_files: list[str] = []
        for _, row in tqdm(todo.iterrows(), total=len(todo), desc=f"{ds.name}: masks",
                           disable=not progress or len(todo) < 50, leave=False):
            for col in obs_cols:
                ref = row[col]
                if not isinstance(ref, str):
                    continue
                if not Path(ref).exists():
                    missing_files.append(ref)
                    continue
                try:
                    ds.load_mask(row["case_id"], observer=1 if col == "mask" else int(col[4:]))
                except DataError as e:
                    rep.errors.append(str(e))
        if missing_files:
            rep.warnings.append(f"{len(missing_files)} mask file(s) listed but missing, e.g. {missing_files[:3]} "
                                "(loading them raises DataError; restore the files or drop the cases)")
        if ds.missing_masks:
            rep.warnings.append(f"{len(ds.missing_masks)} image(s) without a mask (split 'unlabelled'), e.g. "
                                f"{ds.missing_masks[:5]}")
        for col in obs_cols[1:]:
            n = int((c["mask"].notna() & c[col].isna()).sum())
            if n:
                rep.warnings.append(f"observer {col[4:]} has no mask for {n} case(s) that observer 1 labelled")

    rep.duplicates = find_duplicates(c, near_duplicate_distance, loader=ds.load_raw,
                                     min_corr=near_duplicate_min_corr)
    for kind in ("exact", "near"):
        k = rep.duplicates[rep.duplicates["kind"] == kind]
        cross = k[k["cross_split"]]
        if len(cross):
            rep.warnings.append(f"{len(cross)} {kind}-duplicate pair(s) across splits "
                                f"({', '.join(f'{a}-{b}: {n}' for (a, b), n in cross.groupby(['split_a', 'split_b']).size().items())})"
                                " - leakage: drop or regroup them before trusting test results")
        if len(k) - len(cross):
            rep.warnings.append(f"{len(k) - len(cross)} {kind}-duplicate pair(s) within a split")

    rep.counts, rep.shapes, rep.intensity = _tables(c, ds.task, ds.classes)
    return rep


def find_duplicates(cohort: pd.DataFrame, near_duplicate_distance: int = 4, *,
                    loader: Callable[[str], np.ndarray] | None = None, min_corr: float = 0.95) -> pd.DataFrame:
    """Exact (sha256) and near (perceptual hash, verified by thumbnail correlation when ``loader`` is given)
    duplicate pairs, one row per pair (see DUP_COLUMNS)."""
    rows = []
    c = cohort.reset_index(drop=True)
    for _, idx in c.dropna(subset=["sha256"]).groupby("sha256").groups.items():
        idx = sorted(idx)
        for j in idx[1:]:  # each copy paired with the first: n-1 rows for n copies
            rows.append(("exact", 0, 1.0, idx[0], j))
    if near_duplicate_distance >= 0 and "phash" in c:
        sha = c["sha256"].to_numpy()
        thumbs: dict[int, np.ndarray | None] = {}

        def thumb(i: int) -> np.ndarray | None:
            if i not in thumbs:
                try:
                    thumbs[i] = _thumbnail(loader(c.at[i, "case_id"])) if loader else None
                except DataError:
                    thumbs[i] = None
            return thumbs[i]

        for i, j, d in near_duplicate_pairs(c["phash"].tolist(), near_duplicate_distance):
            if sha[i] is not None and sha[i] == sha[j]:
                continue  # already an exact pair (or in the same exact group)
            ta, tb = thumb(i), thumb(j)
            r = _correlation(ta, tb) if ta is not None and tb is not None else float("nan")
            if loader is None or r >= min_corr:
                rows.append(("near", d, r, i, j))
    out = pd.DataFrame([{
        "kind": k, "distance": d, "similarity": r, "case_a": c.at[i, "case_id"], "split_a": c.at[i, "split"],
        "case_b": c.at[j, "case_id"], "split_b": c.at[j, "split"], "cross_split": c.at[i, "split"] != c.at[j, "split"],
        "source_a": c.at[i, "source"], "source_b": c.at[j, "source"]} for k, d, r, i, j in rows], columns=DUP_COLUMNS)
    out["cross_split"] = out["cross_split"].astype(bool)
    # name split pairs in a fixed order (train-val, not val-train)
    order = {"train": 0, "val": 1, "test": 2, "unlabelled": 3}
    swap = out["split_a"].map(order).fillna(9) > out["split_b"].map(order).fillna(9)
    for a, b in (("case_a", "case_b"), ("split_a", "split_b"), ("source_a", "source_b")):
        out.loc[swap, [a, b]] = out.loc[swap, [b, a]].to_numpy()
    return out


def _thumbnail(raw: np.ndarray) -> np.ndarray:
    """Channel mean, block-averaged by whole factors to roughly 32-63 px per axis (no interpolation: cheap)."""
    x = np.ascontiguousarray(raw, dtype=np.float32).mean(axis=0)
    f = [max(1, s // 32) for s in x.shape]
    if any(v > 1 for v in f):
        x = x[tuple(slice(0, (s // v) * v) for s, v in zip(x.shape, f))]
        shape: list[int] = []
        for s, v in zip(x.shape, f):
            shape += [s // v, v]
        x = x.reshape(shape).mean(axis=tuple(range(1, 2 * len(f), 2)))
    return x


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two thumbnails (resampled to 32 px per axis when their shapes differ)."""
    if a.shape != b.shape:
        a, b = shrink(a[None], 32)[0], shrink(b[None], 32)[0]
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float(np.array_equal(a, b))


def _tables(c: pd.DataFrame, task: str, classes: dict[int, str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    if task == "classification":
        lab = c["label"].map(lambda v: "(none)" if pd.isna(v) else f"{int(v)} {classes.get(int(v), '?')}")
    else:
        lab = np.where(c["mask"].notna(), "with mask", "no mask")
        if "mask2" in c and c["mask2"].notna().any():
            lab = np.where(c["mask2"].notna() & c["mask"].notna(), "two observers", lab)
    counts = pd.crosstab(c["split"], pd.Series(lab, index=c.index, name="class"), margins=True, margins_name="total")
    shapes = c.groupby(["shape", "spacing"], dropna=False).size().rename("cases").sort_values(ascending=False)
    shapes = shapes.head(10).to_frame()
    inten = c.groupby("split").agg(min=("intensity_min", "min"), max=("intensity_max", "max"),
                                   mean=("intensity_mean", "mean"), std=("intensity_std", "mean"))
    return counts, shapes, inten.round(3)
