"""medwb.resources: the bundled notebooks and data samples, from a source checkout and from an installed wheel."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medwb import resources
from medwb.resources import (DEMO_DATA, EXPLORE_DATA, default_demo_data, notebook_path, resource_dir, sample_path,
                             source_checkout)

REPO = Path(__file__).resolve().parents[1]


def test_source_checkout_uses_the_top_level_folders():
    assert source_checkout() == REPO
    assert resource_dir("notebooks") == REPO / "notebooks"
    assert notebook_path("01_explore") == notebook_path("01_explore.ipynb") == REPO / "notebooks" / "01_explore.ipynb"
    assert default_demo_data() == REPO / "data_samples" / "classification_2d" / "pneumoniamnist.npz"
    assert set(np.load(default_demo_data()).files) >= {"train_images", "test_labels"}
    assert (sample_path(EXPLORE_DATA) / "dataset.json").is_file()
    assert sample_path(DEMO_DATA) == default_demo_data()


def test_unknown_names_fail_with_a_fix():
    with pytest.raises(FileNotFoundError, match="01_explore, 02_active_learning"):
        notebook_path("99_nothing")
    with pytest.raises(FileNotFoundError, match="no such data sample in this source checkout"):
        sample_path("classification_2d/nothing.npz")
    with pytest.raises(ValueError, match="unknown resource folder"):
        resource_dir("models")


def test_installed_layout_prefers_package_data(tmp_path, monkeypatch):
    """As in a wheel: medwb/notebooks and medwb/data_samples inside the package, site-packages above it."""
    pkg = tmp_path / "site-packages" / "medwb"
    (pkg / "notebooks").mkdir(parents=True)
    (pkg / "notebooks" / "04_validation_report.ipynb").write_text("{}")
    (pkg / "data_samples" / "classification_2d").mkdir(parents=True)
    (pkg / "data_samples" / DEMO_DATA).write_bytes(b"npz")
    monkeypatch.setattr(resources, "_package_dir", lambda: pkg)
    assert source_checkout() is None
    assert notebook_path("04_validation_report") == pkg / "notebooks" / "04_validation_report.ipynb"
    assert default_demo_data() == pkg / "data_samples" / DEMO_DATA
    with pytest.raises(FileNotFoundError, match="the installed wheel .it ships a subset"):
        sample_path("dicom/ct_series")


def test_install_without_the_folders_says_how_to_fix(tmp_path, monkeypatch):
    pkg = tmp_path / "site-packages" / "medwb"
    pkg.mkdir(parents=True)
    monkeypatch.setattr(resources, "_package_dir", lambda: pkg)
    with pytest.raises(FileNotFoundError, match="missing from this install. Fix: reinstall"):
        notebook_path("01_explore")


def test_medwb_notebooks_copies_and_keeps_existing_edits(tmp_path):
    from medwb.cli import main

    dest = tmp_path / "nb"
    assert main(["notebooks", str(dest)]) == 0
    names = sorted(p.name for p in dest.glob("*.ipynb"))
    assert names == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb")
                           if p.name not in resources.APP_NOTEBOOKS) and len(names) == 4  # not the app's page
    assert (dest / "01_explore.ipynb").read_bytes() == notebook_path("01_explore").read_bytes()
    (dest / "01_explore.ipynb").write_text("my edits")
    copied, skipped = resources.copy_notebooks(dest)
    assert copied == [] and dest / "01_explore.ipynb" in skipped
    assert (dest / "01_explore.ipynb").read_text() == "my edits"
    copied, _ = resources.copy_notebooks(dest, overwrite=True)
    assert dest / "01_explore.ipynb" in copied
    assert (dest / "01_explore.ipynb").read_bytes() == notebook_path("01_explore").read_bytes()
