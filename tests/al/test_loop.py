"""The active-learning loop on small real subsets: rounds, provenance, resume, segmentation, errors."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medwb.al.loop import ActiveLearningLoop
from medwb.al.oracle import LabelAnswer, simulated_oracle
from medwb.al.prelabels import export_prelabels_nifti, uncertainty_map
from medwb.errors import ConfigError, StoreError
from medwb.models import TrainConfig, load_checkpoint
from medwb.store import Study
from medwb.store.pool import load_splits


FAST = TrainConfig(epochs=1, min_epochs=1, batch_size=8, seed=0)


def _study(folder: Path, ds, path: Path) -> Study:
    return Study.create(folder, dataset_path=str(path), task=ds.task, classes=ds.classes)


@pytest.mark.slow
def test_rounds_record_selection_labels_models_and_provenance(tiny, tmp_path: Path) -> None:
    path, ds = tiny
    study = _study(tmp_path / "s", ds, path)
    loop = ActiveLearningLoop(study, ds, strategy="entropy", batch_size=6, train_config=FAST, seed=0,
                              mc_passes=5, evaluate_test=True, progress=False, pretrain=False, semi=False)
    results = loop.run(3, simulated_oracle(ds, annotator="sim"))
    assert [r.round for r in results] == [1, 2, 3] and [r.n_labeled for r in results] == [6, 12, 18]
    rounds = study.rounds()
    assert list(rounds["strategy"]) == ["cold_start", "entropy", "entropy"]  # no model yet -> label-free start
    assert list(rounds["status"]) == ["finished"] * 3
    selected = [c for sel in rounds["selected_ids"] for c in sel]
    assert len(selected) == len(set(selected)) == 18  # nothing selected twice
    assert all(len(sc) == 6 for sc in rounds["scores"])
    assert all(p["select_seconds"] >= 0 and p["k"] == 6 for p in rounds["params"])
    labels = study.labels()
    truth = ds.cohort.set_index("case_id")["label"]
    assert all(int(v) == int(truth[c]) for c, v in zip(labels["case_id"], labels["value"]))
    assert set(labels["annotator"]) == {"sim"} and set(labels["source"]) <= {"human", "corrected"}
    # labels of round 2 were pre-labelled by round 1's model: provenance names it
    models = study.models()
    assert list(models["round"]) == [1, 2, 3]
    assert set(labels.loc[labels["round"] == 2, "model_version"]) == {models.iloc[0]["version"]}
    assert labels.loc[labels["round"] == 1, "model_version"].isna().all()
    for m in models.to_dict("records"):
        assert Path(m["checkpoint_path"]).is_file() and Path(m["checkpoint_path"]).parent == study.folder / "models"
        assert {"val_auc", "val_accuracy", "test_auc", "test_accuracy", "n_labeled"} <= set(m["metrics"])
    assert "autolabel_coverage" in models.iloc[-1]["metrics"]
    # entropy picked the most uncertain cases: scores are sorted, best first
    sc = rounds.iloc[1]["scores"]
    assert sc == sorted(sc, reverse=True)


@pytest.mark.slow
def test_restart_resumes_half_labelled_round_with_remaining_cases(tiny, tmp_path: Path) -> None:
    path, ds = tiny
    oracle = simulated_oracle(ds)
    study = _study(tmp_path / "s", ds, path)
    loop = ActiveLearningLoop(study, ds, strategy="bald", batch_size=5, train_config=FAST, seed=1, mc_passes=5,
                              progress=False, pretrain=False, semi=False)
    loop.run_round(oracle)
    batch = loop.propose()  # round 2 starts
    assert loop.round == 2 and len(batch) == 5 and batch["prelabel"].notna().all()
    assert batch["confidence"].between(0, 1).all()
    for cid in batch["case_id"][:2]:
        loop.save_label(cid, oracle(cid, None))
    study.close()  # the process "dies" here

    study = Study.open(tmp_path / "s")
    again = ActiveLearningLoop(study, ds, strategy="bald", batch_size=5, train_config=FAST, seed=1, mc_passes=5,
                               progress=False, pretrain=False, semi=False)
    assert again.finished_rounds() == 1
    rest = again.propose()
    assert again.round == 2 and list(rest["case_id"]) == list(batch["case_id"][2:])
    assert list(again.propose()["case_id"]) == list(rest["case_id"])  # proposing again starts nothing new
    for cid in rest["case_id"]:
        again.save_label(cid, oracle(cid, None))
    res = again.complete()
    assert res.round == 2 and res.n_labeled == 10 and again.finished_rounds() == 2
    assert len(study.rounds()) == 2
    with pytest.raises(StoreError):
        again.complete()  # no open round
    # run() counts the finished rounds in the store: only the missing one is done
    assert [r.round for r in again.run(3, oracle)] == [3]


def test_random_baseline_is_random_from_the_first_batch(tiny, tmp_path: Path) -> None:
    path, ds = tiny
    study = _study(tmp_path / "s", ds, path)
    loop = ActiveLearningLoop(study, ds, strategy="random", batch_size=4, seed=3, progress=False, pretrain=False, semi=False)
    batch = loop.propose()
    assert study.rounds().iloc[0]["strategy"] == "random" and len(batch) == 4
    other = _study(tmp_path / "t", ds, path)
    same_seed = ActiveLearningLoop(other, ds, strategy="random", batch_size=4, seed=3, progress=False, pretrain=False, semi=False).propose()
    assert list(same_seed["case_id"]) == list(batch["case_id"])  # seeded: reproducible


def test_bad_arguments_raise_named_errors(tiny, tmp_path: Path) -> None:
    path, ds = tiny
    study = _study(tmp_path / "s", ds, path)
    with pytest.raises(ConfigError, match=r"unknown acquisition strategy 'most_interesting'\. Fix: use one of .*hybrid"):
        ActiveLearningLoop(study, ds, strategy="most_interesting", pretrain=False, semi=False)
    with pytest.raises(ConfigError, match="unknown acquisition strategy 'nope'"):
        ActiveLearningLoop(study, ds, cold_start="nope", pretrain=False, semi=False)
    with pytest.raises(StoreError, match="batch_size"):
        ActiveLearningLoop(study, ds, batch_size=0, pretrain=False, semi=False)
    seg = Study.create(tmp_path / "seg", dataset_path=str(path), task="segmentation", classes={0: "bg", 1: "fg"})
    with pytest.raises(StoreError, match="segmentation study"):
        ActiveLearningLoop(seg, ds, pretrain=False, semi=False)
    loop = ActiveLearningLoop(study, ds, progress=False, pretrain=False, semi=False)
    with pytest.raises(StoreError, match="no open round"):
        loop.save_label("train_00000", LabelAnswer(value=1, annotator="x"))


@pytest.mark.slow
def test_segmentation_rounds_and_nifti_round_trip(samples: Path, tmp_path: Path) -> None:
    from medwb.data import open_dataset

    path = samples / "segmentation_3d" / "hippocampus"
    ds = open_dataset(path, progress=False)
    study = Study.create(tmp_path / "s", dataset_path=str(path), task=ds.task, classes=ds.classes)
    loop = ActiveLearningLoop(study, ds, strategy="hybrid", batch_size=3, max_pool=15, mc_passes=4, seed=0,
                              train_config=TrainConfig(epochs=1, min_epochs=1, batch_size=4, seed=0),
                              progress=False, pretrain=False, semi=False)
    splits = loop.split_ids()  # MSD has no val/test: carved from the labelled cases, disjoint
    assert len(splits["train"]) == 15 and splits["val"] and splits["test"]
    assert not (set(splits["train"]) & set(splits["val"])) and not (set(splits["val"]) & set(splits["test"]))
    loop.run(2, simulated_oracle(ds))
    rounds = study.rounds()
    assert list(rounds["strategy"]) == ["random", "hybrid"]  # 3D: a random first batch (first_batch_strategy)
    assert rounds.iloc[1]["params"]["voxel_reduce"] == "topk"
    labels = study.labels()
    assert len(labels) == 6 and labels["mask_path"].map(lambda p: Path(p).is_file()).all()
    metrics = study.models().iloc[-1]["metrics"]
    assert "val_dice" in metrics
    # by default a segmentation round also self-trains: every unlabelled pool volume gets the round model's mask
    assert rounds.iloc[1]["params"]["self_train"] is True and metrics["pseudo_labels"] == 15 - 6
    assert metrics["self_trained"] in (0.0, 1.0) and "val_score_student" in metrics
    _, meta = load_checkpoint(study.models().iloc[-1]["checkpoint_path"])
    assert meta["splits"] == splits and meta["size"] == list(loop.size)  # a report needs only the checkpoint
    # round 3: pre-label masks out to NIfTI (image grid + affine) and edited masks back in
    batch = loop.propose()
    out = tmp_path / "edit"
    manifest = export_prelabels_nifti(loop, batch["case_id"], out)
    assert len(manifest) == 3
    for rec in manifest.to_dict("records"):
        img = nib.load(str(out / rec["file"]))
        assert img.shape == ds.load_image(rec["case_id"]).shape[1:]
        assert np.allclose(img.affine, ds.affine(rec["case_id"]))
        truth = ds.load_mask(rec["case_id"])[0]  # the "edited" mask: the reference annotation
        nib.save(nib.Nifti1Image(truth.astype(np.int16), img.affine), str(out / rec["file"]))
    imported = study.import_masks(out, "reader-1", shape_lookup=lambda c: ds.load_image(c).shape[1:])
    assert sorted(imported["case_id"]) == sorted(batch["case_id"])
    assert loop.propose().empty  # the round's cases are labelled now
    assert loop.complete().n_labeled == 9
    unc = uncertainty_map(loop, str(batch["case_id"].iloc[0]))
    assert unc.shape == ds.load_image(str(batch["case_id"].iloc[0])).shape[1:] and np.isfinite(unc).all()


def test_splits_are_saved_in_the_study_and_reused(tiny, tmp_path: Path) -> None:
    path, ds = tiny
    study = _study(tmp_path / "s", ds, path)
    loop = ActiveLearningLoop(study, ds, strategy="random", batch_size=4, max_pool=30, progress=False, pretrain=False, semi=False)
    saved = load_splits(study)
    assert saved == loop.split_ids() and len(saved["train"]) == 30  # the max_pool subset, saved on init
    X, _, ids = loop.arrays("train")
    assert ids == saved["train"] and len(X) == 30
    # reopened without the pool settings (a report, a restarted kernel): the saved splits, not a fresh carve
    again = ActiveLearningLoop(study, ds, strategy="random", batch_size=4, progress=False, pretrain=False, semi=False)
    assert again.split_ids() == saved and again.pool_size == 30


def test_round_is_read_from_the_store(tiny, tmp_path: Path) -> None:
    path, ds = tiny
    study = _study(tmp_path / "s", ds, path)
    loop = ActiveLearningLoop(study, ds, strategy="random", batch_size=3, seed=0, progress=False, pretrain=False, semi=False)
    assert loop.round is None
    batch = loop.propose()
    # a second loop on the same study (a restarted kernel) sees the open round and may save its labels
    other = ActiveLearningLoop(study, ds, strategy="random", batch_size=3, seed=0, progress=False, pretrain=False, semi=False)
    assert other.round == loop.round == 1
    lid = other.save_label(batch["case_id"].iloc[0], LabelAnswer(value=1, annotator="x"))
    row = study.labels().set_index("label_id").loc[lid]
    assert row["round"] == 1 and row["annotator"] == "x"
