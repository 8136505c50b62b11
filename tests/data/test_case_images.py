"""medwb.data.case_images: a pool read batch by batch from its files gives what the in-memory arrays give, and
pretraining / FixMatch / `medwb pretrain --stream` on it end with the in-memory run's weights, bit for bit."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medwb.data import open_dataset
from medwb.data.case_images import CaseImages, Stacked, batches, fingerprint, rows
from medwb.errors import DataError
from medwb.models import build_classifier
from medwb.models.pretrain import PretrainConfig, pretrain
from medwb.models.semi import SemiConfig, train_semi

SMALL = (8, 16, 32, 64)


@pytest.fixture(scope="module")
def npz_pool(samples, tmp_path_factory):
    """PneumoniaMNIST's first cases rewritten uncompressed (np.savez): medwb reads their rows on demand."""
    d = np.load(samples / "classification_2d" / "pneumoniamnist.npz")
    out = tmp_path_factory.mktemp("stream") / "pneu_small.npz"
    np.savez(out, **{f"{s}_{k}": d[f"{s}_{k}"][:n] for s, n in (("train", 300), ("val", 60), ("test", 60))
                     for k in ("images", "labels")})
    return open_dataset(out, progress=False)


def test_streamed_rows_equal_the_arrays(npz_pool):
    X, _, ids = npz_pool.arrays("train")
    pool = CaseImages(npz_pool, ids)
    assert len(pool) == 300 and pool.shape == X.shape and pool.ndim == 4 and pool.dtype == np.float32
    assert np.array_equal(pool[:], X)
    assert np.array_equal(pool[5], X[5]) and np.array_equal(pool[10:20], X[10:20])
    idx = np.array([7, 3, 250, 3])
    assert np.array_equal(pool[idx], X[idx]) and np.array_equal(pool[torch.from_numpy(idx)], X[idx])
    assert torch.equal(rows(pool, torch.tensor([1, 0])), torch.from_numpy(X[[1, 0]]))
    assert fingerprint(pool) == fingerprint(X) == fingerprint(torch.from_numpy(X))
    assert fingerprint(CaseImages(npz_pool, ids[:299])) != fingerprint(X)


def test_streamed_3d_nifti_at_the_loop_size(hippocampus):
    ds = hippocampus
    X, _, ids = ds.arrays("train", size=(16, 16, 16))
    pool = CaseImages(ds, ids, size=(16, 16, 16))
    assert pool.shape == X.shape and np.array_equal(pool[[2, 0]], X[[2, 0]])
    assert fingerprint(pool) == fingerprint(X)


def test_stacked_slices_and_ordered_batches(npz_pool):
    X, _, ids = npz_pool.arrays("train")
    Xl, pool = torch.from_numpy(X[:10]), CaseImages(npz_pool, ids[10:])
    both = Stacked(Xl, pool)
    whole = torch.from_numpy(X)
    assert len(both) == 300
    for a, b in ((0, 4), (5, 40), (10, 12), (250, 300), (290, 999)):
        assert torch.equal(both[a:b], whole[a:b])
    assert len(both[300:310]) == 0
    with pytest.raises(TypeError):
        both[[1, 2]]
    idx = [torch.tensor([4, 1]), torch.tensor([99, 0, 7])]
    for workers in (0, 2):
        got = list(batches(pool, idx, workers=workers))
        assert [torch.equal(g, torch.from_numpy(X[10:][i.numpy()])) for g, i in zip(got, idx)] == [True, True]


def test_pretraining_streamed_equals_in_memory(npz_pool):
    X, _, ids = npz_pool.arrays("train")
    ba = build_classifier(2, 1, 2, channels=SMALL).build_args
    cfg = PretrainConfig(epochs=2, batch_size=64, seed=0)
    mem = pretrain(ba, X, config=cfg, progress=False)
    for workers in (0, 1):
        streamed = pretrain(ba, CaseImages(npz_pool, ids), config=cfg, progress=False, workers=workers)
        assert streamed.trunk_state.keys() == mem.trunk_state.keys()
        assert all(torch.equal(streamed.trunk_state[k], mem.trunk_state[k]) for k in mem.trunk_state)
        assert [h["loss"] for h in streamed.history] == [h["loss"] for h in mem.history]


def test_fixmatch_streamed_pool_equals_in_memory(npz_pool):
    X, y, ids = npz_pool.arrays("train")
    Xv, yv, _ = npz_pool.arrays("val")
    cfg = SemiConfig(epochs=2, steps_per_epoch=3, batch_size=8, mu=2, seed=0)

    def run(unlabelled):
        return train_semi(build_classifier(2, 1, 2, channels=SMALL, seed=0), X[:40], y[:40], unlabelled, Xv, yv,
                          config=cfg, progress=False)

    mem, streamed = run(X[40:]), run(CaseImages(npz_pool, ids[40:]))
    a, b = mem.model.state_dict(), streamed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss_u"] for h in mem.history] == [h["loss_u"] for h in streamed.history]


def test_a_nan_case_in_a_streamed_pool_names_its_file(tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        v = rng.random((8, 8, 8)).astype(np.float32)
        if i == 2:
            v[1, 1, 1] = np.nan
        nib.save(nib.Nifti1Image(v, np.eye(4)), folder / f"case{i}.nii.gz")
    ds = open_dataset(folder, progress=False)
    ids = ds.case_ids()
    bad = next(c for c in ids if "case2" in str(ds.records.set_index("case_id").loc[c, "source"]))
    pool = CaseImages(ds, [c for c in ids if c != bad][:1] + [bad])
    with pytest.raises(DataError, match="NaN") as e:
        pool[:]
    assert "case2.nii.gz" in str(e.value)
    ba = build_classifier(3, 1, 2, channels=SMALL).build_args
    with pytest.raises(DataError, match="case2.nii.gz"):
        pretrain(ba, pool, config=PretrainConfig(epochs=1, batch_size=2), progress=False)


def test_empty_case_list_is_a_clear_error(npz_pool):
    with pytest.raises(DataError, match="no cases"):
        CaseImages(npz_pool, [])


def test_medwb_pretrain_stream_caches_what_the_in_memory_run_finds(npz_pool, tmp_path, capsys, monkeypatch):
    import medwb.models.pretrain as pt
    from medwb.cli import main

    study = tmp_path / "study"
    args = ["pretrain", str(npz_pool.path), "--study", str(study), "--epochs", "1", "--quiet"]
    assert main(args + ["--stream", "--workers", "1"]) == 0
    cached = list((study / "cache" / "pretrain").glob("*.pt"))
    assert len(cached) == 1 and "complete" in capsys.readouterr().out
    # in memory: the same cache key, so the streamed result is found and nothing is trained again
    monkeypatch.setattr(pt, "pretrain", lambda *a, **k: pytest.fail("retrained despite the streamed cache"))
    assert main(args) == 0
    assert list((study / "cache" / "pretrain").glob("*.pt")) == cached
    assert cached[0].name in capsys.readouterr().out
