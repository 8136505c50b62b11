"""The pretrained representation in the study and the loop: cache, `medwb pretrain`, loop rounds from the
pretrained trunk, frozen-trunk training; on small real PneumoniaMNIST subsets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medwb.al.representation import pretrained_representation
from medwb.errors import ConfigError
from medwb.models import TrainConfig, build_classifier, train
from medwb.models.pretrain import PretrainConfig, init_from_pretrained, pretrain_key, data_fingerprint
from medwb.store.layout import StudyLayout

from _fixtures import PNEUMONIA, pneumonia_arrays, tiny_pneumonia_npz

SMALL = (8, 16, 32, 64)
QUICK = PretrainConfig(epochs=1, batch_size=32)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cache_hit_on_second_call_no_retraining(samples: Path, tmp_path: Path, monkeypatch) -> None:
    X = pneumonia_arrays(samples, n_train=96, n_val=0, n_test=0)["X"]
    args = build_classifier(2, 1, 2, channels=SMALL).build_args
    res = pretrained_representation(tmp_path, X, build_args=args, config=QUICK, progress=False)
    key = pretrain_key(data_fingerprint(X), args, QUICK)
    final = StudyLayout(tmp_path).pretrained(key)
    assert res.completed and final.is_file() and final == tmp_path / "cache" / "pretrain" / f"{key}.pt"
    assert not StudyLayout(tmp_path).pretrain_partial(key).exists()  # the partial file is gone once final

    import medwb.models.pretrain as pt

    monkeypatch.setattr(pt, "pretrain", lambda *a, **k: pytest.fail("retrained despite the cache"))
    again = pretrained_representation(tmp_path, X, build_args=args, config=QUICK, progress=False)
    assert _same(again.trunk_state, res.trunk_state) and again.history == res.history
    monkeypatch.undo()
    # another pool (or config) is another key: trained, not mixed up
    other = pretrained_representation(tmp_path, X[:64], build_args=args, config=QUICK, progress=False)
    assert not _same(other.trunk_state, res.trunk_state)
    assert len(list((tmp_path / "cache" / "pretrain").glob("*.pt"))) == 2


def test_unfinished_run_is_resumed_not_cached(samples: Path, tmp_path: Path) -> None:
    X = pneumonia_arrays(samples, n_train=64, n_val=0, n_test=0)["X"]
    args = build_classifier(2, 1, 2, channels=SMALL).build_args
    cfg = PretrainConfig(epochs=2, batch_size=32, max_seconds=0.0)  # stops after the first epoch
    part = pretrained_representation(tmp_path, X, build_args=args, config=cfg, progress=False)
    key = pretrain_key(data_fingerprint(X), args, cfg)
    assert not part.completed and part.epochs_done == 1
    assert StudyLayout(tmp_path).pretrain_partial(key).is_file() and not StudyLayout(tmp_path).pretrained(key).exists()
    done = pretrained_representation(tmp_path, X, build_args=args, config=PretrainConfig(epochs=2, batch_size=32),
                                     progress=False)  # same key (max_seconds is not part of it): resumes
    assert done.completed and [r["epoch"] for r in done.history] == [1, 2]
    assert StudyLayout(tmp_path).pretrained(key).is_file()


def test_freeze_trunk_trains_the_head_only(samples: Path) -> None:
    a = pneumonia_arrays(samples, n_train=120, n_val=60, n_test=0)
    model = build_classifier(2, 1, 2, channels=SMALL)
    trunk0 = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    head0 = {k: v.clone() for k, v in model.head.state_dict().items()}
    res = train(model, a["X"], a["y"], a["Xv"], a["yv"], config=TrainConfig(epochs=3, min_epochs=1, freeze_trunk=True),
                progress=False)
    assert res.model is model and _same(model.trunk.state_dict(), trunk0)  # weights and BatchNorm statistics
    assert not _same(model.head.state_dict(), head0) and len(res.history) == 3 and res.val_metric == res.val_metric
    assert all(p.requires_grad for p in model.parameters())  # gradients still flow for explanations
    from medwb.models.uncertainty import mc_dropout_proba

    mc = mc_dropout_proba(model, a["Xv"][:8], passes=4, seed=0)  # dropout sits in the head: MC dropout works
    assert mc.shape == (4, 8, 2) and not np.allclose(mc[0], mc[1])
    # a segmenter: the head (1x1 conv) trains on the trunk's per-pixel features (bright-lung masks as targets)
    from medwb.models import build_segmenter

    seg = build_segmenter(2, 1, 2, channels=(4, 8, 16, 32), features=8)
    X, Xv = a["X"][:16, :, 2:26, 2:26], a["Xv"][:8, :, 2:26, 2:26]
    trunk0 = {k: v.clone() for k, v in seg.trunk.state_dict().items()}
    r = train(seg, X, (X[:, 0] > 0.5).astype(np.int64), Xv, (Xv[:, 0] > 0.5).astype(np.int64),
              config=TrainConfig(epochs=2, min_epochs=1, batch_size=8, freeze_trunk=True), progress=False)
    assert _same(seg.trunk.state_dict(), trunk0) and r.metric_name == "dice" and len(r.history) == 2


@pytest.fixture(scope="module")
def tiny(samples: Path, tmp_path_factory: pytest.TempPathFactory):
    from medwb.data import open_dataset

    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path_factory.mktemp("data") / "pneumonia_tiny.npz",
                              n_train=80, n_val=30, n_test=30)
    return path, open_dataset(path, progress=False)


def test_loop_with_pretraining_runs_rounds_from_the_pretrained_trunk(tiny, tmp_path: Path) -> None:
    from functools import partial

    from medwb.al.loop import ActiveLearningLoop
    from medwb.al.oracle import simulated_oracle
    from medwb.models import load_checkpoint
    from medwb.models.pretrain import load_pretrained
    from medwb.store import Study

    path, ds = tiny
    fast = TrainConfig(epochs=2, min_epochs=1, batch_size=8, seed=0)
    model_fn = partial(build_classifier, 2, 1, 2, channels=SMALL)

    def loop(folder: str, **kw) -> ActiveLearningLoop:
        study = Study.create(tmp_path / folder, dataset_path=str(path), task=ds.task, classes=ds.classes)
        return ActiveLearningLoop(study, ds, strategy="hybrid", batch_size=6, model_fn=lambda s: model_fn(seed=s),
                                  train_config=fast, seed=0, mc_passes=4, progress=False, **kw)

    with pytest.raises(ConfigError):
        loop("bad", finetune="partly")
    pix = loop("pixels", pretrain=False, semi=False)
    pre = loop("pretrained", pretrain=True, pretrain_config=QUICK, finetune="head", semi=False)
    results = pre.run(2, simulated_oracle(ds))
    assert [r.n_labeled for r in results] == [6, 12]
    cached = list((tmp_path / "pretrained" / "cache" / "pretrain").glob("*.pt"))
    assert len(cached) == 1 and ".partial" not in cached[0].name  # the automatic step, cached in the study
    rounds = pre.study.rounds()
    assert list(rounds["strategy"]) == ["cold_start", "hybrid"]
    assert all(p["pretrained"] and p["finetune"] == "head" for p in rounds["params"])
    # the cold start ranked the pool in the pretrained embedding, not in pixel PCA
    first_pix = pix.propose()["case_id"].tolist()
    assert sorted(first_pix) != sorted(rounds.iloc[0]["selected_ids"])
    # each round's model starts from the pretrained trunk and (finetune="head") keeps it
    rep = load_pretrained(cached[0])
    for m in pre.study.models()["checkpoint_path"]:
        model, _ = load_checkpoint(m)
        assert _same(model.trunk.state_dict(), rep.trunk_state)
    # a result handed in (a simulation shares one) is used as is: no pretraining in that study
    shared = loop("shared", pretrained=rep, semi=False)  # finetune="full" by default
    shared.run(1, simulated_oracle(ds))
    assert not (tmp_path / "shared" / "cache" / "pretrain").exists()
    assert shared.study.rounds().iloc[0]["selected_ids"] == rounds.iloc[0]["selected_ids"]  # same embedding
    model, _ = load_checkpoint(shared.study.models()["checkpoint_path"].iloc[0])
    assert not _same(model.trunk.state_dict(), rep.trunk_state)  # "full" fine-tunes the trunk too
    assert isinstance(init_from_pretrained(model_fn(seed=3), rep), torch.nn.Module)


def test_pretrain_cli_caches_in_the_study(tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medwb.cli import main
    from medwb.store import Study
    from medwb.store.pool import load_splits

    path, ds = tiny
    study = tmp_path / "study"
    argv = ["pretrain", str(path), "--study", str(study), "--epochs", "1", "--max-pool", "50", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    cached = list((study / "cache" / "pretrain").glob("*.pt"))
    assert len(cached) == 1 and str(cached[0]) in out and "loss by epoch" in out
    with Study.open(study) as st:
        assert len(load_splits(st)["train"]) == 50  # carved and saved like the loop does
    # the loop on this study finds it: no second pretraining
    from medwb.al.loop import ActiveLearningLoop
    from medwb.models.pretrain import load_pretrained

    with Study.open(study) as st:
        loop = ActiveLearningLoop(st, ds, pretrain=True, pretrain_config=PretrainConfig(epochs=1), progress=False)
        assert _same(loop.representation().trunk_state, load_pretrained(cached[0]).trunk_state)
    assert len(list((study / "cache" / "pretrain").glob("*.pt"))) == 1


def test_2d_segmentation_rounds_start_from_scratch_unless_asked(samples: Path, tmp_path: Path) -> None:
    """The default pipeline pretrains every task but 2D segmentation, where the SimCLR trunk cost test Dice
    (benchmarks/active_learning/hc18); asking for it still works, and a given trunk is always used."""
    from medwb.al.loop import ActiveLearningLoop
    from medwb.al.representation import uses_pretraining
    from medwb.data import open_dataset
    from medwb.store import Study

    assert not uses_pretraining("segmentation", 2, None) and uses_pretraining("segmentation", 3, None)
    assert uses_pretraining("classification", 2, None) and uses_pretraining("classification", 3, None)
    assert uses_pretraining("segmentation", 2, True) and not uses_pretraining("classification", 2, False)
    ds = open_dataset(samples / "segmentation_2d" / "hc18", progress=False)

    def loop(folder: str, **kw: object) -> ActiveLearningLoop:
        study = Study.create(tmp_path / folder, dataset_path=str(ds.path), task=ds.task, classes=ds.classes)
        return ActiveLearningLoop(study, ds, strategy="random", batch_size=2, seed=0, progress=False, **kw)

    assert not loop("default").pretrain
    assert loop("asked", pretrain=True).pretrain
