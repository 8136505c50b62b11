"""`medwb check` / check_dataset: duplicates across splits on real PneumoniaMNIST, errors listed, CLI exit codes."""
from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from medwb.cli import main
from medwb.data.check import check_dataset, find_duplicates
from medwb.data.hashing import near_duplicate_pairs, phash


def test_pneumoniamnist_train_val_duplicates(samples, tmp_path):
    p = samples / "classification_2d/pneumoniamnist.npz"
    rep = check_dataset(p, cache_dir=tmp_path, progress=False)
    assert rep.ok and rep.summary["cases"] == 5856
    assert rep.counts.loc["total", "total"] == 5856 and rep.counts.loc["val", "1 pneumonia"] == 389
    d = rep.duplicates
    cross = d[(d["kind"] == "exact") & d["cross_split"]]
    assert len(cross) >= 1 and set(zip(cross["split_a"], cross["split_b"])) == {("train", "val")}
    z = np.load(p)  # each reported pair really is pixel-identical
    for a, b in zip(cross["case_a"], cross["case_b"]):
        np.testing.assert_array_equal(z["train_images"][int(a.split("_")[1])], z["val_images"][int(b.split("_")[1])])
    assert any("across splits (train-val" in w for w in rep.warnings)
    text = rep.to_text()
    assert "train-val" in text and "Cases per split and class" in text and "Result: OK" in text


def test_near_duplicates_found_and_verified(samples, tmp_path):
    """A re-encoded copy (brightness/contrast change + noise) of a real image is a near duplicate; merely
    similar chest X-rays are not."""
    ds_path = samples / "classification_2d/pneumoniamnist.npz"
    z = dict(np.load(ds_path))
    rng = np.random.default_rng(0)
    src = z["train_images"][10].astype(float)
    copy = np.clip(src * 0.9 + 12 + rng.normal(0, 2, src.shape), 0, 255).astype(np.uint8)
    z["test_images"] = np.concatenate([z["test_images"], copy[None]])
    z["test_labels"] = np.concatenate([z["test_labels"], z["train_labels"][10:11]])
    p = tmp_path / "pneumoniamnist.npz"
    np.savez(p, **z)
    rep = check_dataset(p, cache_dir=tmp_path, progress=False)
    near = rep.duplicates[rep.duplicates["kind"] == "near"]
    hit = near[(near["case_a"] == "train_00010") & (near["case_b"] == "test_00624")]
    assert len(hit) == 1 and hit["similarity"].iloc[0] > 0.95 and hit["cross_split"].iloc[0]
    assert len(near) < 20  # the hash alone would pair hundreds of similar X-rays; correlation keeps copies only


def test_hash_banding_matches_brute_force(samples):
    z = np.load(samples / "classification_2d/pneumoniamnist.npz")
    hashes = [phash(im[None], 2) for im in z["val_images"]]
    vals = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    dist = np.bitwise_count(vals[:, None] ^ vals[None, :])
    i, j = np.nonzero(np.triu(dist <= 6, k=1))
    assert sorted(zip(i.tolist(), j.tolist())) == [(a, b) for a, b, _ in near_duplicate_pairs(hashes, 6)]
    assert find_duplicates(__import__("pandas").DataFrame(
        {"case_id": ["a", "b"], "split": ["train", "test"], "sha256": ["x", "x"], "phash": [hashes[0]] * 2,
         "source": ["f", "f"]}))["kind"].tolist() == ["exact"]


def test_errors_are_listed_not_fatal(samples, tmp_path, monkeypatch):
    """A broken NIfTI, a mismatched mask and a missing mask in one folder: all reported, exit code 1."""
    hippo = samples / "segmentation_3d/hippocampus"
    d = tmp_path / "d"
    (d / "images").mkdir(parents=True)
    (d / "labels").mkdir()
    names = sorted(p.name for p in (hippo / "imagesTr").iterdir())[:4]
    for nm in names:
        shutil.copy(hippo / "imagesTr" / nm, d / "images" / nm)
        shutil.copy(hippo / "labelsTr" / nm, d / "labels" / nm)
    bad = d / "images" / names[0]
    bad.write_bytes(bad.read_bytes()[:700])
    lab = nib.load(d / "labels" / names[1])
    nib.save(nib.Nifti1Image(np.asanyarray(lab.dataobj)[:, :-3], lab.affine), d / "labels" / names[1])
    (d / "labels" / names[2]).unlink()
    rep = check_dataset(d, cache_dir=tmp_path, progress=False)
    text = rep.to_text()
    assert len(rep.errors) == 2 and not rep.ok
    assert any(names[0] in e and "truncated" in e for e in rep.errors)
    assert any(names[1] in e and "does not match image shape" in e for e in rep.errors)
    assert any("without a mask" in w and names[2].split(".")[0] in w for w in rep.warnings)
    assert "Result: 2 error(s)" in text
    monkeypatch.setenv("MEDWB_CACHE", str(tmp_path / "cache"))
    assert main(["check", str(d)]) == 1


def test_cli_exit_codes(samples, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDWB_CACHE", str(tmp_path / "cache"))
    assert main(["check", str(samples / "segmentation_2d/hc18")]) == 0
    out = capsys.readouterr().out
    assert "two observers" not in out and "with mask" in out and "Result: OK" in out
    (tmp_path / "empty").mkdir()
    assert main(["check", str(tmp_path / "empty")]) == 1
    assert "folder is empty" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "nothing_here")]) == 1
    with pytest.raises(SystemExit) as e:
        main(["check", "--help"])
    assert e.value.code == 0


def test_cli_metadata_option(samples, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDWB_CACHE", str(tmp_path / "cache"))
    data = samples / "segmentation_3d/hippocampus"
    meta = tmp_path / "subjects.csv"
    meta.write_text("case_id,site\nhippocampus_001,A\nhippocampus_003,B\n")
    assert main(["check", str(data), "--metadata", str(meta)]) == 0
    meta.write_text("case_id,site\nhippocampus_999,A\n")
    assert main(["check", str(data), "--metadata", str(meta)]) == 1
    assert "subjects.csv: 1 case id(s) not in the dataset" in capsys.readouterr().out


def test_grey_and_colour_images_mixed_is_a_warning(samples, tmp_path):
    """A class-folder set mixing grey HC18 PNGs and colour CHASE_DB1 JPEGs: usable (grey -> RGB), but said."""
    d = tmp_path / "mixed"
    for cls in ("a", "b"):
        (d / cls).mkdir(parents=True)
        shutil.copy(samples / "segmentation_2d/hc18/images/000_HC.png", d / cls / "grey.png")
        shutil.copy(samples / "segmentation_2d/chase_db1/images/Image_01L.jpg", d / cls / "colour.jpg")
    rep = check_dataset(d, cache_dir=tmp_path / "c", progress=False)
    assert rep.ok, rep.errors
    warn = [w for w in rep.warnings if "grey and colour images mixed" in w]
    assert len(warn) == 1 and "2 with 1 channel(s), 2 with 3 channel(s)" in warn[0] and "R=G=B" in warn[0]
