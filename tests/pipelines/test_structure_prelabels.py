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


def test_vessel_prelabels_of_a_fundus_photo_are_scored_against_both_observers(tmp_path, samples):
    """CHASE_DB1 has two observers: the manifest gives the pre-label's Dice with each and the second observer's
    own Dice with the first (what a label-free pre-label is compared with)."""
    from medwb.al.regions import RegionConfig, over_segment
    from medwb.pipelines.regions import evaluate_case

    chase = open_dataset(samples / "segmentation_2d" / "chase_db1", progress=False)
    cid = chase.case_ids()[0]
    run_prelabels(chase, tmp_path, kind="vessels", ids=[cid], progress=False)
    row = pd.read_csv(tmp_path / "prelabels" / "manifest.csv").iloc[0]
    assert row["found"] and 0.5 < row["dice"] < 1 and 0.5 < row["dice_observer2"] < 1
    first, second = chase.load_mask(cid)[0] != 0, chase.load_mask(cid, observer=2)[0] != 0
    assert np.isclose(row["observer2_dice"], 2 * (first & second).sum() / (first.sum() + second.sum()))
    pre = np.asarray(Image.open(tmp_path / "prelabels" / row["file"])) > 0
    regions = over_segment(chase.load_image(cid), config=RegionConfig(levels=(20, 200)))
    ev = evaluate_case(chase, cid, regions, target=0.9, step=5, max_clicks=20, start=pre)
    # the annotator starting from the pre-label ends at least as close to observer 1 as its clicks allow
    assert ev["dice_prelabel_at_observer2"] >= row["dice"] - 1e-9
    assert ev["clicks_prelabel_to_observer2"] <= 20 and ev["reached_prelabel_observer2"] in (0.0, 1.0)


def test_the_cli_offers_every_label_free_prelabel():
    from medwb.al.prelabels import LABEL_FREE
    from medwb.cli import PRELABELS

    assert set(PRELABELS) == set(LABEL_FREE)
