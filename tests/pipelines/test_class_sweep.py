"""Labels needed vs number of classes: nested class subsets of a MedMNIST-layout NPZ, one simulation each,
the sweep table and its figure, and the report's table of it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medwb.errors import DataError
from medwb.pipelines.class_sweep import SWEEP_COLUMNS, class_subset_npz, nested_class_order


def _four_class_npz(path: Path, per_class: tuple[int, int, int] = (30, 10, 10)) -> Path:
    """4 classes told apart by where a bright square sits (learnable in a few epochs), MedMNIST layout."""
    rng = np.random.default_rng(0)
    out = {}
    for split, n in zip(("train", "val", "test"), per_class):
        imgs, labels = [], []
        for c in range(4):
            x = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
            r, q = divmod(c, 2)
            x[:, 4 + 12 * r:12 + 12 * r, 4 + 12 * q:12 + 12 * q] = 220
            imgs.append(x)
            labels.append(np.full(n, c))
        out[f"{split}_images"] = np.concatenate(imgs)
        out[f"{split}_labels"] = np.concatenate(labels).astype(np.uint8).reshape(-1, 1)
    np.savez_compressed(path, **out)
    return path


def test_class_subset_keeps_and_relabels_only_those_classes(tmp_path: Path) -> None:
    src = _four_class_npz(tmp_path / "four.npz")
    dest = class_subset_npz(src, [3, 1], tmp_path / "sub.npz")
    with np.load(src) as a, np.load(dest) as b:
        for split in ("train", "val", "test"):
            y_old = a[f"{split}_labels"].reshape(-1)
            y_new = b[f"{split}_labels"].reshape(-1)
            assert sorted(set(y_new.tolist())) == [0, 1]
            assert len(y_new) == int(np.isin(y_old, [3, 1]).sum())
            # the images moved with their labels: new 0 is old 3, new 1 is old 1
            np.testing.assert_array_equal(b[f"{split}_images"][y_new == 0], a[f"{split}_images"][y_old == 3])
            np.testing.assert_array_equal(b[f"{split}_images"][y_new == 1], a[f"{split}_images"][y_old == 1])
        assert b["class_map"].tolist() == [3, 1]
    order = nested_class_order(src, random_state=0)
    assert sorted(order) == [0, 1, 2, 3] and order == nested_class_order(src, random_state=0)


def test_class_subset_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    src = _four_class_npz(tmp_path / "four.npz")
    with pytest.raises(DataError, match="do not occur") as e:
        class_subset_npz(src, [0, 9], tmp_path / "x.npz")
    assert "four.npz" in str(e.value)
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="MedMNIST-layout"):
        class_subset_npz(bad, [0, 1], tmp_path / "y.npz")


def test_class_sweep_table_and_figure_for_the_report(tmp_path: Path) -> None:
    from medwb.report.figures import class_sweep_figure
    from medwb.report.sections import class_sweep_table

    rows = [(k, "0 1", "hybrid", "auc", 100, 0.99, 10, 0.98, 0.99, 10.0 * k if k == 2 else float("nan"), 0.1 * k, 3)
            for k in (2, 4)]
    csv = tmp_path / "class_sweep.csv"
    pd.DataFrame(rows, columns=SWEEP_COLUMNS).to_csv(csv, index=False)
    t = class_sweep_table(csv)
    assert list(t["n_classes"]) == [2, 4] and "classes" not in t
    assert class_sweep_table(None).empty and class_sweep_table(tmp_path / "missing.csv").empty
    fig = class_sweep_figure(t)
    assert fig.axes[0].get_xlabel() == "number of classes"


@pytest.mark.slow
def test_class_sweep_cli_runs_one_simulation_per_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medwb.cli import main

    src = _four_class_npz(tmp_path / "four.npz")
    out = tmp_path / "sweep"
    argv = ["class-sweep", str(src), "--classes", "2,4", "--strategy", "random:scratch", "--budget", "0.5",
            "--rounds", "2", "--seeds", "1", "--epochs", "2", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    table = pd.read_csv(out / "class_sweep.csv")
    assert list(table.columns) == SWEEP_COLUMNS
    assert sorted(table["n_classes"].unique()) == [2, 4] and set(table["strategy"]) == {"random-scratch"}
    assert (table[table["n_classes"] == 2]["pool"] == 60).all() and (table[table["n_classes"] == 4]["pool"] == 120).all()
    for k in (2, 4):
        curves = pd.read_csv(out / f"classes_{k}" / "curves.csv")
        assert {"full", "random-scratch"} <= set(curves["strategy"])
    # nested: the 2-class subset's classes are the first two of the 4-class one
    two, four = (table[table["n_classes"] == k]["classes"].iloc[0].split() for k in (2, 4))
    assert four[:2] == two
    assert (out / "class_sweep.png").stat().st_size > 1000
    assert "n_classes" in capsys.readouterr().out


def test_a_class_subset_of_a_known_medmnist_set_keeps_the_published_class_names(tmp_path: Path) -> None:
    from medwb.data import open_dataset

    src = _four_class_npz(tmp_path / "bloodmnist.npz")  # named like the published set: its class names apply
    assert open_dataset(src, cache_dir=tmp_path).classes[3] == "immature granulocytes"
    assert open_dataset(src, cache_dir=tmp_path).modality == "microscopy"
    sub = open_dataset(class_subset_npz(src, [3, 1], tmp_path / "bloodmnist_2classes.npz"), cache_dir=tmp_path)
    assert sub.classes == {0: "immature granulocytes", 1: "eosinophil"}  # new index -> its original's name


@pytest.mark.slow
def test_class_sweep_with_a_key_writes_nothing_in_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medwb.pipelines.class_sweep import run_class_sweep
    from medwb.privacy.crypto import MAGIC, generate_key
    from medwb.store import files

    key_file = Path(generate_key(tmp_path / "keys" / "site.key").source)
    monkeypatch.delenv("MEDWB_KEY", raising=False)
    monkeypatch.setenv("MEDWB_KEY_FILE", str(key_file))
    src = _four_class_npz(tmp_path / "four.npz")
    out = tmp_path / "sweep"
    table = run_class_sweep(src, class_counts=[2], out_dir=out, strategies=["random:scratch"], budget=0.5, rounds=1,
                            seeds=1, epochs=1, progress=False)
    assert list(table["n_classes"].unique()) == [2]
    for name in ("class_sweep.csv", "class_sweep.png", "classes_2/curves.csv"):
        assert (out / name).read_bytes().startswith(MAGIC), name
    assert pd.read_csv(__import__("io").BytesIO(files.read_bytes(out / "class_sweep.csv"))).equals(table)
    assert not (out / "subsets").exists() and not list(out.rglob("*.npz"))  # the subset images never land here
