"""PNG/JPEG folders on the bundled CHASE_DB1 and HC18 data: observers, outline filling, class folders, bad files."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from medwb.data import open_dataset
from medwb.data.images import is_outline
from medwb.errors import DataError


def test_chase_two_observers(samples, tmp_path):
    ds = open_dataset(samples / "segmentation_2d/chase_db1", cache_dir=tmp_path)
    assert (ds.task, ds.ndim, ds.modality, ds.classes) == ("segmentation", 2, "fundus", {0: "background", 1: "vessel"})
    c = ds.cohort
    assert len(c) == 28 and c["mask"].notna().all() and c["mask2"].notna().all()
    assert ds.subgroup_columns() == []  # metadata.csv carries only the split
    assert c["mask"].str.contains("1stHO").all() and c["mask2"].str.contains("2ndHO").all()
    assert set(c["shape"]) == {"960x999"} and set(c["channels"]) == {3}
    img = ds.load_image("Image_01L")
    m1, m2 = ds.load_mask("Image_01L"), ds.load_mask("Image_01L", observer=2)
    assert img.shape == (3, 960, 999) and m1.shape == m2.shape == (1, 960, 999)
    raw = np.asarray(Image.open(c.loc[0, "mask"]))
    assert m1.sum() == raw.sum()  # vessel trees are not outlines: nothing filled
    dice = 2 * (m1 & m2).sum() / (m1.sum() + m2.sum())
    assert 0.6 < dice < 0.95  # two real observers: similar, not identical


def test_hc18_spacing_table_and_masks(samples, tmp_path):
    ds = open_dataset(samples / "segmentation_2d/hc18", cache_dir=tmp_path)
    c = ds.cohort.set_index("case_id")
    table = pd.read_csv(samples / "segmentation_2d/hc18/pixel_size_and_HC.csv").set_index("filename")
    px = table.loc["000_HC.png", "pixel size(mm)"]
    assert c.loc["000_HC", "spacing"] == f"{px:.6g}x{px:.6g}"
    assert c.loc["000_HC", "head_circumference_mm"] == table.loc["000_HC.png", "head circumference (mm)"]
    m = ds.load_mask("000_HC")[0].astype(bool)
    assert not ndimage.binary_fill_holes(m).sum() > m.sum()  # a solid head mask
    np.testing.assert_allclose(ds.affine("000_HC")[:2, :2], np.diag([px, px]), rtol=1e-6)


def test_outline_annotations_are_filled(samples, tmp_path):
    """HC18 as released: 1-pixel ellipse outlines (RGB). Made here from the real head masks' boundaries."""
    src = samples / "segmentation_2d/hc18"
    d = tmp_path / "hc18_outlines"
    (d / "images").mkdir(parents=True)
    (d / "annotations").mkdir()
    names = sorted(p.name for p in (src / "images").iterdir())[:4]
    solid = {}
    for nm in names:
        shutil.copy(src / "images" / nm, d / "images" / nm)
        ann = nm.replace(".png", "_Annotation.png")
        m = np.asarray(Image.open(src / "annotations" / ann).convert("L")) > 127
        ring = m & ~ndimage.binary_erosion(m)
        assert ring.sum() < 0.05 * m.sum()
        Image.fromarray(np.repeat(ring[..., None] * 255, 3, axis=2).astype(np.uint8)).save(d / "annotations" / ann)
        solid[nm[:-4]] = m
    assert is_outline(ring)[0] and not is_outline(m)[0]
    ds = open_dataset(d, cache_dir=tmp_path)
    for cid, m in solid.items():
        filled = ds.load_mask(cid)[0].astype(bool)
        assert (filled == m).mean() > 0.999 and filled.sum() > 10 * (m & ~ndimage.binary_erosion(m)).sum()
    raw = open_dataset(d, cache_dir=tmp_path, fill_outlines=False).load_mask(names[0][:-4])
    assert raw.sum() < 0.05 * solid[names[0][:-4]].sum()


def _subject(case_id: str) -> str:
    return case_id.split("_")[0] if case_id[0].isdigit() else case_id[len("Image_"):-1]


def test_chase_split_convention(samples, tmp_path):
    """CHASE_DB1 has no split folders: the shipped metadata.csv gives subjects 01-10 (both eyes) train, 11-14 test."""
    ds = open_dataset(samples / "segmentation_2d/chase_db1", cache_dir=tmp_path, progress=False)
    c = ds.cohort
    assert c["split"].value_counts().to_dict() == {"train": 20, "test": 8}
    for cid, split in zip(c["case_id"], c["split"]):
        assert split == ("train" if int(_subject(cid)) <= 10 else "test"), cid
    X, y, ids = ds.arrays("test", size=(32, 32))
    assert X.shape == (8, 3, 32, 32) and y.shape == (8, 1, 32, 32) and ids[0] == "Image_11L"


def test_hc18_subject_grouped_split(samples, tmp_path):
    """HC18: seeded ~60/20/20 split of subjects; NNN_HC, NNN_2HC, NNN_3HC (one fetus) never straddle splits."""
    ds = open_dataset(samples / "segmentation_2d/hc18", cache_dir=tmp_path, progress=False)
    c = ds.cohort
    subj = c.assign(subject=c["case_id"].map(_subject)).groupby("subject")["split"]
    assert (subj.nunique() == 1).all()
    per_subject = subj.first().value_counts().to_dict()
    assert per_subject == {"train": 19, "val": 6, "test": 7}  # 32 subjects: round(0.6*32), round(0.2*32), rest
    assert c["split"].value_counts().to_dict() == {"train": 22, "val": 9, "test": 9}
    assert set(c.loc[c["case_id"].str.match(r"108_"), "split"]) == {subj.first()["108"]}  # 3 scans, one split
    assert ds.subgroup_columns() == []  # the split is not a patient subgroup


def test_sample_split_files_are_what_the_script_writes(samples, tmp_path):
    """metadata.csv files are reproducible from scripts/make_data_samples.py (deterministic, seeded)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_samples", samples.parent / "scripts/make_data_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in ("chase_db1", "hc18"):
        shutil.copytree(samples / "segmentation_2d" / name / "images", tmp_path / "segmentation_2d" / name / "images")
    mod.write_all_splits(tmp_path)
    for name in ("chase_db1", "hc18"):
        shipped = (samples / "segmentation_2d" / name / "metadata.csv").read_bytes()
        assert (tmp_path / "segmentation_2d" / name / "metadata.csv").read_bytes() == shipped
    other_seed = mod.hc18_splits(samples / "segmentation_2d/hc18", seed=1)
    assert other_seed != mod.hc18_splits(samples / "segmentation_2d/hc18")  # the seed matters


def _class_folders(samples, root, per_class=6):
    z = np.load(samples / "classification_2d/pneumoniamnist.npz")
    for split in ("train", "test"):
        imgs, labs = z[f"{split}_images"], z[f"{split}_labels"][:, 0]
        for k, name in enumerate(("NORMAL", "PNEUMONIA")):
            out = root / split / name
            out.mkdir(parents=True)
            for i in np.flatnonzero(labs == k)[:per_class]:
                Image.fromarray(imgs[i]).save(out / f"{split}{i:04d}.png")
    return z


def test_class_subfolders_with_splits_and_metadata(samples, tmp_path):
    z = _class_folders(samples, tmp_path / "cxr")
    ds = open_dataset(tmp_path / "cxr", cache_dir=tmp_path)
    assert ds.task == "classification" and ds.classes == {0: "NORMAL", 1: "PNEUMONIA"}
    c = ds.cohort
    assert c.groupby(["split", "label"]).size().to_dict() == {("test", 0): 6, ("test", 1): 6,
                                                             ("train", 0): 6, ("train", 1): 6}
    cid = c.loc[(c.split == "train") & (c.label == 1), "case_id"].iloc[0]
    idx = int(cid.split("train")[-1])
    np.testing.assert_array_equal(ds.load_image(cid)[0], z["train_images"][idx])
    X, y, _ = ds.arrays("test")
    assert X.shape == (12, 1, 28, 28) and sorted(y.tolist()) == [0] * 6 + [1] * 6
    meta = pd.DataFrame({"case_id": c["case_id"], "sex": ["F", "M"] * 12, "site": "A"})
    meta.to_csv(tmp_path / "cxr/metadata.csv", index=False)
    ds2 = open_dataset(tmp_path / "cxr", cache_dir=tmp_path)
    c2 = ds2.cohort
    assert ds2.subgroup_columns() == ["sex", "site"] and ds.subgroup_columns() == []
    assert c2.groupby("sex").size().to_dict() == {"F": 12, "M": 12} and (c2["site"] == "A").all()
    meta.loc[0, "case_id"] = "no_such_case"
    meta.to_csv(tmp_path / "cxr/metadata.csv", index=False)
    with pytest.raises(DataError, match="not in the dataset") as e:
        open_dataset(tmp_path / "cxr")
    assert "metadata.csv" in str(e.value)


def _hc_copy(samples, d, n=3):
    src = samples / "segmentation_2d/hc18"
    (d / "images").mkdir(parents=True)
    (d / "annotations").mkdir()
    names = sorted(p.name for p in (src / "images").iterdir())[:n]
    for nm in names:
        shutil.copy(src / "images" / nm, d / "images" / nm)
        ann = nm.replace(".png", "_Annotation.png")
        shutil.copy(src / "annotations" / ann, d / "annotations" / ann)
    return [nm[:-4] for nm in names]


def test_truncated_png_and_mismatched_mask(samples, tmp_path):
    d = tmp_path / "hc"
    ids = _hc_copy(samples, d)
    victim = d / "images" / f"{ids[0]}.png"
    victim.write_bytes(victim.read_bytes()[:5000])
    ann = d / "annotations" / f"{ids[1]}_Annotation.png"
    Image.open(ann).resize((400, 270)).save(ann)
    ds = open_dataset(d, cache_dir=tmp_path)
    with pytest.raises(DataError, match="truncated or corrupt") as e:
        ds.load_image(ids[0])
    assert str(victim) in str(e.value)
    with pytest.raises(DataError, match="does not match image shape 540x800") as e:
        ds.load_mask(ids[1])
    assert str(ann) in str(e.value)
    (d / "annotations" / f"{ids[2]}_Annotation.png").unlink()
    ds = open_dataset(d, cache_dir=tmp_path)
    with pytest.warns(UserWarning, match="1 case"):  # the truncated image: listed, not fatal
        c = ds.cohort.set_index("case_id")
    assert c.loc[ids[0], "problem"].startswith(str(victim))
    assert c.loc[ids[2], "split"] == "unlabelled" and ds.load_mask(ids[2]) is None


def test_structural_errors(samples, tmp_path):
    d = tmp_path / "hc"
    ids = _hc_copy(samples, d)
    stray = d / "annotations" / "999_HC_Annotation.png"
    shutil.copy(d / "annotations" / f"{ids[0]}_Annotation.png", stray)
    with pytest.raises(DataError, match="matches no image") as e:
        open_dataset(d)
    assert str(stray) in str(e.value)
    stray.unlink()
    Image.open(d / "images" / f"{ids[0]}.png").save(d / "images" / f"{ids[0]}.jpg")
    with pytest.raises(DataError, match=f"duplicate case id '{ids[0]}'"):
        open_dataset(d)
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="empty") as e:
        open_dataset(tmp_path / "empty")
    assert "empty" in str(e.value)


def test_grey_split_gets_rgb_when_the_dataset_has_colour(samples, tmp_path):
    """The grey -> RGB rule is dataset-wide: a split holding only grey HC18 PNGs still gets 3 channels when
    another split has colour CHASE_DB1 JPEGs (else a model trained on one split could not score the other)."""
    d = tmp_path / "mixed"
    for cls in ("a", "b"):
        (d / cls).mkdir(parents=True)
        shutil.copy(samples / "segmentation_2d/hc18/images/000_HC.png", d / cls / "grey.png")
        shutil.copy(samples / "segmentation_2d/chase_db1/images/Image_01L.jpg", d / cls / "colour.jpg")
    pd.DataFrame({"case_id": ["a/grey", "b/grey", "a/colour", "b/colour"],
                  "split": ["test", "test", "train", "train"]}).to_csv(d / "metadata.csv", index=False)
    for build_cohort_first in (False, True):  # channels from file headers, or from the cohort statistics
        ds = open_dataset(d, cache_dir=tmp_path / "c", progress=False)
        if build_cohort_first:
            assert sorted(ds.cohort["channels"]) == [1, 1, 3, 3]
        X_test, _, ids = ds.arrays("test", size=(16, 16))
        X_train, _, _ = ds.arrays("train", size=(16, 16))
        assert ids == ["a/grey", "b/grey"] and X_test.shape == (2, 3, 16, 16) and X_train.shape == (2, 3, 16, 16)
        assert np.array_equal(X_test[:, 0], X_test[:, 2])
        grey = ds.arrays("test")[0]  # without resizing: the file's own grey values, repeated
        np.testing.assert_array_equal(grey[0, 1], ds.load_image("a/grey")[0] / 255.0)
