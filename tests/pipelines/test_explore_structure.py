"""The explore report's structure-model gallery: real PneumoniaMNIST cases clustered on pixel features, drawn as
the static cluster gallery; segmentation data shows its regions."""
from __future__ import annotations

from pathlib import Path

from medwb.data import open_dataset
from medwb.pipelines.explore import structure_gallery


def test_gallery_of_a_classification_dataset(samples: Path, capsys) -> None:
    ds = open_dataset(samples / "classification_2d" / "pneumoniamnist.npz", progress=False)
    fig = structure_gallery(ds, max_cases=250, seed=0)
    assert "250 cases in 3 clusters" in capsys.readouterr().out  # one cluster per 100 cases
    titles = [a.get_title(loc="left") for a in fig.axes]
    assert len(titles) == 3 and sum(int(t.split(": ")[1].split(" cases")[0]) for t in titles) == 250


def test_segmentation_data_shows_its_regions(samples: Path, capsys) -> None:
    ds = open_dataset(samples / "segmentation_3d" / "hippocampus", progress=False)
    fig = structure_gallery(ds, max_cases=5, regions_shown=2)
    assert "structure model (regions)" in capsys.readouterr().out
    titles = [a.get_title() for a in fig.axes]
    assert len(titles) == 2 and all("regions)" in t for t in titles)
    # the cases shown are ones with a mask, so the figure can outline the structure
    assert all(ds.load_mask(t.split(" (")[0]) is not None for t in titles)


def test_2d_segmentation_shows_the_label_free_prelabel(hc18, capsys) -> None:
    import numpy as np
    import pytest

    from medwb.errors import ConfigError

    fig = structure_gallery(hc18, regions_shown=2, prelabel="ellipse")
    out = capsys.readouterr().out
    assert "label-free pre-labels (ellipse), in cyan" in out and out.count(" 0.") + out.count(" 1.0") >= 2
    cyan = [(np.asarray(ax.get_images()[0].get_array())[..., :3] == (0, 200, 255)).all(-1).sum() for ax in fig.axes]
    assert len(cyan) == 2 and all(n > 100 for n in cyan)  # each case's ellipse outlined
    with pytest.raises(ConfigError, match="2D segmentation"):
        structure_gallery(open_dataset(hc18.path.parent.parent / "segmentation_3d" / "hippocampus", progress=False),
                          prelabel="ellipse")
