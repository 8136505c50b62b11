"""Segmentation pre-labels at the image's own size and their NIfTI export for an external editor."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medwb.al.prelabels import entropy_map, predict_mask, write_masks_nifti, write_truth_nifti
from medwb.data.dataset import resize
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
    assert big.shape == (32, 24) and big.dtype == np.int64 and set(np.unique(big)) <= {0, 1}
    # the most likely class of the probabilities resized to the image's size (not a resized label map)
    prob = resize(predict_proba(net, x)[0], (32, 24), "image")
    assert np.array_equal(big, prob.argmax(0))
    ent = entropy_map(net, x, (32, 24), passes=3, seed=0)
    assert ent.shape == (32, 24) and np.isfinite(ent).all() and (ent >= 0).all()
    np.testing.assert_allclose(ent, entropy_map(net, x, (32, 24), passes=3, seed=0))  # seeded


def test_first_round_of_a_2d_segmentation_study_gets_label_free_ellipse_masks(hc18, hippocampus, tmp_path) -> None:
    """``ActiveLearningLoop(prelabel="ellipse")``: before any model, each proposed case's pre-label is the
    label-free ellipse (stored as the round's predicted mask, producer structure:ellipse), which a reader's page
    and proposed_mask start from; once a model exists the model's masks take over."""
    from medwb.al.loop import ActiveLearningLoop
    from medwb.al.oracle import simulated_oracle
    from medwb.al.prelabels import proposed_mask
    from medwb.al.regions import spacing_of
    from medwb.al.shape_prior import ellipse_prelabel
    from medwb.errors import ConfigError
    from medwb.models import TrainConfig
    from medwb.store import Study

    study = Study.create(tmp_path / "s", dataset_path=str(hc18.path), task=hc18.task, classes=hc18.classes)
    loop = ActiveLearningLoop(study, hc18, strategy="random", batch_size=2, seed=0, progress=False, pretrain=False,
                              semi=False, prelabel="ellipse", size=(64, 64),
                              train_config=TrainConfig(epochs=1, min_epochs=1, batch_size=2, seed=0))
    batch = loop.propose()
    stored = study.predicted_masks(1)
    assert sorted(stored["case_id"]) == sorted(batch["case_id"])
    assert set(stored["producer"]) == {"structure:ellipse"} and stored["model_version"].isna().all()
    for cid in batch["case_id"]:
        image = hc18.load_image(cid)
        expected = ellipse_prelabel(image, spacing=spacing_of(hc18, cid), random_state=0)
        shown = proposed_mask(loop, cid)
        assert shown.shape == image.shape[1:] and np.array_equal(shown != 0, expected)
        assert shown.any()  # a ring found (its Dice over all 253 HC18 heads: benchmarks/structure/README.md)
    loop.propose()  # a reopened round keeps its masks (no second row per case)
    assert len(study.predicted_masks(1)) == len(batch)
    oracle = simulated_oracle(hc18)
    for cid in batch["case_id"]:
        loop.save_label(cid, oracle(cid, None))
    loop.complete()
    loop.propose()
    now = study.predicted_masks(2)  # the model's masks once a model exists
    assert set(now["model_version"]) == {loop.current_model()[1]} and set(now["producer"]) == {"model"}
    study.close()
    hippo = Study.create(tmp_path / "h", dataset_path=str(hippocampus.path), task=hippocampus.task,
                         classes=hippocampus.classes)
    with pytest.raises(ConfigError, match="2D segmentation"):
        ActiveLearningLoop(hippo, hippocampus, prelabel="ellipse", pretrain=False, semi=False, progress=False)
    with pytest.raises(ConfigError, match="unknown"):
        ActiveLearningLoop(study, hc18, prelabel="circle", pretrain=False, semi=False, progress=False)
    hippo.close()


def test_first_round_of_a_fundus_study_gets_label_free_vessel_masks(samples, tmp_path) -> None:
    """``prelabel="vessels"``: the same first-round path as the ellipse, with the vessel prior's masks (producer
    structure:vessels) for a fundus set."""
    from medwb.al.loop import ActiveLearningLoop
    from medwb.al.prelabels import proposed_mask
    from medwb.al.vessel_prior import vessel_prelabel
    from medwb.data import open_dataset
    from medwb.store import Study

    chase = open_dataset(samples / "segmentation_2d" / "chase_db1", progress=False)
    study = Study.create(tmp_path / "c", dataset_path=str(chase.path), task=chase.task, classes=chase.classes)
    loop = ActiveLearningLoop(study, chase, strategy="random", batch_size=1, seed=0, progress=False, pretrain=False,
                              semi=False, prelabel="vessels", size=(64, 64))
    batch = loop.propose()
    stored = study.predicted_masks(1)
    assert set(stored["producer"]) == {"structure:vessels"} and stored["model_version"].isna().all()
    cid = str(batch["case_id"].iloc[0])
    shown = proposed_mask(loop, cid)
    assert np.array_equal(shown != 0, vessel_prelabel(chase.load_image(cid)))
    assert 0.02 < (shown != 0).mean() < 0.3  # thin vessels, not the whole field
    study.close()
