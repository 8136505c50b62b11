"""The structure model for segmentation: regions of each image before any expert label (issue 13).

Why: drawing a mask is the most expensive label there is, and a first round otherwise starts from nothing. An
unsupervised over-segmentation (SLIC superpixels in 2D, supervoxels in 3D, computed in the image's physical
spacing) cuts each image into regions that follow its edges, at a few scales. An annotator then builds a mask by
*clicking regions in* (a coarse region for the bulk of an object, finer ones to refine at its edges) instead of
outlining it point by point; the result is stored as an ordinary mask label.

- :class:`RegionConfig`: the scales (regions per image at each level, coarse to fine) and SLIC's compactness.
- :func:`over_segment`: ``(L, *spatial)`` int32 region maps of one image, level 0 coarsest, ids ``0..n-1``.
- :func:`with_edge_bands`: when a case has a pre-label, extra levels of thin regions along its edges (distance
  shells cut by each level's regions, and cut again where the model is unsure): a click there moves the pre-label's
  edge by a voxel over a patch, where a model's errors lie.
- :func:`toggle_region`: the one edit a click makes: add (or remove) the region under a voxel to (from) a mask.
- :func:`study_regions`: :func:`over_segment` computed lazily per case and cached in the study
  (``cache/regions/<config key>/``), so an annotator's page opens a case without waiting twice.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from medwb.errors import DataError
from medwb.store import files
from medwb.store.masks import save_npy

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset
    from medwb.store.study import Study


@dataclass(frozen=True)
class RegionConfig:
    """How images are cut into regions.

    ``levels``: regions per image at each level, coarse to fine (SLIC's ``n_segments``): a coarse region holds
    the bulk of an object with one click, the finest ones refine its edge. ``compactness`` trades shape regularity
    against following intensity edges (SLIC's, on intensities scaled to [0, 1]); None: the measured default for
    the image's dimensionality (:meth:`resolved`).
    """

    levels: tuple[int, ...] = (30, 300, 3000)
    compactness: float | None = None

    def resolved(self, ndim: int) -> RegionConfig:
        """This configuration with its compactness filled in for ``ndim`` spatial axes: 2D images (ultrasound,
        fundus) follow weak edges best at 0.1; 3D MR crops give rounder, steadier supervoxels at 0.5 (and twice
        as fast) (``benchmarks/structure/``)."""
        if self.compactness is not None:
            return self
        return RegionConfig(levels=self.levels, compactness=0.5 if ndim == 3 else 0.1)

    def key(self) -> str:
        """Cache key of this configuration (the algorithm's version is part of it)."""
        text = json.dumps({"algorithm": "slic-1", **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_region_config(ndim: int) -> RegionConfig:
    """The default configuration for images with ``ndim`` spatial axes."""
    return RegionConfig().resolved(ndim)


def scale_channels(image: np.ndarray) -> np.ndarray:
    """Each channel to [0, 1] by its 0.5 / 99.5 percentiles (robust to a few extreme voxels)."""
    out = np.empty(image.shape, np.float32)
    for c, x in enumerate(image):
        lo, hi = np.percentile(x, [0.5, 99.5])
        out[c] = np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return out


def over_segment(image: np.ndarray, spacing: Sequence[float] | None = None, *,
                 config: RegionConfig | None = None, threads: int | None = None) -> np.ndarray:
    """Region maps of one channel-first image ``(C, *spatial)``: ``(L, *spatial)`` int32, one map per level of
    ``config.levels``, ids ``0..n-1`` at each level. ``spacing`` (mm per voxel along each spatial axis) makes the
    regions round in physical space, not in voxels (anisotropic CT, 2D pixels that are not square).

    ``threads``: levels computed at once (scikit-image's SLIC releases the GIL, so the levels of one image run on
    separate cores); None: :func:`level_threads`. The maps are the same for any value; on a 999x960 fundus photo 3
    levels take ~2.8 s on one core (benchmarks/structure/region_time.md).
    """
    from concurrent.futures import ThreadPoolExecutor

    from skimage.segmentation import slic

    image = np.asarray(image)
    cfg = (config or RegionConfig()).resolved(image.ndim - 1)
    if image.ndim not in (3, 4):
        raise DataError(None, f"an image of shape {image.shape}: expected channel-first (C, H, W) or (C, H, W, D)",
                        "pass one case's image as the dataset loads it (dataset.load_image(case_id))")
    if not np.isfinite(image).all():
        raise DataError(None, "the image holds NaN or infinite values", "fix or exclude the case before regions")
    x = scale_channels(image)
    sp = None if spacing is None else np.asarray(spacing, float)
    if sp is not None and (len(sp) != image.ndim - 1 or not np.all(sp > 0)):
        raise DataError(None, f"spacing {tuple(sp)} for an image with {image.ndim - 1} spatial axes",
                        "give one positive spacing (mm) per spatial axis")
    grid = x
    if sp is not None and sp.max() / sp.min() > 1.2:
        # SLIC seeds its regions on a grid in voxels: resample to isotropic voxels of the same count (geometric
        # mean spacing), so that regions are round in millimetres, then map the regions back to the image grid
        from scipy.ndimage import zoom

        iso = float(np.prod(sp) ** (1 / len(sp)))
        grid = np.stack([zoom(c, sp / iso, order=1) for c in x])

    def level(n: int) -> np.ndarray:
        seg = slic(grid, n_segments=int(n), compactness=cfg.compactness, channel_axis=0, start_label=0,
                   enforce_connectivity=True)
        if grid is not x:
            seg = resample_labels(seg, x.shape[1:])
        return consecutive_ids(seg)

    n_threads = level_threads(len(cfg.levels), threads)
    if n_threads == 1:
        return np.stack([level(n) for n in cfg.levels])
    with ThreadPoolExecutor(n_threads) as pool:
        return np.stack(list(pool.map(level, cfg.levels)))


def level_threads(levels: int, threads: int | None = None) -> int:
    """Threads :func:`over_segment` uses for ``levels`` levels: ``threads`` (at most one per level), or by default
    one per level when this process may use two cores or more, else 1. Three levels on two cores run as three
    threads the OS shares, so the slowest level does not wait for a free thread."""
    from medwb.compute.cluster import usable_cores

    if threads is None:
        return levels if usable_cores() > 1 else 1
    return max(1, min(int(levels), int(threads)))


def consecutive_ids(labels: np.ndarray) -> np.ndarray:
    """``labels`` renumbered ``0..n-1`` in the order of their values (what ``np.unique(..., return_inverse=True)``
    gives), by a counting pass instead of a sort: a no-op copy when they already are."""
    labels = np.asarray(labels)
    counts = np.bincount(labels.ravel())
    present = counts > 0
    if present.all():
        return labels.astype(np.int32)
    return (np.cumsum(present) - 1).astype(np.int32)[labels]


def resample_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of a label map onto a grid of ``shape`` (voxel centres aligned)."""
    idx = np.ix_(*[np.minimum(((np.arange(n) + 0.5) * m / n).astype(int), m - 1)
                   for n, m in zip(shape, labels.shape)])
    return labels[idx]


def level_names(n: int) -> list[str]:
    """Names of ``n`` region levels, coarse to fine, as the editor's buttons show them."""
    return {1: ["regions"], 2: ["coarse", "fine"], 3: ["coarse", "medium", "fine"]}.get(
        n, [f"level {i}" for i in range(n)])


#: how far from a pre-label's edge :func:`edge_bands` cuts shells, in voxels of the smallest spacing: a model's
#: mask errs in the edge's first two voxels (a UNet's pre-labels of 10 hippocampus volumes: 66% of wrong voxels
#: touch the predicted edge, 32% are one voxel further, 1% beyond)
EDGE_BAND_WIDTH = 3

#: predictive entropy (nats) above which a voxel counts as uncertain when :func:`with_edge_bands` cuts bands by
#: the model's uncertainty map. Chosen on 10 hippocampus volumes with the entropy of the mean softmax: 0.3 -> 23.9%
#: of an outline's actions, 0.5 -> 25.0%, 0.7 -> 29.6%, without the cut 30.1%; with the review's MC-dropout map
#: (20 passes) on 40 volumes 0.3 gave 32.7% against 36.2% without (a pre-label of Dice 0.706; with masks resized
#: centre-aligned since, the same model's pre-labels reach 0.830 and the cut bands need 11.0%:
#: benchmarks/structure/README.md)
UNCERTAIN_ENTROPY = 0.3


def edge_shells(labels: np.ndarray, *, spacing: Sequence[float] | None = None,
                width: int = EDGE_BAND_WIDTH) -> np.ndarray:
    """Each voxel's distance to the nearest edge of ``labels``, in whole voxels of the smallest ``spacing`` (0: the
    edge's own voxels, on both sides), capped at ``width`` (farther, or no edge at all)."""
    from scipy.ndimage import distance_transform_edt
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    sp = np.ones(labels.ndim) if spacing is None else np.asarray(spacing, float)
    if len(sp) != labels.ndim or not np.all(sp > 0):
        raise DataError(None, f"spacing {tuple(sp)} for a pre-label with {labels.ndim} axes",
                        "give one positive spacing (mm) per spatial axis")
    edge = find_boundaries(labels, connectivity=1, mode="thick")  # both sides of every edge
    if not edge.any():
        return np.full(labels.shape, int(width), np.int64)
    dist = distance_transform_edt(~edge, sampling=sp) / float(sp.min())
    return np.minimum(np.floor(dist + 1e-6).astype(np.int64), int(width))


def edge_bands(labels: np.ndarray, base: np.ndarray, *, spacing: Sequence[float] | None = None,
               width: int = EDGE_BAND_WIDTH, split: np.ndarray | None = None,
               shells: np.ndarray | None = None) -> np.ndarray:
    """One region map of thin regions along the edges of ``labels`` (a pre-label's label map): voxels closer than
    ``width`` voxels (of the smallest ``spacing``, distances in millimetres) to an edge are cut into one-voxel
    shells by that distance and into pieces by ``base`` (a region map of the same grid); farther voxels keep their
    ``base`` region. ``split`` (a boolean map, e.g. where the model is unsure) cuts every region in two more;
    ``shells``: :func:`edge_shells` of ``labels`` when already computed.

    Why: a model's mask is wrong in a thin layer along its edge, where supervoxels that follow intensity edges mix
    right and wrong voxels (on the hippocampus, whose anterior / posterior boundary has no intensity edge, the
    finest level still needed 57% of an outline's actions from a model's pre-label). A shell piece is inside and
    outside voxels at the same distance from the edge: clicking it in moves the edge out by a voxel over that
    patch, clicking it out moves it in. Ids ``0..n-1``."""
    labels, base = np.asarray(labels), np.asarray(base)
    if labels.shape != base.shape or (split is not None and np.shape(split) != base.shape):
        raise DataError(None, f"a pre-label of shape {labels.shape} (split {None if split is None else np.shape(split)}) "
                        f"on regions of shape {base.shape}", "compute both on the case's own grid")
    shell = edge_shells(labels, spacing=spacing, width=width) if shells is None else np.asarray(shells)
    ids = (base.astype(np.int64) * (int(width) + 1) + shell) * 2
    if split is not None:
        ids += np.asarray(split, bool)
    return consecutive_ids(ids)


def with_edge_bands(regions: np.ndarray, prelabel: np.ndarray, *, spacing: Sequence[float] | None = None,
                    uncertainty: np.ndarray | None = None,
                    uncertain_above: float = UNCERTAIN_ENTROPY) -> tuple[np.ndarray, list[str]]:
    """``regions`` ``(L, *spatial)`` with :func:`edge_bands` levels of ``prelabel`` appended, and the names of all
    levels: one band level per level of ``regions`` ("edge bands" + its name), and with an ``uncertainty`` map
    (predictive entropy in nats, the review's MC-dropout map) the same bands cut where it exceeds
    ``uncertain_above`` ("unsure edge"): the model's doubtful voxels of a patch go in or out together.

    Measured (hippocampus, a UNet's pre-labels on 40 volumes, simulated annotator to Dice 0.90): 57.2% of a
    manual outline's actions with the supervoxels alone, 36.2% with the bands, 32.7% with the unsure cut of a
    20-pass MC-dropout entropy map; 11.0% with that cut once the UNet learnt from masks resized centre-aligned
    (pre-label Dice 0.706 -> 0.830). CHASE_DB1 vessels from the label-free vessel pre-label: see
    benchmarks/structure/README.md."""
    regions, prelabel = np.asarray(regions), np.asarray(prelabel)
    if prelabel.shape != regions.shape[1:]:
        raise DataError(None, f"a pre-label of shape {prelabel.shape} on regions of shape {regions.shape[1:]}",
                        "pass the pre-label at the image's own size")
    names = level_names(len(regions))
    shells = edge_shells(prelabel, spacing=spacing)
    out = [*regions, *(edge_bands(prelabel, r, shells=shells) for r in regions)]
    out_names = [*names, *(f"edge bands ({n})" for n in names)]
    if uncertainty is not None:
        u = np.asarray(uncertainty, float)
        if u.shape != prelabel.shape:
            raise DataError(None, f"an uncertainty map of shape {u.shape} on regions of shape {prelabel.shape}",
                            "pass the map at the image's own size")
        unsure = u > float(uncertain_above)
        out += [edge_bands(prelabel, r, split=unsure, shells=shells) for r in regions]
        out_names += [f"unsure edge ({n})" for n in names]
    return np.stack(out).astype(np.int32), out_names


def region_at(regions: np.ndarray, level: int, voxel: Sequence[int]) -> int:
    """The id of the region under ``voxel`` (spatial index) at ``level``."""
    return int(regions[(int(level), *map(int, voxel))])


def toggle_region(mask: np.ndarray, regions: np.ndarray, level: int, region: int, *, label: int = 1,
                  add: bool = True) -> np.ndarray:
    """A new mask with region ``region`` of ``level`` set to ``label`` (``add``) or cleared to background where
    it held ``label`` (not ``add``). ``mask`` is spatial, the shape of one region map."""
    if mask.shape != regions.shape[1:]:
        raise DataError(None, f"mask of shape {mask.shape} on regions of shape {regions.shape[1:]}",
                        "edit a mask on the grid its regions were computed on")
    out = mask.copy()
    inside = regions[int(level)] == int(region)
    if add:
        out[inside] = label
    else:
        out[inside & (out == label)] = 0
    return out


def spacing_of(dataset: Dataset, case_id: str) -> tuple[float, ...]:
    """The physical voxel size of a case along its spatial axes (column norms of its affine)."""
    a = dataset.affine(case_id)
    return tuple(float(v) for v in np.linalg.norm(a[:3, :dataset.ndim], axis=0))


def study_regions(study: Study, dataset: Dataset, case_id: str, *, config: RegionConfig | None = None) -> np.ndarray:
    """The region maps of ``case_id``: read from the study's cache, or computed and cached (atomic write)."""
    cfg = (config or RegionConfig()).resolved(dataset.ndim)
    path = study.layout.regions(cfg.key(), case_id)
    if path.is_file():  # through the store's file pair: encrypted in an encrypted study
        return np.load(io.BytesIO(files.read_bytes(path)), allow_pickle=False)
    regions = over_segment(dataset.load_image(case_id), spacing_of(dataset, case_id), config=cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npy(path, regions)
    return regions
