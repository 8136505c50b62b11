"""``medwb structure`` on segmentation data: region maps in the case's geometry, and the region-click evaluation
(issue 13), on the bundled real data."""
import nibabel as nib
import numpy as np
import pandas as pd

from medwb.al.regions import study_regions
from medwb.data import open_dataset
from medwb.pipelines.structure import format_structure, run_structure
from medwb.store import Study


def test_structure_writes_3d_regions_in_the_case_geometry_and_evaluates_clicks(tmp_path, samples):
    data = samples / "segmentation_3d" / "hippocampus"
    res = run_structure(data, tmp_path / "out", max_cases=3, progress=False)
    assert res["cases"] == 3 and res["evaluated"] == 3
    manifest = pd.read_csv(tmp_path / "out" / "regions" / "manifest.csv")
    ds = open_dataset(data, progress=False)
    for _, row in manifest.iterrows():
        img = nib.load(str(tmp_path / "out" / "regions" / row["file"]))
        assert img.shape == (*ds.load_image(row["case_id"]).shape[1:], 3)
        assert np.allclose(img.affine, ds.affine(row["case_id"]))
        # the file holds what the study caches (and the review queue reuses)
        with Study.open(tmp_path / "out" / "study") as study:
            cached = study_regions(study, ds, row["case_id"])
        assert np.array_equal(np.moveaxis(cached, 0, -1), np.asarray(img.dataobj))
    table = pd.read_csv(tmp_path / "out" / "regions_eval.csv")
    assert (table["clicks"] > 0).all() and (table["outline_actions"] > table["clicks"] / 10).all()
    assert table["dice"].between(0, 1).all()
    assert "region-click" in format_structure(res)


def test_structure_cli_on_2d_with_a_second_observer(tmp_path, samples, capsys):
    from medwb.cli import main

    out = tmp_path / "out"
    rc = main(["structure", str(samples / "segmentation_2d" / "chase_db1"), "--out", str(out), "--max-cases", "1",
               "--quiet"])
    stdout = capsys.readouterr().out
    assert rc == 0
    assert "second observer" in stdout and "regions_eval.csv" in stdout
    table = pd.read_csv(out / "regions_eval.csv")
    assert {"observer2_dice", "clicks_to_observer2"} <= set(table.columns)
    assert 0.5 < table["observer2_dice"].iloc[0] < 1
    img = nib.load(str(out / "regions" / pd.read_csv(out / "regions" / "manifest.csv")["file"].iloc[0]))
    assert img.shape[2] == 1 and img.shape[3] == 3  # 2D: (H, W, 1, levels)
