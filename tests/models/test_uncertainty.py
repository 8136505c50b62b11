"""MC dropout on real data: fast path == full MC for head-only dropout, Dropout3d covered, BatchNorm frozen."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.blocks import Convolution
from torch import nn

from medwb.data import open_dataset
from medwb.errors import DataError
from medwb.models import TrainConfig, build_classifier, build_segmenter, predict_proba, train
from medwb.models.uncertainty import (dropout_modules, has_fast_path, mc_dropout_mode, mc_dropout_proba,
                               mc_uncertainty_maps, score_map)


@pytest.fixture(scope="module")
def trained(samples):
    ds = open_dataset(samples / "classification_2d" / "pneumoniamnist.npz", progress=False)
    X, y, _ = ds.arrays("train", max_cases=300, seed=1)
    Xv, yv, _ = ds.arrays("val", max_cases=100, seed=1)
    res = train(build_classifier(2, 1, 2, dropout=0.5), X[:200], y[:200], Xv, yv, task="classification",
                config=TrainConfig(epochs=3), progress=False)
    return res.model, X[200:]


@pytest.fixture(scope="module")
def hippo(samples):
    ds = open_dataset(samples / "segmentation_3d" / "hippocampus", progress=False)
    X, y, _ = ds.arrays("train", size=(32, 32, 32), max_cases=4, seed=0)
    return X, y


def test_fast_path_equals_full_mc_for_head_only_dropout(trained):
    model, X = trained
    assert has_fast_path(model) and not dropout_modules(model.trunk)
    fast = mc_dropout_proba(model, X, passes=20, fast=True, seed=7, batch_size=50)
    full = mc_dropout_proba(model, X, passes=20, fast=False, seed=7, batch_size=50)
    assert fast.shape == full.shape == (20, 100, 2)
    # same seed, same batches -> the very same dropout masks: identical samples, not just the same distribution
    np.testing.assert_allclose(fast, full, atol=1e-5)
    assert fast.std(0).mean() > 1e-3  # and the passes really differ
    # MC mean is close to the deterministic prediction but not identical
    p = predict_proba(model, X)
    assert np.abs(fast.mean(0) - p).mean() < 0.1


def test_seeded_and_global_rng_untouched(trained):
    model, X = trained
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = mc_dropout_proba(model, X, passes=5, seed=1)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert np.array_equal(a, mc_dropout_proba(model, X, passes=5, seed=1))
    assert not np.array_equal(a, mc_dropout_proba(model, X, passes=5, seed=2))


def test_dropout3d_is_sampled_and_batchnorm_stays_in_eval(hippo):
    X, _ = hippo
    # a MONAI 3D block with channel dropout (Dropout3d) and BatchNorm, as MONAI's 3D nets build them
    net = nn.Sequential(
        Convolution(3, 1, 8, norm="batch", dropout=0.3, dropout_dim=3),
        Convolution(3, 8, 2, conv_only=True),
    )
    assert any(isinstance(m, nn.Dropout3d) for m in net.modules())
    net.train()
    net(torch.from_numpy(X))  # give BatchNorm non-trivial running stats
    net.eval()
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm3d))
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    mc = mc_dropout_proba(net, X, passes=4, fast=True)  # no trunk/head: falls back to full MC
    assert mc.shape == (4, len(X), 2, 32, 32, 32)
    assert mc.std(0).max() > 1e-3  # Dropout3d was active
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]  # BatchNorm never ran in train mode
    assert not net.training and not any(m.training for m in net.modules())  # modes restored
    with mc_dropout_mode(net):
        assert all(m.training == isinstance(m, nn.Dropout3d) for m in net.modules() if m is not net)


def test_baal_misses_dropout3d():
    """Why medwb has its own MC dropout: baal 2.1 patches Dropout and Dropout2d only."""
    baal_dropout = pytest.importorskip("baal.bayesian.dropout")
    net = nn.Sequential(nn.Conv3d(1, 4, 3), nn.Dropout3d(0.5))
    patched = baal_dropout.patch_module(net, inplace=False)
    patched.eval()
    x = torch.ones(1, 1, 6, 6, 6)
    assert torch.equal(patched(x), patched(x))  # deterministic: Dropout3d was not patched
    mc = mc_dropout_proba(nn.Sequential(net, nn.Flatten(), nn.Linear(4 * 64, 2)), x.numpy(), passes=6)
    assert mc.std(0).max() > 0


def test_fast_path_warns_when_trunk_has_dropout(trained):
    model, X = trained
    import copy

    m = copy.deepcopy(model)
    m.trunk.insert(len(m.trunk) - 1, nn.Dropout(0.5))  # dropout on features before the final flatten
    with pytest.warns(UserWarning, match="trunk contains dropout"):
        fast = mc_dropout_proba(m, X[:20], passes=8, fast=True)
    full = mc_dropout_proba(m, X[:20], passes=8, fast=False)
    # the last-layer approximation under-estimates the spread of full MC dropout here
    assert fast.std(0).mean() < full.std(0).mean()


def test_segmentation_uncertainty_maps(hippo):
    X, _ = hippo
    seg = build_segmenter(3, 1, 3, dropout=0.3)
    maps = mc_uncertainty_maps(seg, X, passes=6, seed=0)
    assert maps["mean"].shape == (4, 3, 32, 32, 32)
    for k in ("entropy", "bald", "variance", "mean_std"):
        assert maps[k].shape == (4, 32, 32, 32)
    assert (maps["bald"] >= 0).all() and (maps["entropy"] <= np.log(3) + 1e-5).all()
    assert (maps["bald"] <= maps["entropy"] + 1e-5).all()  # mutual information <= total entropy
    mc = mc_dropout_proba(seg, X, passes=6, seed=0)
    np.testing.assert_allclose(maps["mean"], mc.mean(0), atol=1e-6)
    np.testing.assert_allclose(maps["bald"], score_map("bald", mc_probs=mc), atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_segmenter_head_sampled_without_copies_equals_full_mc(hippo, dims):
    """A segmenter's dropout + 1x1 conv head is sampled by scaling the conv's weights with each pass's channel
    mask (no T copies of the feature maps): the very samples of full MC dropout, in 2D and 3D."""
    from medwb.models.uncertainty import _dropout_conv_head

    X, _ = hippo
    X = X[:, :, :, :, 16] if dims == 2 else X
    seg = build_segmenter(dims, 1, 3, dropout=0.3, seed=1)
    assert _dropout_conv_head(seg.head) is not None
    fast = mc_dropout_proba(seg, X, passes=7, fast=True, seed=3, batch_size=2)
    full = mc_dropout_proba(seg, X, passes=7, fast=False, seed=3, batch_size=2)
    np.testing.assert_allclose(fast, full, atol=1e-5)
    assert fast.std(0).mean() > 1e-4  # the passes really differ
    # a head of another shape keeps the general path (the features repeated)
    assert _dropout_conv_head(nn.Sequential(seg.head[0], nn.Conv2d(16, 3, 3))) is None


def test_mc_samples_and_embeddings_from_one_trunk_pass(trained, hippo):
    """What a hybrid round scores its pool with: the MC samples and the embeddings of one trunk pass are those of
    mc_dropout_proba and embed, for a classifier and for a segmenter (trunk features averaged over space)."""
    from medwb.models import embed
    from medwb.models.uncertainty import mc_dropout_and_embeddings

    model, X = trained
    seg = build_segmenter(3, 1, 3, dropout=0.3, seed=2)
    for net, images in ((model, X[:60]), (seg, hippo[0])):
        mc, emb = mc_dropout_and_embeddings(net, images, passes=5, seed=4)
        np.testing.assert_array_equal(mc, mc_dropout_proba(net, images, passes=5, seed=4))
        np.testing.assert_allclose(emb, embed(net, images), atol=1e-5)
        assert emb.shape == (len(images), embed(net, images[:1]).shape[1]) and emb.dtype == np.float32


def test_score_map_kinds_and_errors(trained):
    model, X = trained
    mc = mc_dropout_proba(model, X, passes=10)
    p = mc.mean(0)
    ent, lc, mar = (score_map(k, probs=p) for k in ("entropy", "least_confidence", "margin"))
    # for two classes the three rank cases identically
    assert np.array_equal(np.argsort(ent, kind="stable"), np.argsort(lc, kind="stable"))
    assert np.corrcoef(lc, mar)[0, 1] > 0.999
    assert (score_map("bald", mc_probs=mc) >= 0).all()
    with pytest.raises(DataError, match="MC-dropout"):
        score_map("bald", probs=p)
    with pytest.raises(DataError, match="unknown"):
        score_map("nope", probs=p)


def test_bench_uncertainty_prints_ratios_last(samples, tmp_path, capsys):
    pytest.importorskip("baal")
    from medwb.pipelines.benchmark import bench_uncertainty

    table = bench_uncertainty(samples / "classification_2d" / "pneumoniamnist.npz", passes=4, max_pool=48,
                              out=tmp_path / "u.csv", repeats=2, slow_repeats=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("medwb_over_plain=") and lines[-1].startswith("baal_over_plain=")
    ratios = dict(line.split("=") for line in lines[-2:])
    assert float(ratios["medwb_over_plain"]) == pytest.approx(table.over_plain[1], abs=1e-3)
    assert list(table.runs) == [2, 2, 1, 1]
    assert (table.mean_sample_std[1:] > 0).all()  # every MC method really sampled
    assert (tmp_path / "u.csv").read_text().startswith("method,runs,median_s")
