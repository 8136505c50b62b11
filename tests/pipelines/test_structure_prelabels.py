"""``medwb structure --prelabel ellipse``: label-free pre-label masks of 2D segmentation cases, in each case's
geometry, scored against the masks where they exist (issue 13), on the bundled HC18 images."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medwb.data import open_dataset
from medwb.errors import ConfigError
from medwb.pipelines.regions import run_prelabels


def test_structure_cli_writes_ellipse_prelabels_with_dice(tmp_path, samples, capsys):
    from medwb.cli import main

    data = samples / "segmentation_2d" / "hc18"
    out = tmp_path / "out"
    rc = main(["structure", str(data), "--out", str(out), "--max-cases", "2", "--prelabel", "ellipse", "--quiet"])
    stdout = capsys.readouterr().out
    assert rc == 0 and "label-free pre-labels" in stdout and "prelabels/" in stdout
    manifest = pd.read_csv(out / "prelabels" / "manifest.csv")
    assert len(manifest) == 2 and manifest["found"].all() and manifest["dice"].between(0, 1).all()
    ds = open_dataset(data, progress=False)
    for _, row in manifest.iterrows():
        png = np.asarray(Image.open(out / "prelabels" / row["file"]))
        assert png.shape == ds.load_image(row["case_id"]).shape[1:] and set(np.unique(png)) <= {0, 255}
        truth = ds.load_mask(row["case_id"])[0] != 0
        pre = png > 0
        assert np.isclose(row["dice"], 2 * (pre & truth).sum() / (pre.sum() + truth.sum()))
    # the regions are still written beside them (the same cases), and the annotator is also measured starting
    # from the pre-label (on some heads correcting a pre-label costs more clicks than starting over, and the
    # table says so; over both, fewer, and one needs none)
    assert len(pd.read_csv(out / "regions" / "manifest.csv")) == 2
    ev = pd.read_csv(out / "regions_eval.csv")
    assert ev["reached_from_prelabel"].all() and ev["clicks_from_prelabel"].sum() < ev["clicks"].sum()
    assert (ev["clicks_from_prelabel"] == 0).any()
    assert "region-click from the pre-label" in stdout


def test_prelabels_refuse_3d_data_and_unknown_kinds(tmp_path, samples):
    hippo = open_dataset(samples / "segmentation_3d" / "hippocampus", progress=False)
    with pytest.raises(ConfigError, match="2D segmentation"):
        run_prelabels(hippo, tmp_path, ids=hippo.case_ids()[:1])
    hc18 = open_dataset(samples / "segmentation_2d" / "hc18", progress=False)
    with pytest.raises(ConfigError, match="unknown"):
        run_prelabels(hc18, tmp_path, kind="circle", ids=hc18.case_ids()[:1])


def test_structure_cli_refuses_prelabel_masks_for_classification(tmp_path, samples, capsys):
    from medwb.cli import main

    rc = main(["structure", str(samples / "classification_2d" / "pneumoniamnist.npz"), "--out", str(tmp_path / "o"),
               "--prelabel", "ellipse", "--quiet"])
    assert rc == 2 and "2D segmentation" in capsys.readouterr().err
    assert not (tmp_path / "o" / "study").exists()  # refused before any pretraining
