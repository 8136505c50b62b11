"""medwb.pipelines.explore on the bundled real data: tables, leakage and figures (no notebook involved)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from medwb.pipelines import explore
from medwb.data import open_dataset


@pytest.fixture(scope="module")
def pneumonia(samples: Path):
    return open_dataset(samples / "classification_2d" / "pneumoniamnist.npz", progress=False)


def test_overview_counts_match_cohort(pneumonia) -> None:
    t = explore.overview_table(pneumonia)
    assert t.at["cases", "value"] == len(pneumonia.cohort) == 5856
    assert t.at["cases per split", "value"] == "train: 4708, val: 524, test: 624"  # official MedMNIST splits
    assert t.at["task", "value"] == "classification" and t.at["dimensions", "value"] == "2D"
    assert t.at["subgroup columns", "value"] == "none"


def test_class_balance_classification(pneumonia) -> None:
    t = explore.class_balance(pneumonia)
    counts = t["cases"]
    c = pneumonia.cohort
    for split in ("train", "val", "test"):
        for k, name in pneumonia.classes.items():
            assert counts.at[split, name] == int(((c["split"] == split) & (c["label"] == k)).sum())
    assert counts.loc["all"].sum() == len(c)
    np.testing.assert_allclose(t["%"].drop(index="all").sum(axis=1), 100, atol=0.2)


def test_class_balance_segmentation_reads_masks(hippocampus) -> None:
    t = explore.class_balance(hippocampus, max_cases=10, seed=1)
    assert set(t["label"]) == {"background", "Anterior", "Posterior"}
    assert (t["cases"] <= 10).all() and (t["cases"] > 0).all()
    # hippocampus masks: both structures are small, background dominates
    row = t.set_index("label")
    assert row.at["background", "mean voxel %"] > 80
    assert 0 < row.at["Anterior", "mean voxel %"] < 10
    # the fractions are the true voxel shares of the masks read
    ids = [i for i in explore.sample_case_ids(hippocampus, 10, seed=1)
           if isinstance(hippocampus.cohort.set_index("case_id").at[i, "mask"], str)]
    fr = np.mean([(hippocampus.load_mask(i) == 1).mean() for i in ids]) * 100
    assert row.at["Anterior", "mean voxel %"] == pytest.approx(fr, abs=1e-3)


def test_pneumoniamnist_leakage_is_found(pneumonia) -> None:
    """PneumoniaMNIST really has train images pixel-identical to validation images."""
    d = explore.duplicate_table(pneumonia, near_duplicate_distance=0)
    exact_leaks = d[(d["kind"] == "exact") & d["cross_split"]]
    assert len(exact_leaks) > 0
    c = pneumonia.cohort.set_index("case_id")
    for _, r in exact_leaks.iterrows():
        assert c.at[r["case_a"], "sha256"] == c.at[r["case_b"], "sha256"]
        assert np.array_equal(pneumonia.load_image(r["case_a"]), pneumonia.load_image(r["case_b"]))
    s = explore.leakage_summary(d)
    assert s.at["exact across splits (leak)", "pairs"] == len(exact_leaks)
    assert d["cross_split"].iloc[0]  # leaks are listed first
    assert any("LEAKAGE" in line for line in explore.explore_summary(pneumonia, d))


def test_no_duplicates_in_hippocampus(hippocampus) -> None:
    d = explore.duplicate_table(hippocampus, near_duplicate_distance=0)
    assert d.empty
    assert explore.leakage_summary(d).index[0] == "no duplicates found"


def test_subgroup_table_uses_metadata_columns(samples: Path, tmp_path: Path) -> None:
    """A metadata.csv joined by the data layer shows up as subgroup rows with per-split counts."""
    src = samples / "segmentation_3d" / "hippocampus"
    ds0 = open_dataset(src, progress=False)
    ids = ds0.cohort["case_id"].tolist()
    rng = np.random.default_rng(0)
    meta = pd.DataFrame({"case_id": ids, "sex": rng.choice(["F", "M"], size=len(ids)),
                         "age": rng.integers(20, 90, size=len(ids))})
    ds = open_dataset(src, metadata=meta, progress=False)
    assert ds.subgroup_columns() == ["sex", "age"]
    t = explore.subgroup_table(ds)
    assert t.loc["sex", "all"].sum() == len(ids)
    assert t.loc[("sex", "F"), "all"] == int((meta["sex"] == "F").sum())
    assert len(t.loc["age"]) == 4  # numeric column binned into quartiles
    assert explore.subgroup_table(ds0).empty


def test_figures(pneumonia, hippocampus) -> None:
    for ds in (pneumonia, hippocampus):
        figs = [explore.plot_class_balance(ds, explore.class_balance(ds, max_cases=8)),
                explore.intensity_histograms(ds, max_cases=30),
                explore.sample_grid(ds, per_class=3)]
        assert all(isinstance(f, Figure) for f in figs)
    grid = explore.sample_grid(pneumonia, per_class=4)
    assert [a.get_ylabel() for a in grid.axes[::4]] == ["normal", "pneumonia"]
    hist = explore.intensity_histograms(hippocampus, max_cases=66)
    # one real hippocampus image is stored on a ~1000x larger scale: it is reported, not plotted flat
    assert "outside the common range" in hist.axes[0].get_title()


def test_volume_case(hippocampus, pneumonia) -> None:
    case = explore.volume_case(hippocampus)
    assert hippocampus.load_mask(case) is not None
    assert explore.volume_case(pneumonia, "val_00001") == "val_00001"
    with pytest.raises(KeyError):
        explore.volume_case(pneumonia, "nope")


def test_slice_browser_on_real_2d_and_3d_datasets(samples: Path) -> None:
    """RGB fundus photos with vessel masks, and 3D classification volumes, through SliceBrowser.from_dataset."""
    import io

    from PIL import Image

    from medwb.ui.widgets.explore import SliceBrowser, browse

    chase = open_dataset(samples / "segmentation_2d" / "chase_db1", progress=False)
    b = SliceBrowser.from_dataset(chase, max_cases=3)
    assert len(b.case.options) == 3
    png = Image.open(io.BytesIO(b.image.value))
    assert max(png.size) <= 2 * b.display_px  # a 999-px photo is sent downscaled
    rgb = b.current_rgb()
    assert rgb.shape[-1] == 3 and rgb[..., 0].mean() > rgb[..., 2].mean()  # colour kept: red fundus
    b.overlay.value = False
    assert not np.array_equal(rgb, b.current_rgb())  # vessels were overlaid

    adrenal = open_dataset(samples / "classification_3d" / "adrenalmnist3d.npz", progress=False)
    b3 = SliceBrowser.from_dataset(adrenal, max_cases=4, seed=3)
    assert all("(" in label for label, _ in b3.case.options)  # class names shown next to case ids
    assert b3.slice.max == 27
    grid = browse(adrenal, static=True, grid_cases=4)
    assert len([a for a in grid.axes if a.images]) == 4


def test_dicom_headers_give_subgroups_and_thick_slices_are_not_squashed(samples: Path) -> None:
    """pydicom's sample files carry sex/age/site tags; the CT series has 2 mm slices of 0.98 mm pixels."""
    from medwb.ui.widgets.explore import SliceBrowser

    ds = open_dataset(samples / "dicom" / "pydicom", progress=False)
    assert "n_files" not in ds.subgroup_columns()  # reader bookkeeping, not a subgroup
    assert {"sex", "age", "site"} <= set(ds.subgroup_columns())
    assert set(explore.subgroup_table(ds).index.get_level_values("column")) <= set(ds.subgroup_columns())

    ct = open_dataset(samples / "dicom" / "ct_series", progress=False)
    (case,) = ct.cohort["case_id"]
    b = SliceBrowser.from_dataset(ct)
    assert b.display_size((512, 512)) == (b.display_px, b.display_px)  # axis 2: square in-plane pixels
    b.axis.value = 0
    w, h = b.display_size(b.current_rgb().shape[:2])  # 20 slices x 2 mm against 512 x 0.977 mm
    assert h / w == pytest.approx(20 * 2.0 / (512 * 0.976562), rel=0.05)
    from medwb.ui.view import show_volume

    fig = show_volume(ct.load_image(case), affine=ct.affine(case), static=True, spatial_dims=3)
    ax0 = fig.axes[0]
    assert ax0.get_aspect() == pytest.approx(2.0 / 0.976562, rel=0.01)


@pytest.mark.slow
def test_near_duplicates_are_verified_not_hash_only(samples: Path) -> None:
    """AdrenalMNIST3D binary shape masks share perceptual hashes without being copies."""
    from medwb.data.check import find_duplicates

    ds = open_dataset(samples / "classification_3d" / "adrenalmnist3d.npz", progress=False)
    d = explore.duplicate_table(ds)
    hash_only = find_duplicates(ds.cohort, 4)
    assert len(hash_only[hash_only["kind"] == "near"]) > 1000
    assert (d.loc[d["kind"] == "near", "similarity"] >= 0.95).all()
    assert len(d) < len(hash_only) // 100
