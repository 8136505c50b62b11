"""MedMNIST npz on the bundled real files: splits kept, cohort columns, arrays, MONAI items, broken files."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from medwb.data import open_dataset
from medwb.errors import DataError


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "cache"


def test_pneumoniamnist_2d(samples, cache):
    ds = open_dataset(samples / "classification_2d/pneumoniamnist.npz", cache_dir=cache)
    assert (ds.task, ds.ndim, ds.modality) == ("classification", 2, "XR")
    assert ds.classes == {0: "normal", 1: "pneumonia"}
    c = ds.cohort
    assert c["split"].value_counts().to_dict() == {"train": 4708, "val": 524, "test": 624}  # official splits
    assert c["case_id"].is_unique and set(c["shape"]) == {"28x28"} and set(c["channels"]) == {1}
    for col in ("case_id", "split", "label", "mask", "modality", "ndim", "shape", "spacing", "intensity_min",
                "intensity_max", "intensity_mean", "intensity_std", "source", "sha256"):
        assert col in c.columns
    assert str(c["label"].dtype) == "Int64" and set(c["label"].unique()) == {0, 1}
    raw = np.load(samples / "classification_2d/pneumoniamnist.npz")
    img = ds.load_image("val_00003")
    assert img.dtype == np.float32 and img.shape == (1, 28, 28)
    np.testing.assert_array_equal(img[0], raw["val_images"][3])
    row = c.set_index("case_id").loc["val_00003"]
    assert row["intensity_max"] == raw["val_images"][3].max() and row["label"] == raw["val_labels"][3, 0]
    X, y, ids = ds.arrays("test")
    assert X.shape == (624, 1, 28, 28) and X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    np.testing.assert_allclose(X[:, 0], raw["test_images"] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, raw["test_labels"][:, 0])
    X2, y2, ids2 = ds.arrays("train", size=(64, 64), max_cases=20, seed=1)
    assert X2.shape == (20, 1, 64, 64) and len(ids2) == 20 and ids2 == sorted(ids2)
    assert ds.arrays("train", max_cases=20, seed=1)[2] == ids2  # seeded: same subset
    np.testing.assert_array_equal(ds.affine("train_00000"), np.eye(4))


def test_cohort_is_cached(samples, cache):
    p = samples / "classification_2d/pneumoniamnist.npz"
    first = open_dataset(p, cache_dir=cache).cohort
    assert list((cache / "stats").glob("*.json"))
    second = open_dataset(p, cache_dir=cache)
    second._compute_stats = None  # a cache hit must not recompute anything
    assert second.cohort["sha256"].tolist() == first["sha256"].tolist()


def test_adrenal_3d_and_monai_items(samples, cache):
    from monai.data import Dataset as MonaiDataset

    ds = open_dataset(samples / "classification_3d/adrenalmnist3d.npz", cache_dir=cache)
    assert (ds.ndim, ds.classes[1]) == (3, "hyperplasia")
    assert ds.cohort["split"].value_counts().to_dict() == {"train": 1188, "val": 98, "test": 298}
    assert ds.load_image("train_00000").shape == (1, 28, 28, 28)
    X, y, _ = ds.arrays("val", size=(16, 16, 16), max_cases=5)
    assert X.shape == (5, 1, 16, 16, 16) and y.dtype == np.int64
    items = ds.items("val")
    assert len(items) == 98 and set(items[0]) == {"image", "label", "case_id"}
    sample = MonaiDataset(items[:3], transform=ds.transform(size=(16, 16, 16)))[1]
    assert tuple(sample["image"].shape) == (1, 16, 16, 16) and int(sample["label"]) == items[1]["label"]


def test_truncated_npz(samples, tmp_path):
    src = samples / "classification_2d/pneumoniamnist.npz"
    bad = tmp_path / "pneumoniamnist.npz"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(DataError, match="pneumoniamnist.npz") as e:
        open_dataset(bad)
    assert "truncated" in str(e.value) and "Fix:" in str(e.value)


def test_label_outside_declared_classes(samples, tmp_path):
    raw = dict(np.load(samples / "classification_2d/pneumoniamnist.npz"))
    raw["val_labels"] = raw["val_labels"].copy()
    raw["val_labels"][7] = 5
    p = tmp_path / "pneumoniamnist_bad.npz"
    np.savez_compressed(p, **raw)
    with pytest.raises(DataError, match="outside the declared classes") as e:
        open_dataset(p)
    assert str(p) in str(e.value)
    # an unknown set gets its classes from the labels, unless they are declared
    q = tmp_path / "myset.npz"
    shutil.copy(p, q)
    assert open_dataset(q, cache_dir=tmp_path).classes == {0: "0", 1: "1", 5: "5"}
    with pytest.raises(DataError, match="outside the declared classes"):
        open_dataset(q, classes={0: "normal", 1: "pneumonia"})


def test_nan_pixels_named(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.random((6, 16, 16)).astype(np.float32)
    imgs[2, 3, 3] = np.nan
    p = tmp_path / "floaty.npz"
    np.savez(p, train_images=imgs, train_labels=np.array([[0], [1], [0], [1], [0], [1]], np.uint8))
    ds = open_dataset(p, cache_dir=tmp_path)
    with pytest.raises(DataError, match="NaN/Inf") as e:
        ds.load_image("train_00002")
    assert "floaty.npz" in str(e.value)
    with pytest.warns(UserWarning, match="could not be read"):
        c = ds.cohort
    assert c["problem"].notna().sum() == 1 and ds.load_image("train_00001").shape == (1, 16, 16)
