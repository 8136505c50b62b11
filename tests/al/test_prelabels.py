"""Segmentation pre-labels at the image's own size and their NIfTI export for an external editor."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medwb.al.prelabels import entropy_map, predict_mask, write_masks_nifti, write_truth_nifti
from medwb.models import build_segmenter, predict_proba


class _Volumes:
    """A dataset stand-in: two 2-D cases with their own sizes, spacings and reference masks."""

    task, ndim = "segmentation", 2

    def __init__(self) -> None:
        self.shapes = {"a": (20, 12), "b/1": (8, 8)}
        self.cohort = pd.DataFrame({"case_id": list(self.shapes)})

    def affine(self, cid: str) -> np.ndarray:
        return np.diag([0.5 if cid == "a" else 2.0, 0.7, 1.0, 1.0])

    def load_mask(self, cid: str) -> np.ndarray:
        m = np.zeros((1, *self.shapes[cid]), np.int64)
        m[0, :3] = 1
        return m


def test_masks_go_out_in_each_image_grid_with_a_manifest(tmp_path: Path) -> None:
    ds = _Volumes()
    masks = {c: (np.arange(np.prod(s)).reshape(s) % 2) for c, s in ds.shapes.items()}
    manifest = write_masks_nifti(ds, ["a", "b/1"], masks.__getitem__, tmp_path / "out")
    assert list(manifest["case_id"]) == ["a", "b/1"]
    assert pd.read_csv(tmp_path / "out" / "manifest.csv").equals(manifest)
    for rec in manifest.to_dict("records"):
        img = nib.load(str(tmp_path / "out" / rec["file"]))
        assert "/" not in rec["file"] and rec["file"].endswith(".nii.gz")
        assert img.shape == (*ds.shapes[rec["case_id"]], 1)  # 2-D masks as one-slice volumes
        assert np.allclose(img.affine, ds.affine(rec["case_id"])) and img.header.get_intent()[0] == "label"
        assert np.array_equal(np.asarray(img.dataobj)[..., 0], masks[rec["case_id"]])
    write_truth_nifti(ds, manifest, tmp_path / "out")  # the stand-in editor: reference masks over the files
    got = np.asarray(nib.load(str(tmp_path / "out" / manifest["file"][0])).dataobj)[..., 0]
    assert np.array_equal(got, ds.load_mask("a")[0])


def test_predicted_mask_and_entropy_come_back_at_the_image_size() -> None:
    net = build_segmenter(2, 1, 2, seed=0).eval()
    x = np.random.default_rng(0).random((1, 1, 16, 16)).astype(np.float32)
    same = predict_mask(net, x, (16, 16))
    assert np.array_equal(same, predict_proba(net, x).argmax(1)[0])
    big = predict_mask(net, x, (32, 24))
    assert big.shape == (32, 24) and big.dtype == np.int64 and set(np.unique(big)) <= set(np.unique(same))
    ent = entropy_map(net, x, (32, 24), passes=3, seed=0)
    assert ent.shape == (32, 24) and np.isfinite(ent).all() and (ent >= 0).all()
    np.testing.assert_allclose(ent, entropy_map(net, x, (32, 24), passes=3, seed=0))  # seeded
