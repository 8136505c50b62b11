"""score_pool on a segmenter (real MSD hippocampus volumes at a small grid): mean foreground probability,
per-image uncertainty (top-k voxels, as the loop reduces it) and a spatially averaged embedding per case."""
from __future__ import annotations

import numpy as np


def test_segmenter_rows_in_process(samples) -> None:
    from medwb.compute import score_pool
    from medwb.data import open_dataset
    from medwb.models import build_segmenter

    ds = open_dataset(samples / "segmentation_3d" / "hippocampus", progress=False)
    ids = ds.case_ids("train")[:3]
    seg = build_segmenter(3, 1, 3, seed=0, channels=(8, 16, 32), features=8)
    kw = dict(shard_size=2, mc_samples=3, seed=1, size=(16, 24, 16), progress=False, uncertainty="bald")
    df = score_pool(seg, ds, ids, **kw)
    assert list(df["case_id"]) == ids
    assert list(df.columns) == ["case_id", "mean_foreground", "uncertainty", "embedding"]
    assert df["mean_foreground"].between(0, 1).all() and (df["uncertainty"] >= 0).all()
    assert np.stack(df["embedding"].to_list()).shape == (3, 8)
    again = score_pool(seg, ds, ids, **kw)
    np.testing.assert_array_equal(df["uncertainty"], again["uncertainty"])
