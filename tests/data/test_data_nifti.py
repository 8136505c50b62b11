"""NIfTI on the bundled MSD hippocampus subset: MSD layout, images/+labels/ pairing, broken volumes."""
from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from medwb.data import open_dataset
from medwb.errors import DataError


@pytest.fixture()
def hippo(samples):
    return samples / "segmentation_3d/hippocampus"


def test_msd_layout(hippo, tmp_path):
    ds = open_dataset(hippo, cache_dir=tmp_path)
    assert (ds.task, ds.ndim, ds.modality) == ("segmentation", 3, "MRI")
    assert ds.classes == {0: "background", 1: "Anterior", 2: "Posterior"}
    c = ds.cohort
    assert c["split"].value_counts().to_dict() == {"train": 60, "unlabelled": 6}  # imagesTs kept as unlabelled
    assert c.loc[c.split == "unlabelled", "mask"].isna().all() and c.loc[c.split == "train", "mask"].notna().all()
    row = c.iloc[0]
    ref = nib.load(row["source"])
    assert row["shape"] == "x".join(map(str, ref.shape)) and row["spacing"] == "1x1x1"
    img = ds.load_image(row["case_id"])
    np.testing.assert_array_equal(img[0], np.asanyarray(ref.dataobj).astype(np.float32))
    m = ds.load_mask(row["case_id"])
    assert m.dtype == np.int64 and m.shape == img.shape and set(np.unique(m)) == {0, 1, 2}
    np.testing.assert_array_equal(ds.affine(row["case_id"]), ref.affine)
    X, y, ids = ds.arrays("train", size=(32, 48, 32), max_cases=3)
    assert X.shape == (3, 1, 32, 48, 32) and y.shape == (3, 1, 32, 48, 32) and set(np.unique(y)) <= {0, 1, 2}
    assert 0 <= X.min() and X.max() <= 1


def _plain_copy(hippo, dest, n=3, suffix="_seg"):
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    names = sorted(p.name for p in (hippo / "imagesTr").iterdir())[:n]
    for nm in names:
        shutil.copy(hippo / "imagesTr" / nm, dest / "images" / nm)
        shutil.copy(hippo / "labelsTr" / nm, dest / "labels" / nm.replace(".nii.gz", f"{suffix}.nii.gz"))
    return names


def test_images_labels_pairing(hippo, tmp_path):
    names = _plain_copy(hippo, tmp_path / "d")
    shutil.copy(hippo / "imagesTs" / sorted((hippo / "imagesTs").iterdir())[0].name, tmp_path / "d/images/extra.nii.gz")
    ds = open_dataset(tmp_path / "d", cache_dir=tmp_path)
    c = ds.cohort.set_index("case_id")
    assert c.loc["extra", "split"] == "unlabelled" and c.loc["extra", "mask"] is None
    stem = names[0].replace(".nii.gz", "")
    assert c.loc[stem, "mask"].endswith(f"{stem}_seg.nii.gz")
    assert ds.classes == {0: "background", 1: "label_1", 2: "label_2"}  # found in the masks
    assert ds.load_mask(stem).shape == ds.load_image(stem).shape


def test_truncated_nifti(hippo, tmp_path):
    _plain_copy(hippo, tmp_path / "d", n=2, suffix="")
    victim = sorted((tmp_path / "d/images").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:900])
    ds = open_dataset(tmp_path / "d", cache_dir=tmp_path)
    with pytest.raises(DataError, match="truncated or corrupt") as e:
        ds.load_image(victim.name.replace(".nii.gz", ""))
    assert str(victim) in str(e.value)


def _save_like(ref_path, data, dest, zooms=None):
    ref = nib.load(ref_path)
    img = nib.Nifti1Image(data, ref.affine)
    if zooms:
        img.header.set_zooms(zooms)
    nib.save(img, dest)


def test_mask_mismatch_nan_and_unknown_label(hippo, tmp_path):
    names = _plain_copy(hippo, tmp_path / "d", n=4, suffix="")
    d = tmp_path / "d"
    ids = [n.replace(".nii.gz", "") for n in names]
    lab0 = np.asanyarray(nib.load(d / "labels" / names[0]).dataobj)
    _save_like(d / "labels" / names[0], lab0[:-2], d / "labels" / names[0])  # wrong shape
    lab1 = np.asanyarray(nib.load(d / "labels" / names[1]).dataobj)
    _save_like(d / "labels" / names[1], lab1, d / "labels" / names[1], zooms=(1.0, 1.0, 2.5))  # wrong spacing
    img2 = np.asanyarray(nib.load(d / "images" / names[2]).dataobj).astype(np.float32)
    img2[5, 5, 5] = np.nan
    _save_like(d / "images" / names[2], img2, d / "images" / names[2])
    ds = open_dataset(d, cache_dir=tmp_path, classes={0: "background", 1: "anterior", 2: "posterior"})
    with pytest.raises(DataError, match="does not match image shape") as e:
        ds.load_mask(ids[0])
    assert names[0] in str(e.value)
    with pytest.raises(DataError, match="spacing"):
        ds.load_mask(ids[1])
    with pytest.raises(DataError, match="NaN/Inf") as e:
        ds.load_image(ids[2])
    assert names[2] in str(e.value)
    lab3 = np.asanyarray(nib.load(d / "labels" / names[3]).dataobj).copy()
    lab3[0, 0, 0] = 7
    _save_like(d / "labels" / names[3], lab3, d / "labels" / names[3])
    with pytest.raises(DataError, match=r"label value\(s\) \[7\] outside the declared classes"):
        open_dataset(d, cache_dir=tmp_path, classes={0: "bg", 1: "a", 2: "p"}).load_mask(ids[3])


def test_msd_missing_label_and_image(hippo, tmp_path):
    d = tmp_path / "msd"
    shutil.copytree(hippo, d)
    first = sorted((d / "labelsTr").iterdir())[0]
    first.unlink()
    ds = open_dataset(d, cache_dir=tmp_path)
    with pytest.raises(DataError, match="missing") as e:
        ds.load_mask(first.name.replace(".nii.gz", ""))
    assert first.name in str(e.value)
    (d / "imagesTr" / first.name).unlink()
    with pytest.raises(DataError, match="listed in dataset.json is missing"):
        open_dataset(d, cache_dir=tmp_path)


def test_single_file_and_duplicate_ids(hippo, tmp_path):
    f = sorted((hippo / "imagesTs").iterdir())[0]
    ds = open_dataset(f, cache_dir=tmp_path)
    assert len(ds.cohort) == 1 and ds.cohort["split"].iloc[0] == "unlabelled"
    d = tmp_path / "flat"
    d.mkdir()
    shutil.copy(f, d / "case1.nii.gz")
    nib.save(nib.load(f), d / "case1.nii")  # same case id, uncompressed
    with pytest.raises(DataError, match="duplicate case id 'case1'"):
        open_dataset(d, cache_dir=tmp_path)


def test_monai_items_and_transform_segmentation(hippo, tmp_path):
    from monai.data import DataLoader
    from monai.data import Dataset as MonaiDataset

    ds = open_dataset(hippo, cache_dir=tmp_path, progress=False)
    items = ds.items("train")
    assert len(items) == 60 and items[0]["label"].endswith(".nii.gz") and items[0]["image"].endswith(".nii.gz")
    loader = DataLoader(MonaiDataset(items[:4], transform=ds.transform(size=(32, 32, 32))), batch_size=2)
    batch = next(iter(loader))
    assert tuple(batch["image"].shape) == (2, 1, 32, 32, 32) and tuple(batch["label"].shape) == (2, 1, 32, 32, 32)
    assert float(batch["image"].min()) >= 0 and float(batch["image"].max()) <= 1
    assert set(batch["label"].unique().tolist()) <= {0, 1, 2}
    unl = MonaiDataset(ds.items("unlabelled")[:1], transform=ds.transform(size=(32, 32, 32)))[0]
    assert "label" not in unl and tuple(unl["image"].shape) == (1, 32, 32, 32)


def test_header_with_impossible_vox_offset_is_a_data_error(samples, tmp_path):
    """Found by the random fuzz run: a header whose vox_offset (100) lies inside the 352-byte header made
    nibabel raise its own HeaderDataError (not a ValueError), which escaped open_dataset."""
    import gzip
    import struct

    src = samples / "segmentation_3d/hippocampus"
    d = tmp_path / "msd"
    shutil.copytree(src, d)
    victim = sorted((d / "imagesTr").iterdir())[0]
    raw = bytearray(gzip.decompress(victim.read_bytes()))
    assert struct.unpack("<f", raw[108:112]) == (352.0,)
    raw[108:112] = struct.pack("<f", 100.0)
    victim.write_bytes(gzip.compress(bytes(raw), mtime=0))
    ds = open_dataset(d, cache_dir=tmp_path / "c", progress=False)  # the set still opens (one bad file)
    case = victim.name[: -len(".nii.gz")]
    with pytest.raises(DataError, match=rf"{case}\.nii\.gz: cannot read NIfTI image header \(HeaderDataError: "
                                        r"vox offset 100 too low.*Fix: re-export"):
        ds.load_image(case)
