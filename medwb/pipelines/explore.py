"""What is in a dataset: the logic behind ``notebooks/01_explore.ipynb`` and ``medwb explore``.

Plain functions over a ``medwb.data`` dataset returning DataFrames or matplotlib Figures, so the notebook
stays thin and every number it shows is testable. Pixel-reading steps look at a seeded random subset of at
most ``max_cases`` cases (tqdm progress); table-only steps use the whole cohort (its statistics and hashes
were computed once by the data layer and are cached).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medwb.ui.view import LABEL_COLORS, STATIC_ENV, focus_index, spatial_array, static_views_enabled, to_rgb

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset
    from medwb.privacy.crypto import Key

SPLIT_ORDER = ["train", "val", "test", "unlabelled"]


def _splits(cohort: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(cohort["split"].astype(str)))
    return [s for s in SPLIT_ORDER if s in present] + [s for s in present if s not in SPLIT_ORDER]


def sample_case_ids(ds: Dataset, max_cases: int | None, *, seed: int = 0, split: str | None = None) -> list[str]:
    """A seeded random subset of readable case ids (cohort order kept), at most ``max_cases``."""
    c = ds.cohort
    if "problem" in c:
        c = c[c["problem"].isna()]
    if split is not None:
        c = c[c["split"] == split]
    ids = c["case_id"].astype(str).tolist()
    if max_cases is None or len(ids) <= max_cases:
        return ids
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(ids), size=max_cases, replace=False))
    return [ids[i] for i in keep]


def class_name(ds: Dataset, value: Any) -> str:
    if pd.isna(value):
        return "unlabelled"
    return ds.classes.get(int(value), str(value))


# ---- tables -------------------------------------------------------------------------------------------------
def overview_table(ds: Dataset) -> pd.DataFrame:
    """One row per property: what the dataset is, how big, which shapes/spacings/intensities it holds."""
    c = ds.cohort
    shapes = c["shape"].dropna().astype(str).value_counts()
    spacings = c["spacing"].dropna().astype(str).value_counts()
    rows: list[tuple[str, Any]] = [
        ("name", ds.name),
        ("source", str(getattr(ds, "path", ""))),
        ("task", ds.task),
        ("dimensions", f"{ds.ndim}D"),
        ("modality", ds.modality),
        ("classes", ", ".join(f"{k}={v}" for k, v in sorted(ds.classes.items()))),
        ("cases", len(c)),
        ("cases per split", ", ".join(f"{s}: {int((c['split'] == s).sum())}" for s in _splits(c))),
    ]
    if ds.task == "classification":
        rows.append(("labelled cases", int(c["label"].notna().sum())))
    else:
        rows.append(("cases with a mask", int(c["mask"].notna().sum())))
        if "mask2" in c and c["mask2"].notna().any():
            rows.append(("cases with a second observer's mask", int(c["mask2"].notna().sum())))
    rows += [
        ("distinct shapes", f"{len(shapes)} (most common {shapes.index[0]} x{shapes.iloc[0]})" if len(shapes) else "-"),
        ("distinct spacings", f"{len(spacings)} (most common {spacings.index[0]})" if len(spacings) else "-"),
        ("channels", ", ".join(str(v) for v in sorted(c["channels"].dropna().unique()))),
        ("intensity range", f"{c['intensity_min'].min():.4g} .. {c['intensity_max'].max():.4g}"),
        ("mean intensity (median over cases)", f"{c['intensity_mean'].median():.4g}"),
    ]
    if "dtype" in c:
        rows.append(("stored dtype", ", ".join(sorted(c["dtype"].dropna().astype(str).unique()))))
    if "problem" in c:
        rows.append(("unreadable cases", int(c["problem"].notna().sum())))
    subs = ds.subgroup_columns()
    rows.append(("subgroup columns", ", ".join(subs) if subs else "none"))
    return pd.DataFrame(rows, columns=["property", "value"]).set_index("property")


def class_balance(ds: Dataset, *, max_cases: int | None = 2000, seed: int = 0) -> pd.DataFrame:
    """Cases per class and split (classification), or per label: cases containing it and mean voxel fraction.

    Segmentation reads the masks of at most ``max_cases`` cases (seeded subset).
    """
    c = ds.cohort
    if ds.task == "classification":
        names = c["label"].map(lambda v: class_name(ds, v))
        order = [ds.classes[k] for k in sorted(ds.classes)] + (["unlabelled"] if names.eq("unlabelled").any() else [])
        t = pd.crosstab(c["split"].astype(str), names).reindex(index=_splits(c), columns=order, fill_value=0)
        t.loc["all"] = t.sum()
        share = t.div(t.sum(axis=1), axis=0).mul(100).round(1)
        return pd.concat({"cases": t, "%": share}, axis=1)
    ids = [i for i in sample_case_ids(ds, max_cases, seed=seed)
           if isinstance(c.set_index("case_id").at[i, "mask"], str)]
    split_of = c.set_index(c["case_id"].astype(str))["split"].astype(str)
    recs = []
    for cid in tqdm(ids, desc="masks", leave=False, disable=len(ids) < 50 or static_views_enabled()):
        m = ds.load_mask(cid)
        if m is None:
            continue
        vals, counts = np.unique(m, return_counts=True)
        frac = dict(zip(vals.tolist(), (counts / m.size).tolist()))
        for k, name in ds.classes.items():
            recs.append({"split": split_of[cid], "label": name, "present": frac.get(k, 0.0) > 0,
                         "fraction": frac.get(k, 0.0)})
    if not recs:
        return pd.DataFrame(columns=["split", "label", "cases", "cases containing", "mean voxel %"])
    r = pd.DataFrame(recs)
    g = r.groupby(["split", "label"], sort=False)
    out = pd.DataFrame({"cases": g.size(), "cases containing": g["present"].sum().astype(int),
                        "mean voxel %": g["fraction"].mean().mul(100).round(3)}).reset_index()
    out["split"] = pd.Categorical(out["split"], [s for s in _splits(c) if s in set(out["split"])])
    return out.sort_values(["split"], kind="stable").reset_index(drop=True)


def subgroup_table(ds: Dataset, *, max_levels: int = 12) -> pd.DataFrame:
    """Cases per subgroup level and split (numeric columns binned in quartiles); empty if none present."""
    c = ds.cohort
    parts = []
    for col in ds.subgroup_columns():
        v = c[col]
        if pd.api.types.is_numeric_dtype(v) and v.nunique() > max_levels:
            v = pd.qcut(v, 4, duplicates="drop").astype(str)
        v = v.astype(str).where(v.notna(), "missing")
        if v.nunique() > max_levels:  # ids, free text: not a subgroup worth a table
            continue
        t = pd.crosstab(v, c["split"].astype(str)).reindex(columns=_splits(c), fill_value=0)
        t["all"] = t.sum(axis=1)
        if ds.task == "classification" and c["label"].notna().any() and len(ds.classes) == 2:
            pos = max(ds.classes)
            t[f"% {ds.classes[pos]}"] = (c.assign(_v=v).groupby("_v")["label"]
                                         .apply(lambda s: 100 * (s.dropna() == pos).mean()).round(1))
        t.index = pd.MultiIndex.from_product([[col], t.index], names=["column", "value"])
        parts.append(t)
    if not parts:
        return pd.DataFrame(columns=["column", "value", "all"])
    return pd.concat(parts)


def duplicate_table(ds: Dataset, *, near_duplicate_distance: int = 4, min_corr: float = 0.95) -> pd.DataFrame:
    """Exact (pixel sha256) and near (perceptual hash) duplicate pairs of the whole cohort, leaks first.

    The pairs come from the data layer's ``medwb.data.check.find_duplicates``, as in ``medwb check``: hash
    candidates from the cohort, near ones kept only if their thumbnails correlate >= ``min_corr`` (binary
    shape masks such as AdrenalMNIST3D share hashes without being copies).
    """
    from medwb.data.check import find_duplicates

    return sort_duplicates(find_duplicates(ds.cohort, near_duplicate_distance, loader=ds.load_raw,
                                           min_corr=min_corr))


def sort_duplicates(dups: pd.DataFrame) -> pd.DataFrame:
    """Pairs across splits (leakage) first, then exact before near, closest first."""
    return dups.sort_values(["cross_split", "kind", "distance"], ascending=[False, True, True],
                            kind="stable").reset_index(drop=True)


def leakage_summary(dups: pd.DataFrame) -> pd.DataFrame:
    """Counts of exact/near duplicate pairs within and across splits (the across-split ones leak)."""
    if dups.empty:
        return pd.DataFrame({"pairs": [0]}, index=pd.Index(["no duplicates found"], name="kind"))
    key = dups["kind"] + np.where(dups["cross_split"], " across splits (leak)", " within a split")
    return key.value_counts().rename("pairs").rename_axis("kind").to_frame()


def check_report(path: str | Path, *, near_duplicate_distance: int = 4, max_mask_cases: int | None = None,
                 progress: bool = True) -> Any:
    """The data engineer's ``medwb check`` report (errors, warnings, duplicates) for the same dataset."""
    from medwb.data.check import check_dataset

    return check_dataset(path, near_duplicate_distance=near_duplicate_distance, max_mask_cases=max_mask_cases,
                         progress=progress)


# ---- figures ------------------------------------------------------------------------------------------------
def plot_class_balance(ds: Dataset, table: pd.DataFrame):
    """Bar chart of :func:`class_balance` (cases per class per split, or cases containing each label)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.2), layout="constrained")
    ax = fig.subplots()
    if table.empty:  # e.g. a DICOM series with no labels or masks yet: say so instead of an empty chart
        ax.text(0.5, 0.5, "no labels or masks in this dataset yet", ha="center", va="center")
        ax.set_axis_off()
    elif ds.task == "classification":
        t = table["cases"].drop(index="all", errors="ignore")
        bottom = np.zeros(len(t))
        for k, col in enumerate(t.columns):
            ax.bar(t.index, t[col], bottom=bottom, label=str(col), color=f"C{k}")
            bottom += t[col].to_numpy()
        ax.set_ylabel("cases")
    else:
        t = table[table["label"] != ds.classes.get(0, "background")]
        piv = t.pivot_table(index="split", columns="label", values="cases containing", observed=True, sort=False)
        piv.plot.bar(ax=ax, rot=0)
        ax.set_ylabel("cases containing the label")
    ax.set_title(f"{ds.name}: class balance", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def intensity_histograms(ds: Dataset, *, max_cases: int | None = 2000, bins: int = 64, seed: int = 0,
                         voxels_per_case: int = 4096):
    """Left: pooled voxel intensities per class (classification) or per split; right: per-case mean intensity.

    Voxels come from a seeded subset of at most ``max_cases`` cases, ``voxels_per_case`` random voxels each,
    so one huge volume cannot dominate the pool.
    """
    from matplotlib.figure import Figure

    c = ds.cohort.set_index(ds.cohort["case_id"].astype(str))
    ids = sample_case_ids(ds, max_cases, seed=seed)
    rng = np.random.default_rng(seed)
    groups: dict[str, list[np.ndarray]] = {}
    # a static report (papermill) keeps no progress bar: in a kernel it is a widget that would stay dead
    for cid in tqdm(ids, desc="intensities", leave=False, disable=len(ids) < 200 or static_views_enabled()):
        a = np.asarray(ds.load_image(cid)).ravel()
        a = a[np.isfinite(a)]
        if a.size > voxels_per_case:
            a = rng.choice(a, size=voxels_per_case, replace=False)
        key = class_name(ds, c.at[cid, "label"]) if ds.task == "classification" else str(c.at[cid, "split"])
        groups.setdefault(key, []).append(a)
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    pooled = {k: np.concatenate(v) for k, v in groups.items() if v}
    # Common range from per-case percentiles: one case stored on another scale (real MRI sets have them)
    # must not flatten everyone else's histogram; it is counted in the title instead.
    case_lo = np.array([np.percentile(a, 0.5) for v in groups.values() for a in v if a.size])
    case_hi = np.array([np.percentile(a, 99.5) for v in groups.values() for a in v if a.size])
    if len(case_hi):
        lo, hi = float(np.percentile(case_lo, 5)), float(np.percentile(case_hi, 95))
        hi = hi if hi > lo else lo + 1.0
        n_out = int(np.sum((case_hi > hi + (hi - lo)) | (case_lo < lo - (hi - lo))))
        edges = np.linspace(lo, hi, bins + 1)
        for k, v in pooled.items():
            ax1.hist(np.clip(v, lo, hi), bins=edges, density=True, histtype="step", linewidth=1.5,
                     label=f"{k} (n={len(groups[k])})")
        ax1.legend(fontsize=8)
    else:
        n_out = 0
    ax1.set_xlabel("voxel intensity (clipped to the common range)")
    ax1.set_ylabel("density")
    extra = f"; {n_out} case(s) far outside the common range" if n_out else ""
    ax1.set_title(f"voxel intensities ({len(ids)} cases{extra})", fontsize=9)
    by = c["label"].map(lambda v: class_name(ds, v)) if ds.task == "classification" else c["split"].astype(str)
    means = c["intensity_mean"].dropna()
    if len(means):
        q1, q99 = (float(x) for x in np.percentile(means, [2, 98]))
        pad = 0.1 * (q99 - q1) if q99 > q1 else 1.0
        mlo, mhi = q1 - pad, q99 + pad
        n_clip = int(((means < mlo) | (means > mhi)).sum())
        medges = np.linspace(mlo, mhi, min(bins, 40) + 1)
        for k in pooled:
            ax2.hist(c.loc[by == k, "intensity_mean"].dropna().clip(mlo, mhi), bins=medges, alpha=0.5, label=k)
        ax2.legend(fontsize=8)
    else:
        n_clip = 0
    ax2.set_xlabel("mean intensity per case")
    ax2.set_ylabel("cases")
    extra = f"; {n_clip} outside, drawn at the edges" if n_clip else ""
    ax2.set_title(f"per-case mean ({len(c)} cases{extra})", fontsize=9)
    return fig


def sample_grid(ds: Dataset, *, per_class: int = 6, seed: int = 0, cell: float = 1.6):
    """Random examples per class (classification) or per label present (segmentation, mask contours drawn).

    3D cases show the slice through the centre of the mask, or the middle slice.
    """
    from matplotlib.figure import Figure

    c = ds.cohort
    if "problem" in c:
        c = c[c["problem"].isna()]
    rng = np.random.default_rng(seed)
    if ds.task == "classification":
        groups = [(ds.classes[k], c.loc[c["label"] == k, "case_id"].astype(str).tolist()) for k in sorted(ds.classes)]
        if c["label"].isna().any():
            groups.append(("unlabelled", c.loc[c["label"].isna(), "case_id"].astype(str).tolist()))
    else:
        with_mask = c.loc[c["mask"].notna(), "case_id"].astype(str).tolist()
        groups = [("with mask", with_mask)]
        without = c.loc[c["mask"].isna(), "case_id"].astype(str).tolist()
        if without:
            groups.append(("no mask", without))
    groups = [(n, ids) for n, ids in groups if ids]
    ncols = max(1, min(per_class, max(len(ids) for _, ids in groups)))
    fig = Figure(figsize=(cell * ncols, cell * len(groups) + 0.2), layout="constrained")
    axes = fig.subplots(len(groups), ncols, squeeze=False)
    for r, (name, ids) in enumerate(groups):
        pick = sorted(rng.choice(len(ids), size=min(ncols, len(ids)), replace=False).tolist())
        for k, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if k >= len(pick):
                continue
            cid = ids[pick[k]]
            raw = np.asarray(ds.load_image(cid))
            rgb2d = ds.ndim == 2 and raw.shape[0] in (3, 4)
            img = np.moveaxis(raw[:3], 0, -1) if rgb2d else spatial_array(raw, ds.ndim)
            m = ds.load_mask(cid) if ds.task == "segmentation" else None
            m = None if m is None else spatial_array(m, ds.ndim)
            if ds.ndim == 3:
                z = focus_index(img.shape, m)[2]
                img = img[..., z]
                m = None if m is None else m[..., z]
            ax.imshow(to_rgb(img), interpolation="nearest")
            if m is not None:
                for lab in np.unique(m[m > 0]):
                    ax.contour((m == lab).astype(float), levels=[0.5],
                               colors=[LABEL_COLORS[(int(lab) - 1) % len(LABEL_COLORS)] / 255.0], linewidths=0.8)
            ax.set_title(cid[-18:], fontsize=6)
        axes[r][0].set_ylabel(name, fontsize=9)
    fig.suptitle(f"{ds.name}: random examples (seed {seed})", fontsize=10)
    return fig


def regions_preview(ds: Dataset, *, shown: int = 3, prelabel: str | None = None, seed: int = 0):
    """The regions of up to ``shown`` cases (those with a mask first), as a static figure; with ``prelabel``
    ("ellipse" or "vessels", 2D) also each case's label-free pre-label (:func:`medwb.al.prelabels.label_free_mask`) and
    its Dice with the mask."""
    from medwb.al.regions import RegionConfig, over_segment, spacing_of
    from medwb.ui.view import regions_figure

    c = ds.cohort
    if "problem" in c:
        c = c[c["problem"].isna()]
    ids = c.loc[c["mask"].notna(), "case_id"].astype(str).tolist() if "mask" in c else []
    ids = (ids + [i for i in c["case_id"].astype(str) if i not in ids])[:shown]
    config = RegionConfig()
    images = [ds.load_image(i) for i in ids]
    regions = [over_segment(im, spacing_of(ds, i), config=config) for i, im in zip(ids, images)]
    print(f"structure model (regions): each image cut into about {', '.join(map(str, config.levels))} regions "
          "(coarse to fine); the medium level below, yellow, with the mask in red. `medwb structure DATA --out DIR` "
          "writes them for every case, with the clicks a region-click annotator needs")
    masks, pre = [ds.load_mask(i) for i in ids], None
    if prelabel is not None:
        from medwb.al.prelabels import check_prelabel, label_free_mask
        from medwb.metrics import dice

        check_prelabel(prelabel, ds)
        pre = [label_free_mask(prelabel, im, spacing=spacing_of(ds, i), random_state=seed) for i, im in zip(ids, images)]
        scores = [f"{i} {dice(p, m[0] != 0):.2f}" for i, p, m in zip(ids, pre, masks) if m is not None]
        print(f"label-free pre-labels ({prelabel}), in cyan, before any click; Dice with the mask: "
              f"{', '.join(scores) or 'no masks'} (`medwb structure DATA --out DIR --prelabel {prelabel}`: every case)")
    return regions_figure(images, regions, masks, titles=ids, prelabels=pre)


def structure_gallery(ds: Dataset, *, max_cases: int | None = 2000, seed: int = 0, shown: int = 8,
                      regions_shown: int = 3, prelabel: str | None = None):
    """The structure model's first look (issue 13): up to ``max_cases`` cases clustered on pixel features (PCA, so
    the report stays fast; ``medwb structure`` clusters in the SimCLR embedding), one cluster per 100 cases, shown
    as the static cluster gallery. Segmentation: the regions of the first ``regions_shown`` cases with a mask
    (:func:`medwb.al.regions.over_segment`, the regions a region click adds), their mask outlined, and with
    ``prelabel`` their label-free pre-label."""
    from medwb.al.structure import cluster_pool, pixel_embeddings
    from medwb.data.dataset import default_size, resize
    from medwb.ui.widgets.clusters import gallery_figure

    if ds.task == "segmentation":
        return regions_preview(ds, shown=regions_shown, prelabel=prelabel, seed=seed)
    if ds.task != "classification":
        print(f"structure model: none for task {ds.task!r}")
        return None
    ids, size = sample_case_ids(ds, max_cases, seed=seed), default_size(ds)
    X = np.stack([ds.load_image(c) if size is None else resize(ds.load_image(c), size, "image") for c in ids])
    emb = pixel_embeddings(X, random_state=seed)
    model = cluster_pool(emb, ids, random_state=seed)
    print(f"structure model (pixel features): {len(ids)} cases in {model.n_clusters} clusters; the largest "
          f"{min(12, model.n_clusters)} below, each with its {shown} most typical members")
    return gallery_figure(model, emb, dict(zip(ids, X)).__getitem__, shown=shown)


def volume_case(ds: Dataset, case_id: str | None = None) -> str:
    """The case to show in the 3D viewer: the given one, else the first case with a mask, else the first case."""
    c = ds.cohort
    if case_id is not None:
        if str(case_id) not in set(c["case_id"].astype(str)):
            raise KeyError(f"{ds.name}: no case {case_id!r}")
        return str(case_id)
    if "problem" in c:
        c = c[c["problem"].isna()]
    if ds.task == "segmentation" and c["mask"].notna().any():
        return str(c.loc[c["mask"].notna(), "case_id"].iloc[0])
    return str(c["case_id"].iloc[0])


# ---- running the notebook -----------------------------------------------------------------------------------
def run_explore(data: str | Path, out: str | Path, *, max_cases: int = 2000,
                volume_case_id: str | None = None, study: str | Path | None = None,
                plaintext: bool = False) -> tuple[Path, Path]:
    """Execute ``notebooks/01_explore.ipynb`` on ``data`` with papermill; return (executed .ipynb, .html).

    Papermill has no front end, so views are static: ``static_views=True`` is passed as a parameter and
    ``MEDWB_STATIC_VIEWS=1`` is set for the kernel (which inherits this process's environment).

    Explore runs before any study exists, so its outputs belong to no study and no purge finds them, unless
    ``study`` (``medwb explore --study``) names the study they belong to, or ``out`` is inside an encrypted one:
    then they are registered there for purge, and for an encrypted study written encrypted unless ``plaintext``
    (as reports: :mod:`medwb.privacy.outputs`). Without a study but with a key configured they are encrypted too
    (``out`` becomes an encrypted zone, as a simulation's): the notebook and HTML show the patients' images.
    """
    from medwb.errors import DataError
    from medwb.store import Study, cipher

    data = Path(data).resolve()
    if not data.exists():
        raise DataError(data, "does not exist", "give the path of a dataset file or folder")
    params: dict[str, Any] = {"data_path": str(data), "max_cases": int(max_cases), "static_views": True}
    if volume_case_id is not None:
        params["volume_case"] = str(volume_case_id)
    owner = cipher.owning_study(Path(out) / "x")
    folder = Path(study) if study is not None else (owner.folder if owner is not None else None)
    if folder is None:  # no study to register them in; encrypted all the same when a key is configured
        key = cipher.key_for_new_study(None)
        if key is not None and not plaintext:
            from medwb.privacy.outputs import protect_output

            protect_output(Path(out), key)  # its marker lets `medwb decrypt` find the key
        return _write_explore(params, Path(out), data, key, plaintext=plaintext, study=None)[0]
    with Study.open(folder) as st:
        paths, written = _write_explore(params, Path(out), data, st.key, plaintext=plaintext, study=folder)
        st.register_artifacts(written, "report")
        return paths


def _write_explore(params: dict[str, Any], out: Path, data: Path, key: Key | None, *, plaintext: bool,
                   study: Path | None) -> tuple[tuple[Path, Path], list[Path]]:
    """Run the explore notebook into ``out``: in clear without a key, or with ``plaintext`` (then the warning line,
    naming ``study`` or saying no study registers them); else built in a RAM folder and written encrypted with
    ``key``. Returns the (notebook, HTML) paths and every file written (what a study registers for purge)."""
    from medwb.privacy.outputs import private_workdir, seal, warn_plaintext

    if key is None or plaintext:
        paths = _execute_explore(params, out, data)
        if key is not None:
            warn_plaintext("explore", list(paths), study)
        return paths, list(paths)
    with private_workdir("medwb-explore-") as work:
        built = _execute_explore(params, work, data)
        sealed = seal(work, out, key)
    return (out / built[0].relative_to(work), out / built[1].relative_to(work)), sealed


def _execute_explore(params: dict[str, Any], out: str | Path, data: Path) -> tuple[Path, Path]:
    from medwb.notebook_runner import execute_notebook

    before = os.environ.get(STATIC_ENV)
    os.environ[STATIC_ENV] = "1"
    try:
        return execute_notebook("01_explore.ipynb", params, out, stem=f"explore_{_slug(data)}")
    finally:
        if before is None:
            os.environ.pop(STATIC_ENV, None)
        else:
            os.environ[STATIC_ENV] = before


def _slug(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".npz", ".nii"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "data"


def explore_summary(ds: Dataset, dups: pd.DataFrame) -> Sequence[str]:
    """Plain-language findings for the top of the report (leaks, unreadable cases, missing masks)."""
    c = ds.cohort
    lines = [f"{ds.name}: {len(c)} {ds.ndim}D {ds.modality} cases for {ds.task}."]
    leaks = dups[dups["cross_split"]] if not dups.empty else dups
    if len(leaks):
        n_exact = int((leaks["kind"] == "exact").sum())
        lines.append(f"LEAKAGE: {len(leaks)} duplicate pair(s) span different splits ({n_exact} pixel-identical).")
    else:
        lines.append("No duplicate images across splits.")
    if "problem" in c and c["problem"].notna().any():
        lines.append(f"{int(c['problem'].notna().sum())} case(s) could not be read: run `medwb check`.")
    if ds.task == "segmentation":
        n = int(c["mask"].isna().sum())
        if n:
            lines.append(f"{n} case(s) have no mask (e.g. the unlabelled pool / test images).")
    return lines
