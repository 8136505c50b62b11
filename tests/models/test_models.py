"""medwb.models on real data: PneumoniaMNIST (2D), AdrenalMNIST3D (3D), MSD hippocampus (3D segmentation)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medwb.data import open_dataset
from medwb.errors import DataError
from medwb.models.train import CLASSIFIER_MIN_BATCHES
from medwb.models import (TrainConfig, build_classifier, build_segmenter, default_train_config, embed, evaluate,
                          load_checkpoint, predict_proba, save_checkpoint, train)


@pytest.fixture(scope="module")
def pneu(samples):
    ds = open_dataset(samples / "classification_2d" / "pneumoniamnist.npz", progress=False)
    X, y, _ = ds.arrays("train", max_cases=300, seed=0)
    Xv, yv, _ = ds.arrays("val", max_cases=200, seed=0)
    return X, y, Xv, yv


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_classifier_has_deterministic_trunk_and_dropout_head(pneu):
    X = pneu[0][:8]
    m = build_classifier(2, 1, 2, dropout=0.3, seed=1)
    assert not any(isinstance(x, torch.nn.modules.dropout._DropoutNd) for x in m.trunk.modules())
    assert any(isinstance(x, torch.nn.Dropout) and x.p == 0.3 for x in m.head.modules())
    assert embed(m, X).shape == (8, 128)
    p = predict_proba(m, X)
    assert p.shape == (8, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert _same_weights(m, build_classifier(2, 1, 2, dropout=0.3, seed=1))
    assert not _same_weights(m, build_classifier(2, 1, 2, dropout=0.3, seed=2))


def test_3d_classifier_on_adrenal(samples):
    ds = open_dataset(samples / "classification_3d" / "adrenalmnist3d.npz", progress=False)
    X, y, _ = ds.arrays("train", max_cases=24, seed=0)
    m = build_classifier(3, 1, 2)
    res = train(m, X, y, X[:8], y[:8], task="classification", config=TrainConfig(epochs=2, batch_size=8),
                progress=False)
    assert len(res.history) == 2
    assert predict_proba(res.model, X).shape == (24, 2)
    assert embed(res.model, X).shape == (24, 64)


def test_training_learns_and_is_seeded(pneu):
    X, y, Xv, yv = pneu
    cfg = TrainConfig(epochs=3, seed=3, patience=10)
    r1 = train(build_classifier(2, 1, 2, seed=0), X, y, Xv, yv, task="classification", config=cfg, progress=False)
    r2 = train(build_classifier(2, 1, 2, seed=0), X, y, Xv, yv, task="classification", config=cfg, progress=False)
    assert _same_weights(r1.model, r2.model)
    assert [h["val_auc"] for h in r1.history] == [h["val_auc"] for h in r2.history]
    # chest X-rays are learnable from 300 images in a few epochs: far above chance
    assert r1.val_metric > 0.85 and r1.metric_name == "auc"
    short = [train(build_classifier(2, 1, 2, seed=0), X[:100], y[:100], Xv, yv, task="classification",
                   config=TrainConfig(epochs=1, seed=seed), progress=False).model for seed in (3, 4)]
    assert not _same_weights(*short)  # the training seed (shuffling) matters, not just the init seed


def test_early_stopping_restores_best_weights(pneu):
    X, y, Xv, yv = pneu
    res = train(build_classifier(2, 1, 2), X, y, Xv, yv, task="classification",
                config=TrainConfig(epochs=8, patience=2, min_epochs=1, select_on="metric"), progress=False)
    aucs = [h["val_auc"] for h in res.history]
    assert res.history[res.best_epoch - 1]["val_auc"] == pytest.approx(max(aucs))
    # the returned model is the best epoch's (its BatchNorm statistics recomputed only if that validates
    # at least as well), not the last one, and the reported metric is the returned model's
    assert res.val_metric >= max(aucs) - 1e-9
    assert evaluate(res.model, Xv, yv)["auc"] == pytest.approx(res.val_metric, abs=1e-6)
    if len(res.history) < 8:
        assert len(res.history) - res.best_epoch >= 2


def test_class_weighting_helps_the_minority_class(pneu):
    X, y, Xv, yv = pneu
    # 9:1 imbalance with pneumonia (label 1) rare
    idx = np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:10]])
    recalls = {}
    for bal in (True, False):
        res = train(build_classifier(2, 1, 2), X[idx], y[idx], Xv, yv, task="classification",
                    config=TrainConfig(epochs=4, balance_classes=bal, patience=10), progress=False)
        p = predict_proba(res.model, Xv)
        recalls[bal] = float((p.argmax(1)[yv == 1] == 1).mean())
    assert recalls[True] > recalls[False]


def test_checkpoint_round_trip(pneu, tmp_path):
    X, y, Xv, yv = pneu
    res = train(build_classifier(2, 1, 2, dropout=0.4, seed=5), X[:64], y[:64], Xv, yv, task="classification",
                config=TrainConfig(epochs=1), checkpoint=tmp_path / "m.pt", progress=False)
    m2, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["build_args"]["dropout"] == 0.4 and meta["build_args"]["kind"] == "classifier"
    assert meta["best_epoch"] == res.best_epoch and meta["train_config"]["epochs"] == 1
    assert np.array_equal(predict_proba(m2, Xv), predict_proba(res.model, Xv))
    save_checkpoint(m2, tmp_path / "again.pt", {"round": 3})
    assert load_checkpoint(tmp_path / "again.pt")[1]["round"] == 3
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_bad_inputs_are_named_errors(pneu):
    X, y, _, _ = pneu
    m = build_classifier(2, 1, 2)
    with pytest.raises(DataError, match="expected"):
        predict_proba(m, X[:, 0])
    with pytest.raises(DataError, match="labels"):
        train(m, X[:10], np.full(10, 5), task="classification", config=TrainConfig(epochs=1), progress=False)
    with pytest.raises(DataError, match="spatial_dims"):
        build_classifier(4, 1, 2)


@pytest.mark.slow
def test_min_batches_per_epoch_gives_tiny_sets_more_steps(pneu, monkeypatch):
    X, y, Xv, yv = pneu
    calls = []
    step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (calls.append(1), step(self, *a, **k))[1])
    steps = []
    for min_batches in (0, 6):
        calls.clear()
        train(build_classifier(2, 1, 2, seed=0), X[:40], y[:40], task="classification", progress=False,
              config=TrainConfig(epochs=2, batch_size=16, seed=0, min_batches_per_epoch=min_batches))
        steps.append(len(calls))
    # 40 cases in batches of 16: 16+16+8 = 3 steps per epoch; with >= 6 batches, 3 reshuffled passes (120) = 8
    assert steps == [2 * 3, 2 * 8]


def test_select_on_loss_keeps_the_lowest_validation_loss_epoch(pneu):
    X, y, Xv, yv = pneu
    res = train(build_classifier(2, 1, 2, seed=0), X[:120], y[:120], Xv, yv, task="classification", progress=False,
                config=TrainConfig(epochs=4, min_epochs=4, seed=0, select_on="loss"))
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == 1 + int(np.argmin(losses)) and res.metric_name == "auc"
    assert 0.8 < res.val_metric <= 1.0  # still reported as the validation AUC of the kept weights
    with pytest.raises(DataError, match="select_on"):
        train(build_classifier(2, 1, 2), X[:20], y[:20], Xv, yv, config=TrainConfig(epochs=1, select_on="auc"))


def test_select_on_balanced_keeps_the_best_balanced_accuracy_epoch(pneu):
    X, y, Xv, yv = pneu
    res = train(build_classifier(2, 1, 2, seed=0), X[:120], y[:120], Xv, yv, task="classification", progress=False,
                config=TrainConfig(epochs=4, min_epochs=4, seed=0))  # the default: select_on="auto" -> "balanced"
    keys = [(h["val_balanced_accuracy"], h["val_auc"], -h["val_loss"]) for h in res.history]
    assert res.best_epoch == 1 + max(range(len(keys)), key=keys.__getitem__) and res.metric_name == "auc"
    assert 0.8 < res.val_metric <= 1.0  # reported as the validation AUC of the kept weights


def test_default_train_config_per_task():
    from medwb.models.train import CLASSIFIER_MIN_PASSES, CLASSIFIER_VALIDATE_FROM

    seg = default_train_config("segmentation", seed=2)
    assert (seg.batch_size, seg.min_batches_per_epoch, seg.seed) == (8, 8, 2)
    cls = default_train_config("classification", epochs=6, patience=None)
    assert cls == TrainConfig(epochs=6, min_batches_per_epoch=CLASSIFIER_MIN_BATCHES, min_passes=0,
                              validate_from=CLASSIFIER_VALIDATE_FROM)  # None overrides ignored; epochs: exactly those
    assert default_train_config("classification").min_passes == CLASSIFIER_MIN_PASSES
    assert default_train_config("classification", epochs=6, min_passes=20).min_passes == 20
    with pytest.raises(DataError, match="unknown training setting"):
        default_train_config("classification", epoch=3)


def test_3d_segmentation_trains_in_bf16_where_the_cpu_has_it(monkeypatch):
    """3D segmentation rounds train their steps in bfloat16 on a CPU with native bfloat16 (the same Dice in less
    time); everywhere else, and for every other task, in fp32; an explicit precision wins."""
    import importlib

    train_module = importlib.import_module("medwb.models.train")
    for native in (True, False):
        monkeypatch.setattr(train_module, "has_native_bf16", lambda native=native: native)
        seg3d = default_train_config("segmentation", spatial_dims=3)
        assert seg3d.precision == ("bf16" if native else "fp32")
        assert default_train_config("segmentation", spatial_dims=2).precision == "fp32"
        assert default_train_config("classification", spatial_dims=3).precision == "fp32"
        assert default_train_config("segmentation", spatial_dims=3, precision="fp32").precision == "fp32"


def test_segmenters_on_hippocampus(samples):
    ds = open_dataset(samples / "segmentation_3d" / "hippocampus", progress=False)
    X, y, _ = ds.arrays("train", size=(32, 32, 32), max_cases=8, seed=0)
    m = build_segmenter(3, 1, 3, dropout=0.2)
    assert any(isinstance(x, torch.nn.Dropout3d) for x in m.head.modules())
    res = train(m, X[:6], y[:6], X[6:], y[6:], task="segmentation",
                config=TrainConfig(epochs=3, batch_size=2, lr=5e-3), progress=False)
    assert res.metric_name == "dice" and 0.0 <= res.val_metric <= 1.0
    p = predict_proba(res.model, X[6:])
    assert p.shape == (2, 3, 32, 32, 32)
    assert embed(res.model, X[6:]).shape == (2, 16)
    # 2D: the same builder on axial slices
    m2 = build_segmenter(2, 1, 3)
    assert any(isinstance(x, torch.nn.Dropout2d) for x in m2.head.modules())
    assert predict_proba(m2, X[:2, :, :, :, 16]).shape == (2, 3, 32, 32)


def test_ensemble_predicts_the_members_mean_probability_and_round_trips(pneu, tmp_path):
    from medwb.explain.attributions import attribute, member_target_layers
    from medwb.models import build_ensemble
    from medwb.models.uncertainty import mc_dropout_proba

    X, y, Xv, yv = pneu
    a, b = (train(build_classifier(2, 1, 2, seed=s), X[:64], y[:64], task="classification",
                  config=TrainConfig(epochs=1, seed=s), progress=False).model for s in (0, 1))
    ens = build_ensemble([a, b])
    assert ens.task == "classification" and ens.build_args["num_classes"] == 2
    pa, pb, pe = predict_proba(a, Xv[:20]), predict_proba(b, Xv[:20]), predict_proba(ens, Xv[:20])
    assert np.allclose(pe, (pa + pb) / 2, atol=1e-6)
    # embeddings: both trunks' features side by side (core-set / hybrid distances see every member)
    assert embed(ens, Xv[:5]).shape[1] == embed(a, Xv[:5]).shape[1] + embed(b, Xv[:5]).shape[1]
    # MC dropout samples every member's head; the mean over passes stays near the deterministic prediction
    mc = mc_dropout_proba(ens, Xv[:20], passes=8, seed=0)
    assert mc.shape[-1] == 2 and np.abs(mc.mean(0) - pe).mean() < 0.1
    ens.decision = {"threshold": 0.4}
    save_checkpoint(ens, tmp_path / "ens.pt")
    back, meta = load_checkpoint(tmp_path / "ens.pt")
    assert meta["build_args"]["kind"] == "ensemble" and back.decision == {"threshold": 0.4}
    assert np.array_equal(predict_proba(back, Xv[:20]), pe)
    # Grad-CAM of an ensemble: the mean of each member's map at its own trunk's last block
    layers = member_target_layers(ens)
    assert len(layers) == 2 and layers[0].startswith("trunk.members.0.") and layers[1].startswith("trunk.members.1.")
    maps = attribute(ens, Xv[:3], method="gradcam", progress=False)
    one = attribute(ens, Xv[:3], method="gradcam", layer=layers[1], progress=False)
    assert maps.shape == one.shape and np.isfinite(maps).all() and not np.allclose(maps, one)
    with pytest.raises(DataError, match="ensemble"):
        build_ensemble([a, build_classifier(2, 1, 3)])
    with pytest.raises(DataError, match="two or more"):
        build_ensemble([a])


def test_mixup_trains_on_mixed_pairs_seeded_and_still_learns(pneu):
    """``TrainConfig.mixup``: each batch is blended with a shuffled copy of itself (and the loss with both labels),
    deterministically for a seed; the network still learns chest X-rays."""
    X = np.concatenate([np.zeros((16, 1, 28, 28), np.float32), np.ones((16, 1, 28, 28), np.float32)])
    y = np.repeat([0, 1], 16)
    seen: list[torch.Tensor] = []

    def inputs(mixup: float) -> np.ndarray:
        m = build_classifier(2, 1, 2, seed=0)
        hook = m.trunk.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone())
                                                 if mod.training else None)
        seen.clear()
        train(m, X, y, task="classification", progress=False,
              config=TrainConfig(epochs=1, seed=0, augment="none", mixup=mixup, min_batches_per_epoch=8,
                                 validate_exact_bn=False))
        hook.remove()
        return torch.cat(seen).numpy()

    assert set(np.unique(inputs(0.0))) <= {0.0, 1.0}
    mixed = inputs(1.0)  # Beta(1, 1): the blend weight is uniform
    assert ((mixed > 0.01) & (mixed < 0.99)).any()  # blends of a class-0 and a class-1 image

    Xp, yp, Xv, yv = pneu
    cfg = TrainConfig(epochs=3, seed=3, patience=10, mixup=0.2)
    before = torch.random.get_rng_state()
    r1, r2 = (train(build_classifier(2, 1, 2, seed=0), Xp, yp, Xv, yv, task="classification", config=cfg,
                    progress=False) for _ in range(2))
    assert torch.equal(before, torch.random.get_rng_state())
    assert _same_weights(r1.model, r2.model) and r1.val_metric > 0.85
    plain = train(build_classifier(2, 1, 2, seed=0), Xp, yp, Xv, yv, task="classification",
                  config=TrainConfig(epochs=3, seed=3, patience=10), progress=False)
    assert not _same_weights(r1.model, plain.model)
    with pytest.raises(DataError, match="mixup=-0.2"):
        TrainConfig(mixup=-0.2)


def test_bf16_precision_trains_in_bfloat16_seeded_and_still_learns(pneu, monkeypatch):
    """``TrainConfig.precision="bf16"``: the training steps' and each epoch's validation forward passes run under
    CPU autocast (the model keeps fp32 weights), seeded as fp32 is; refused where the CPU has no native bfloat16,
    and unknown names refused."""
    with pytest.raises(DataError, match="precision='fp16'"):
        TrainConfig(precision="fp16")
    import importlib

    train_module = importlib.import_module("medwb.models.train")  # the module, not medwb.models.train()
    if not train_module.has_native_bf16():  # this CPU: the fix is named, then nothing to train
        with pytest.raises(DataError, match="use precision='fp32'"):
            TrainConfig(precision="bf16")
        return
    monkeypatch.setattr(train_module, "has_native_bf16", lambda: False)  # a CPU without it
    with pytest.raises(DataError, match="without native bfloat16"):
        TrainConfig(precision="bf16")
    monkeypatch.undo()
    Xp, yp, Xv, yv = pneu
    dtypes: list[torch.dtype] = []
    eval_dtypes: list[torch.dtype] = []
    m = build_classifier(2, 1, 2, seed=0)
    hook = m.head.register_forward_hook(lambda mod, args, out: (dtypes if mod.training else eval_dtypes)
                                        .append(out.dtype))
    cfg = TrainConfig(epochs=3, seed=3, patience=10, precision="bf16")
    r1 = train(m, Xp, yp, Xv, yv, task="classification", config=cfg, progress=False)
    hook.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the steps ran in bfloat16
    # each epoch's validation too; the decision rule and what the model reports afterwards are fp32
    assert set(eval_dtypes) == {torch.bfloat16, torch.float32}
    assert all(p.dtype == torch.float32 for p in r1.model.parameters())
    r2 = train(build_classifier(2, 1, 2, seed=0), Xp, yp, Xv, yv, task="classification", config=cfg, progress=False)
    assert _same_weights(r1.model, r2.model) and r1.val_metric > 0.85


def test_ema_validates_and_returns_the_moving_average_of_the_weights(pneu):
    """``TrainConfig.ema``: validation, selection and the returned model read an exponential moving average of
    the weights (``moving_average``); decay 0 is the live weights themselves, bit for bit; a real decay gives
    other, seeded weights that still learn; a decay outside [0, 1) is refused with the fix."""
    Xp, yp, Xv, yv = pneu
    no_val = dict(epochs=2, seed=3, validate_exact_bn=False, tune_decision=False)
    plain = train(build_classifier(2, 1, 2, seed=0), Xp, yp, task="classification", progress=False,
                  config=TrainConfig(**no_val))
    zero = train(build_classifier(2, 1, 2, seed=0), Xp, yp, task="classification", progress=False,
                 config=TrainConfig(**no_val, ema=0.0))
    assert _same_weights(plain.model, zero.model)
    averaged = train(build_classifier(2, 1, 2, seed=0), Xp, yp, task="classification", progress=False,
                     config=TrainConfig(**no_val, ema=0.9))
    assert not _same_weights(plain.model, averaged.model)

    cfg = TrainConfig(epochs=3, seed=3, patience=10, ema=0.99)
    r1, r2 = (train(build_classifier(2, 1, 2, seed=0), Xp, yp, Xv, yv, task="classification", config=cfg,
                    progress=False) for _ in range(2))
    assert _same_weights(r1.model, r2.model) and r1.val_metric > 0.85
    # the reported validation metric is the returned (averaged) model's
    assert evaluate(r1.model, Xv, yv)["auc"] == pytest.approx(r1.val_metric, abs=1e-6)
    with pytest.raises(DataError, match="ema=1.0"):
        TrainConfig(ema=1.0)
