"""Sweep over the full shared data beside the repo (CI: ../shared/data): every set opens, has the cases its
README states, and `check_dataset` finds no errors. Slow (first pass reads every image once)."""
from __future__ import annotations

import pytest

from medwb.data import open_dataset
from medwb.data.check import check_dataset

# relative path -> (task, ndim, expected cases per split or total, shape of the first case or None)
SETS = {
    "medmnist/pneumoniamnist.npz": ("classification", 2, {"train": 4708, "val": 524, "test": 624}, "28x28"),
    "medmnist/adrenalmnist3d.npz": ("classification", 3, {"train": 1188, "val": 98, "test": 298}, "28x28x28"),
    "medmnist/adrenalmnist3d_64.npz": ("classification", 3, {"train": 1188, "val": 98, "test": 298}, "64x64x64"),
    "seg2d/chase_db1": ("segmentation", 2, {"train": 28}, "960x999"),
    "seg2d/hc18_subset": ("segmentation", 2, {"train": 253}, "540x800"),
    "seg3d/msd_task04_hippocampus": ("segmentation", 3, {"train": 260, "unlabelled": 130}, None),
    "seg3d/totalsegmentator_samples/example_ct_dicom": ("segmentation", 3, {"unlabelled": 1}, "512x512x20"),
    "seg3d/totalsegmentator_samples": ("segmentation", 3, {"unlabelled": 5}, None),
    "seg3d/totalsegmentator_samples/example_ct.nii.gz": ("segmentation", 3, {"unlabelled": 1}, "122x101x112"),
    "seg3d/totalsegmentator_samples/example_mr_sm.nii.gz": ("segmentation", 3, {"unlabelled": 1}, "117x91x20"),
    "dicom/pydicom": ("segmentation", 3, None, None),
    "dicom/pydicom/dicomdirtests/DICOMDIR": ("segmentation", 3, None, None),
    "dicom/pydicom/CT_small.dcm": ("segmentation", 2, {"unlabelled": 1}, "128x128"),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("medwb_cache")


@pytest.mark.slow
@pytest.mark.parametrize("rel", list(SETS))
def test_shared_dataset_opens_and_checks_clean(shared_data, cache, rel):
    task, ndim, splits, shape = SETS[rel]
    ds = open_dataset(shared_data / rel, cache_dir=cache, progress=False)
    assert (ds.task, ds.ndim) == (task, ndim)
    c = ds.cohort
    if splits:
        assert c["split"].value_counts().to_dict() == splits
    if shape:
        assert c["shape"].iloc[0] == shape
    assert c["problem"].isna().all() and c["case_id"].is_unique and c["sha256"].notna().all()
    rep = check_dataset(shared_data / rel, cache_dir=cache, progress=False, max_mask_cases=10)
    assert rep.ok, rep.to_text()
    if rel == "seg2d/chase_db1":
        assert c["mask2"].notna().all()
    if rel == "medmnist/pneumoniamnist.npz":
        d = rep.duplicates
        assert ((d["kind"] == "exact") & (d["split_a"] == "train") & (d["split_b"] == "val")).sum() >= 1
