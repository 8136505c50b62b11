"""Regions of the structure model and the simulated region-click annotator (issue 13)."""
import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from medwb.al.region_oracle import outline_actions, simulate_region_clicks
from medwb.al.regions import (RegionConfig, consecutive_ids, default_region_config, edge_bands, over_segment,
                              region_at, study_regions, toggle_region, with_edge_bands)
from medwb.metrics import dice
from medwb.errors import DataError


def disk_image(shape=(64, 80), center=(30, 40), radius=15, noise=0.05, seed=0):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    truth = ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2).astype(np.int64)
    rng = np.random.default_rng(seed)
    image = (0.2 + 0.6 * truth + noise * rng.standard_normal(shape)).astype(np.float32)[None]
    return image, truth


def test_over_segment_levels_are_nested_in_size_and_contiguous():
    image, _ = disk_image()
    regions = over_segment(image, config=RegionConfig(levels=(5, 50, 400)))
    assert regions.shape == (3, 64, 80) and regions.dtype == np.int32
    counts = [len(np.unique(r)) for r in regions]
    assert counts[0] < counts[1] < counts[2]
    for r in regions:  # ids 0..n-1 with none missing
        assert np.array_equal(np.unique(r), np.arange(r.max() + 1))


def test_levels_on_threads_give_the_same_maps_as_one_by_one():
    image, _ = disk_image(shape=(96, 96), noise=0.1)
    cfg = RegionConfig(levels=(5, 50, 400))
    one = over_segment(image, config=cfg, threads=1)
    assert np.array_equal(over_segment(image, config=cfg, threads=3), one)
    assert np.array_equal(over_segment(image, config=cfg), one)


def test_consecutive_ids_renumber_like_unique_inverse():
    rng = np.random.default_rng(0)
    for labels in (rng.integers(0, 50, (20, 30)), rng.choice([3, 7, 40], (5, 6, 7)), np.arange(12).reshape(3, 4)):
        want = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
        got = consecutive_ids(labels)
        assert got.dtype == np.int32 and np.array_equal(got, want)


def test_regions_follow_the_object_edge():
    image, truth = disk_image()
    regions = over_segment(image, config=RegionConfig(levels=(8, 100)))
    # the best mask made of whole regions (each region in by majority) is nearly the disk at the finer level
    r = regions[1].ravel()
    inside = np.bincount(r, weights=truth.ravel()) / np.bincount(r)
    best = (inside > 0.5)[r].reshape(truth.shape)
    assert 2 * (best & (truth == 1)).sum() / (best.sum() + truth.sum()) > 0.95


def test_spacing_makes_regions_round_in_millimetres():
    image, _ = disk_image(shape=(64, 64), center=(32, 32))
    iso = over_segment(image, (1.0, 1.0), config=RegionConfig(levels=(16,), compactness=10))
    aniso = over_segment(image, (1.0, 4.0), config=RegionConfig(levels=(16,), compactness=10))
    def extent(r):  # mean extent along each axis of the regions, in voxels
        ys, xs = [], []
        for j in np.unique(r):
            yy, xx = np.nonzero(r == j)
            ys.append(np.ptp(yy) + 1)
            xs.append(np.ptp(xx) + 1)
        return np.mean(ys), np.mean(xs)
    y0, x0 = extent(iso[0])
    y1, x1 = extent(aniso[0])
    assert abs(y0 / x0 - 1) < 0.5
    assert y1 / x1 > 1.5  # 4 mm wide voxels: regions span fewer of them along that axis


def test_3d_supervoxels_and_defaults():
    image = np.random.default_rng(0).random((1, 12, 14, 10)).astype(np.float32)
    regions = over_segment(image, (1.0, 1.0, 2.0), config=RegionConfig(levels=(4, 30)))
    assert regions.shape == (2, 12, 14, 10)
    assert default_region_config(3).compactness != default_region_config(2).compactness


def test_bad_images_get_a_clear_error():
    with pytest.raises(DataError, match="channel-first"):
        over_segment(np.zeros((5, 5)))
    bad = np.zeros((1, 8, 8), np.float32)
    bad[0, 1, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        over_segment(bad)
    with pytest.raises(DataError, match="spacing"):
        over_segment(np.zeros((1, 8, 8), np.float32), (1.0,))


def test_toggle_region_adds_and_removes_only_its_label():
    image, _ = disk_image()
    regions = over_segment(image, config=RegionConfig(levels=(8, 60)))
    mask = np.zeros(regions.shape[1:], np.int64)
    j = region_at(regions, 0, (30, 40))
    added = toggle_region(mask, regions, 0, j, label=2)
    assert (added[regions[0] == j] == 2).all() and (added[regions[0] != j] == 0).all()
    other = added.copy()
    other[0, 0] = 1
    removed = toggle_region(other, regions, 0, j, label=2, add=False)
    assert (removed[regions[0] == j] == 0).all() and removed[0, 0] == 1
    with pytest.raises(DataError):
        toggle_region(np.zeros((3, 3), np.int64), regions, 0, j)


def test_simulated_annotator_reaches_the_target_with_few_clicks_on_a_clean_object():
    image, truth = disk_image()
    regions = over_segment(image, config=RegionConfig(levels=(8, 60, 400)))
    res = simulate_region_clicks(regions, truth, target=0.9)
    assert res.reached and res.dice >= 0.9
    assert res.clicks <= 6
    assert res.clicks < outline_actions(truth, step=5) / 2
    assert all(np.diff(res.curves[1]) > 0)  # each click improves the Dice


def test_simulated_annotator_handles_several_classes_and_stops_when_nothing_helps():
    image, truth = disk_image()
    truth[:, :40][truth[:, :40] == 1] = 2
    regions = over_segment(image, config=RegionConfig(levels=(8, 60, 400)))
    res = simulate_region_clicks(regions, truth, target=0.9)
    assert set(res.curves) == {1, 2} and res.clicks == sum(len(c) for c in res.curves.values())
    coarse = np.zeros((1, *truth.shape), np.int32)  # one region: nothing but all-or-nothing
    stuck = simulate_region_clicks(coarse, truth, target=0.99)
    assert not stuck.reached and stuck.clicks <= 2


def test_simulated_annotator_starting_from_a_prelabel_only_corrects_it():
    image, truth = disk_image()
    regions = over_segment(image, config=RegionConfig(levels=(8, 60, 400)))
    good = simulate_region_clicks(regions, truth, target=0.9, start=truth.copy())
    assert good.clicks == 0 and good.reached and good.dice == 1.0  # an exact pre-label needs no click
    shifted = np.roll(truth, 6, axis=1)  # a pre-label a little off: corrected at its edges
    at_start = dice(shifted, truth)
    assert 0.6 < at_start < 0.9
    fixed = simulate_region_clicks(regions, truth, target=0.9, start=shifted)
    assert fixed.reached and fixed.dice >= 0.9 and 1 <= fixed.clicks <= 4
    assert all(np.diff([at_start, *fixed.curves[1]]) > 0)  # each click improves on the start
    wrong = simulate_region_clicks(regions, truth, target=0.9, start=1 - truth)  # inverted: removals fix it
    assert wrong.reached and wrong.dice >= 0.9
    with pytest.raises(DataError, match="start"):
        simulate_region_clicks(regions, truth, start=truth[:-1])


def test_edge_bands_are_one_voxel_shells_cut_by_the_base_regions():
    _, pre = disk_image(noise=0.0)
    base = np.arange(64 * 80).reshape(64, 80) // 80 // 16  # 4 horizontal stripes of 16 rows
    bands = edge_bands(pre, base, width=3)
    assert bands.shape == pre.shape and bands.dtype == np.int32
    assert np.array_equal(np.unique(bands), np.arange(bands.max() + 1))  # ids 0..n-1
    edge = find_boundaries(pre, connectivity=1, mode="thick")
    assert edge.sum() > 0 and (pre[edge] == 1).any() and (pre[edge] == 0).any()  # both sides of the edge
    for rid in np.unique(bands):
        piece = bands == rid
        assert len(np.unique(base[piece])) == 1  # never across a base region
    # the edge's own voxels form pieces of their own: one per base stripe the edge crosses
    assert len(np.unique(bands[edge])) == len(np.unique(base[edge]))
    assert not np.isin(np.unique(bands[edge]), np.unique(bands[~edge])).any()
    far = np.zeros_like(edge)
    far[:2, :2] = True  # a corner 3+ voxels from the disk: still its base region's piece
    assert len(np.unique(bands[far])) == 1
    unsure = np.zeros(pre.shape, bool)
    unsure[:, :40] = True
    cut = edge_bands(pre, base, width=3, split=unsure)
    assert cut.max() > bands.max() and all(len(np.unique(unsure[cut == r])) == 1 for r in np.unique(cut))
    with pytest.raises(DataError, match="pre-label"):
        edge_bands(pre[:-1], base)


def test_edge_bands_correct_a_model_mask_where_the_image_has_no_edge():
    """A structure whose boundary the image does not show (as the hippocampus' anterior / posterior one): the
    supervoxels cannot follow it, the pre-label is off by a voxel or two over part of its edge. Bands along the
    pre-label's edge reach the target in fewer clicks than the supervoxels alone."""
    yy, xx = np.mgrid[:64, :80]
    truth = (((yy - 32) / 14.0) ** 2 + ((xx - 40) / 20.0) ** 2 <= 1).astype(np.int64)
    pre = (((yy - 32) / 13.0) ** 2 + ((xx - 42) / 20.0) ** 2 <= 1).astype(np.int64)  # smaller, shifted right
    flat = (0.5 + 0.05 * np.random.default_rng(0).standard_normal((1, 64, 80))).astype(np.float32)
    regions = over_segment(flat, config=RegionConfig(levels=(8, 60, 400)))
    plain = simulate_region_clicks(regions, truth, target=0.95, start=pre)
    assert not plain.reached  # supervoxels of a flat image cannot hold this edge
    banded, names = with_edge_bands(regions, pre)
    assert names == ["coarse", "medium", "fine", "edge bands (coarse)", "edge bands (medium)", "edge bands (fine)"]
    assert banded.shape == (6, 64, 80) and np.array_equal(banded[:3], regions)
    fixed = simulate_region_clicks(banded, truth, target=0.95, start=pre)
    assert fixed.reached and fixed.clicks < plain.clicks
    unsure = np.where(find_boundaries(pre, connectivity=1, mode="thick"), 1.0, 0.0)
    with_unsure, names = with_edge_bands(regions, pre, uncertainty=unsure)
    assert len(with_unsure) == 9 and names[-1] == "unsure edge (fine)"
    with pytest.raises(DataError, match="uncertainty"):
        with_edge_bands(regions, pre, uncertainty=unsure[:-1])


def test_outline_actions_counts_vertices_along_contours():
    truth = np.zeros((40, 40), np.int64)
    truth[10:30, 10:30] = 1  # perimeter ~80 px
    assert 14 <= outline_actions(truth, step=5) <= 18
    vol = np.stack([truth] * 4, axis=-1)
    assert outline_actions(vol, step=5) == 4 * outline_actions(truth, step=5)


def test_study_regions_are_cached_in_the_study(tmp_path, samples):
    from medwb.data import open_dataset
    from medwb.store import Study

    ds = open_dataset(samples / "segmentation_2d" / "hc18", progress=False)
    case = ds.case_ids()[0]
    cfg = RegionConfig(levels=(10, 100))
    with Study.create(tmp_path / "s", dataset_path=str(ds.path), task=ds.task, classes=ds.classes) as study:
        first = study_regions(study, ds, case, config=cfg)
        path = study.layout.regions(cfg.resolved(ds.ndim).key(), case)
        assert path.is_file() and case not in path.name
        mtime = path.stat().st_mtime_ns
        again = study_regions(study, ds, case, config=cfg)
        assert np.array_equal(first, again) and path.stat().st_mtime_ns == mtime
        assert first.shape[1:] == ds.load_image(case).shape[1:]
