"""Self-training: the round's model pseudo-labels the pool with the auto-label rule, a fresh student learns the
expert labels (repeated to half its cases) plus the accepted pseudo-labels, and validation decides which is kept.
Pseudo-labels are training signal only: the store holds the expert labels and nothing else."""
from __future__ import annotations

import importlib
from dataclasses import replace

import numpy as np
import pytest
import torch

from medwb.al.fit import (SELF_TRAIN_SEGMENTATION_EPOCHS, fit_round, fit_self_trained, keeps_fixmatch,
                          pseudo_label_pool)
from medwb.errors import DataError
from medwb.models import TrainConfig, build_classifier, build_segmenter


def _blobs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    X = rng.normal(0.3, 0.1, (n, 1, 16, 16)).astype(np.float32)
    X[y == 1, :, 4:10, 4:10] += 0.5  # class 1: a bright square
    return X.clip(0, 1), y


CFG = TrainConfig(epochs=4, min_epochs=1, batch_size=8, seed=0)


def _net():
    return build_classifier(2, 1, 2, channels=(4, 8))


def test_the_student_learns_the_labels_repeated_plus_the_accepted_pseudo_labels(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    (X, y), (Xu, yu), val = _blobs(16, rng), _blobs(120, rng), _blobs(80, rng)
    teacher, _ = fit_round(_net(), X, y, val, task="classification", config=CFG, progress=False)
    pseudo = pseudo_label_pool(teacher, Xu, val, target_error=0.1)
    accepted = pseudo.auto_accept
    assert accepted.sum() > 20, "an easy task: the rule accepts a good part of the pool"
    assert (pseudo.labels[accepted] == yu[accepted]).mean() >= 0.9  # what the rule certifies on validation
    seen = []
    train_module = importlib.import_module("medwb.models.train")  # the module (medwb.models.train is the function)
    real = train_module.train

    def spy(model, X_s, y_s, *args, config, **kw):
        seen.append((len(X_s), np.asarray(y_s).copy(), config))
        return real(model, X_s, y_s, *args, config=config, **kw)

    monkeypatch.setattr(train_module, "train", spy)
    student, m = fit_self_trained(_net(), teacher, X, y, Xu, val, config=CFG, progress=False, pseudo=pseudo,
                                  epochs=3, label_share=0.5)
    n_acc = int(accepted.sum())
    reps = max(1, round(n_acc / len(y)))  # label_share 0.5: as many expert-label copies as pseudo-labels
    (n_s, y_s, cfg), = seen
    assert n_s == reps * len(y) + n_acc
    assert np.array_equal(y_s[:reps * len(y)], np.tile(y, reps))  # the expert labels, unchanged
    assert np.array_equal(y_s[reps * len(y):], pseudo.labels[accepted])
    assert cfg.epochs == 3 and cfg.patience == 3 and cfg.min_passes == 0  # its own schedule, run to the end
    assert m["n_labeled"] == len(y)  # expert labels, not pseudo-labels
    assert m["pseudo_labels"] == n_acc and m["pseudo_coverage"] == pytest.approx(n_acc / len(Xu))
    assert m["val_auc"] > 0.9
    # a rule no pseudo-label can meet: a named error, not a student trained on nothing new
    strict = pseudo_label_pool(teacher, Xu, val, target_error=1e-6)
    assert not strict.auto_accept.any()
    with pytest.raises(DataError, match="none meets the auto-label rule"):
        fit_self_trained(_net(), teacher, X, y, Xu, val, config=CFG, progress=False, pseudo=strict)
    with pytest.raises(DataError, match="label_share"):
        fit_self_trained(_net(), teacher, X, y, Xu, val, config=CFG, progress=False, label_share=1.0)


def test_a_round_with_self_training_keeps_the_better_on_validation_and_records_both() -> None:
    rng = np.random.default_rng(1)
    (X, y), (Xu, _), val, test = _blobs(16, rng), _blobs(120, rng), _blobs(80, rng), _blobs(40, rng)
    model, m = fit_round(_net(), X, y, val, task="classification", config=CFG, X_unlabelled=Xu, test=test,
                         self_train=True, progress=False)
    assert {"val_score_teacher", "val_score_student", "pseudo_labels", "pseudo_coverage"} <= set(m)
    kept = keeps_fixmatch(m["val_score_student"], m["val_score_teacher"])
    assert m["self_trained"] == float(kept)
    who = "student" if kept else "teacher"
    assert {"test_auc_teacher", "test_auc_student"} <= set(m) and m[f"test_auc_{who}"] == m["test_auc"]
    # the teacher is the same training as a round without self-training (same start, same seed)
    _, m_plain = fit_round(_net(), X, y, val, task="classification", config=CFG, test=test, progress=False)
    assert m_plain["test_auc"] == m["test_auc_teacher"] and "self_trained" not in m_plain
    # with nothing left in the pool there is nothing to teach: the round's model as it was
    _, m_all = fit_round(_net(), X, y, val, task="classification", config=CFG, X_unlabelled=Xu[:0],
                         self_train=True, progress=False)
    assert m_all["self_trained"] == 0.0 and m_all["pseudo_labels"] == 0.0
    # a validation split too small to certify the rule's 5%: said before training, and indeed nothing is taught
    small = (val[0][:40], val[1][:40])
    with pytest.warns(UserWarning, match="40 validation cases cannot bound the pseudo-labels' error at 5%"):
        _, m_small = fit_round(_net(), X, y, small, task="classification", config=CFG, X_unlabelled=Xu,
                               self_train=True, progress=False)
    assert m_small["pseudo_labels"] == 0.0 and m_small["self_trained"] == 0.0
    # the report says how each model was trained, from these metrics
    from medwb.report.sections import training_recipe

    said = training_recipe(m)
    if kept:
        assert said.startswith(f"self-trained student: the expert labels + {m['pseudo_labels']:.0f} pseudo-labels")
        assert training_recipe(m, short=True) == f"self-trained student (+{m['pseudo_labels']:.0f} pseudo-labels)"
    else:
        assert said.startswith("supervised; its self-trained student") and "not kept" in said
    assert f"{m['val_score_student']:.3f} vs {m['val_score_teacher']:.3f}" in said
    assert "nothing to teach" in training_recipe(m_all) and training_recipe(m_plain) == "supervised"


def _squares(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(0.2, 0.05, (n, 1, 16, 16)).astype(np.float32)
    y = np.zeros((n, 1, 16, 16), np.int64)
    for i, (r, c) in enumerate(rng.integers(2, 9, (n, 2))):
        X[i, 0, r:r + 5, c:c + 5] += 0.6
        y[i, 0, r:r + 5, c:c + 5] = 1  # the bright square is the object
    return X, y


def test_a_segmentation_round_self_trains_on_the_teachers_masks_of_every_pool_image(monkeypatch) -> None:
    from medwb.al.fit import pseudo_masks

    rng = np.random.default_rng(2)
    (X, y), (Xu, yu), val, test = _squares(6, rng), _squares(20, rng), _squares(8, rng), _squares(8, rng)
    seg = lambda: build_segmenter(2, 1, 2, channels=(4, 8))  # noqa: E731
    teacher, _ = fit_round(seg(), X, y, val, task="segmentation", config=CFG, progress=False)
    masks = pseudo_masks(teacher, Xu, batch_size=7)  # batched: the same as one pass
    assert masks.shape == yu.shape and masks.dtype == np.int64
    assert np.array_equal(masks, pseudo_masks(teacher, Xu, batch_size=64))
    seen = []
    train_module = importlib.import_module("medwb.models.train")
    real = train_module.train

    def spy(model, X_s, y_s, *args, config, task, **kw):
        seen.append((np.asarray(X_s), np.asarray(y_s).copy(), config, task))
        return real(model, X_s, y_s, *args, config=config, task=task, **kw)

    monkeypatch.setattr(train_module, "train", spy)
    student, m = fit_self_trained(seg(), teacher, X, y[:, 0], Xu, val, task="segmentation", config=CFG,
                                  progress=False, epochs=2)  # expert masks without their channel axis: the same
    (X_s, y_s, cfg, task), = seen
    reps = round(len(Xu) / len(X))  # label_share 0.5: as many expert masks as pseudo-masks
    assert task == "segmentation" and cfg.epochs == 2 and len(X_s) == reps * len(X) + len(Xu)
    assert np.array_equal(y_s[:reps * len(X)], np.tile(y, (reps, 1, 1, 1)))  # the expert masks, unchanged
    assert np.array_equal(y_s[reps * len(X):], masks) and np.array_equal(X_s[reps * len(X):], Xu)
    assert m["pseudo_labels"] == len(Xu) and m["pseudo_coverage"] == 1.0 and m["n_labeled"] == len(X)
    assert np.isnan(m["pseudo_threshold"])  # no confidence rule for voxels: every pool image's mask
    # in a round: both recorded, the better on validation (by the margin) kept; the student's own schedule
    seen.clear()
    starts, ends = [], []

    def spy_weights(model, *a, **kw):  # the weights each training starts from and ends with
        starts.append({k: v.clone() for k, v in model.state_dict().items()})
        res = spy(model, *a, **kw)
        ends.append({k: v.clone() for k, v in res.model.state_dict().items()})
        return res

    monkeypatch.setattr(train_module, "train", spy_weights)
    _, r = fit_round(seg(), X, y, val, task="segmentation", config=CFG, X_unlabelled=Xu, test=test,
                     self_train=True, progress=False)
    # teacher, student: the student's epochs never exceed the round's own schedule
    assert [c.epochs for _, _, c, _ in seen] == [CFG.epochs, min(CFG.epochs, SELF_TRAIN_SEGMENTATION_EPOCHS[2])]
    teacher_end, student_start = ends[0], starts[1]  # a segmenter's student starts from the trained teacher
    assert all(torch.equal(teacher_end[k], student_start[k]) for k in teacher_end)
    assert any(not torch.equal(starts[0][k], student_start[k]) for k in teacher_end)  # not the initial weights
    asked = []

    class Stop(Exception):
        pass

    def config_only(model, X_s, y_s, *args, config, **kw):
        asked.append(config.epochs)
        raise Stop

    monkeypatch.setattr(train_module, "train", config_only)
    for epochs in (2, 40):  # a quick run's schedule, the loop's default one
        with pytest.raises(Stop):
            fit_self_trained(None, teacher, X, y, Xu, val, task="segmentation", config=replace(CFG, epochs=epochs),
                             progress=False)
    volumes = rng.normal(0.2, 0.05, (5, 1, 8, 8, 8)).astype(np.float32)  # a 3D student: the 3D epochs
    with pytest.raises(Stop):
        fit_self_trained(None, build_segmenter(3, 1, 2, channels=(4, 8)), volumes[:2], np.zeros((2, 1, 8, 8, 8), int),
                         volumes[2:], (volumes[:2], np.zeros((2, 1, 8, 8, 8), int)), task="segmentation",
                         config=replace(CFG, epochs=40), progress=False)
    assert asked == [2, SELF_TRAIN_SEGMENTATION_EPOCHS[2], SELF_TRAIN_SEGMENTATION_EPOCHS[3]]
    assert SELF_TRAIN_SEGMENTATION_EPOCHS[2] < SELF_TRAIN_SEGMENTATION_EPOCHS[3]
    assert r["self_trained"] == float(keeps_fixmatch(r["val_score_student"], r["val_score_teacher"]))
    assert {"test_dice_teacher", "test_dice_student", "val_score_teacher"} <= set(r)
    assert r["pseudo_labels"] == len(Xu)
    with pytest.raises(DataError, match="no unlabelled image to pseudo-label"):  # not the auto-label rule's words
        fit_self_trained(seg(), teacher, X, y, Xu[:0], val, task="segmentation", config=CFG, progress=False)


def test_a_loop_with_self_training_stores_only_the_expert_labels(samples, tmp_path) -> None:
    from _fixtures import PNEUMONIA, tiny_pneumonia_npz

    from medwb.al.loop import ActiveLearningLoop
    from medwb.al.oracle import simulated_oracle
    from medwb.data import open_dataset
    from medwb.errors import StoreError
    from medwb.store import Study

    # 200 validation cases: enough to certify the pseudo-labels' 5% (59 at least), so a student is trained
    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "tiny.npz", n_train=80, n_val=200, n_test=20)
    ds = open_dataset(path, progress=False)
    study = Study.create(tmp_path / "s", dataset_path=str(path), task=ds.task, classes=ds.classes)
    with pytest.raises(StoreError, match="self_train needs the pool held in memory"):
        ActiveLearningLoop(study, ds, progress=False, pretrain=False, semi=False, self_train=True, stream=True)
    from medwb.data.case_images import CaseImages

    rng = np.random.default_rng(3)
    (X, y), val = _blobs(16, rng), _blobs(20, rng)
    with pytest.raises(DataError, match="this pool is streamed"):  # refused before any training
        fit_round(_net(), X, y, val, task="classification", config=CFG, self_train=True, progress=False,
                  X_unlabelled=CaseImages(ds, ds.case_ids("train")[:10]))
    loop = ActiveLearningLoop(study, ds, strategy="entropy", batch_size=15, seed=0, progress=False, pretrain=False,
                              semi=False, self_train=True, train_config=replace(CFG, epochs=8), mc_passes=2)
    loop.run(2, simulated_oracle(ds))
    assert max(m["pseudo_labels"] for m in study.models()["metrics"]) > 0  # a student learnt pseudo-labels ...
    labels = study.labels()
    asked = {str(c) for ids in study.rounds()["selected_ids"] for c in ids}
    assert len(labels) == 30 and set(labels["case_id"]) == asked  # 2 rounds of 15: ... none stored
    assert set(labels["source"]) <= {"human", "corrected"}  # the oracle's answers (to a pre-label or not)
    metrics = study.models().iloc[-1]["metrics"]
    assert "self_trained" in metrics and metrics["n_labeled"] == 30
    assert study.rounds().iloc[-1]["params"]["self_train"] is True


def test_rounds_self_train_by_default_for_segmentation_only() -> None:
    from medwb.al.fit import uses_self_training
    from medwb.errors import StoreError

    assert uses_self_training("segmentation", None, streamed=False)
    assert not uses_self_training("classification", None, streamed=False)
    assert not uses_self_training("segmentation", None, streamed=True)  # a streamed pool: the default gives way
    assert uses_self_training("classification", True, streamed=False)
    assert not uses_self_training("segmentation", False, streamed=False)
    with pytest.raises(StoreError, match="stream=False"):  # asked for on a streamed pool: refused with the fix
        uses_self_training("segmentation", True, streamed=True)
