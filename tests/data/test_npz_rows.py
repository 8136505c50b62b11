"""An uncompressed npz member is read a few rows at a time (medwb.data.npz_rows), with the same numbers as
numpy's whole-member read, and a cut-off file is a named error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medwb.data import open_dataset
from medwb.data.npz_rows import NpzRows, stored_rows
from medwb.errors import DataError


def _pool(tmp_path: Path, compressed: bool, name: str = "tiles.npz") -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)
              for s, n in (("train", 50), ("val", 10), ("test", 10))}
    arrays.update({f"{s}_labels": rng.integers(0, 3, (len(arrays[f"{s}_images"]), 1), dtype=np.uint8)
                   for s in ("train", "val", "test")})
    path = tmp_path / name
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path, arrays


def test_rows_match_numpy_for_every_kind_of_index(tmp_path: Path) -> None:
    path, arrays = _pool(tmp_path, compressed=False)
    rows, ref = NpzRows(path, "train_images"), arrays["train_images"]
    assert rows.shape == ref.shape and rows.dtype == ref.dtype and len(rows) == 50 and rows.ndim == 4
    for index in (0, -1, 7, slice(3, 9), slice(None, None, 5), [4, 5, 6, 20, 2], np.array([49, 0])):
        np.testing.assert_array_equal(rows[index], ref[index])
    with pytest.raises(IndexError):
        rows[50]
    compressed, _ = _pool(tmp_path, compressed=True, name="c.npz")
    assert stored_rows(compressed, "train_images") is None  # compressed: read whole, as before


def test_a_dataset_on_an_uncompressed_npz_reads_rows_and_matches_the_compressed_one(tmp_path: Path) -> None:
    plain, _ = _pool(tmp_path, compressed=False, name="plain.npz")
    packed, _ = _pool(tmp_path, compressed=True, name="packed.npz")
    a, b = open_dataset(plain, cache_dir=tmp_path / "ca"), open_dataset(packed, cache_dir=tmp_path / "cb")
    Xa, ya, _ = a.arrays("train")
    Xb, yb, _ = b.arrays("train")
    np.testing.assert_array_equal(Xa, Xb)
    np.testing.assert_array_equal(ya, yb)
    cols = ["intensity_mean", "intensity_std", "sha256", "phash", "shape", "channels"]
    assert a.cohort[cols].reset_index(drop=True).equals(b.cohort[cols].reset_index(drop=True))
    assert isinstance(a._split_images("train"), NpzRows)  # noqa: SLF001 - the point of the test
    np.testing.assert_array_equal(a.inputs(a.case_ids("train")[5:9]), Xb[5:9])


def test_a_cut_off_uncompressed_npz_names_the_file(tmp_path: Path) -> None:
    path, _ = _pool(tmp_path, compressed=False)
    data = path.read_bytes()
    # cut into the first member's rows, keep the zip's directory: rows past the cut are missing
    start = data.index(b"\x93NUMPY")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:start + 500] + data[-2000:])
    with pytest.raises(DataError) as e:
        ds = open_dataset(cut, cache_dir=tmp_path / "cc")
        ds.arrays("train")
    assert "cut.npz" in str(e.value)
