"""Issue 16 probes on bad inputs: each one used to crash with a traceback or pass silently; now each is a named
error (file, problem, fix) and a non-zero `medwb` exit. Built from the bundled real files."""
from __future__ import annotations

import io
import time
import unicodedata
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medwb.cli import main
from medwb.data import open_dataset
from medwb.data.npyheader import check_array_size
from medwb.errors import DataError

PNEUMONIA = "classification_2d/pneumoniamnist.npz"


@pytest.fixture(scope="module")
def pneumonia(samples) -> dict[str, np.ndarray]:
    with np.load(samples / PNEUMONIA) as z:
        return {k: z[k] for k in z.files}


def _cli_refuses(argv: list[str], capsys, *needles: str) -> str:
    """`medwb ARGV` exits non-zero with a one-line error (no traceback) holding every needle."""
    assert main(argv) != 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    for n in needles:
        assert n in text, text
    return text


def test_npz_with_empty_arrays(tmp_path, capsys):
    """Before: KeyError: 'case_id' from deep inside pandas."""
    p = tmp_path / "empty.npz"
    np.savez(p, train_images=np.zeros((0, 28, 28), np.uint8), train_labels=np.zeros((0, 1), np.uint8))
    with pytest.raises(DataError, match="no images: train_images is empty") as e:
        open_dataset(p, cache_dir=tmp_path)
    assert e.value.path == str(p) and e.value.fix
    _cli_refuses(["check", str(p)], capsys, str(p), "no images", "Fix:")
    q = tmp_path / "flat.npz"  # images with a zero-sized axis
    np.savez(q, train_images=np.zeros((3, 0, 28), np.uint8), train_labels=np.zeros((3, 1), np.uint8))
    with pytest.raises(DataError, match="not a stack of images"):
        open_dataset(q, cache_dir=tmp_path)


def _forged_member(arr: np.ndarray, claimed: tuple[int, ...]) -> bytes:
    """An .npy member holding ``arr``'s bytes under a header that claims shape ``claimed``."""
    hdr = np.lib.format.header_data_from_array_1_0(arr)
    hdr["shape"] = claimed
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, hdr)
    return buf.getvalue() + arr.tobytes()


def test_huge_npy_header_is_refused_before_allocating(tmp_path, pneumonia, capsys):
    """Before: MemoryError after 65 s at 5.8 GB. The header claims 100M images of the file's 28x28."""
    p = tmp_path / "huge.npz"
    buf = io.BytesIO()
    np.save(buf, pneumonia["train_labels"][:10])
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("train_images.npy", _forged_member(pneumonia["train_images"][:10], (100_000_000, 28, 28)))
        z.writestr("train_labels.npy", buf.getvalue())
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"claims shape \(100000000, 28, 28\) uint8 \(78.4 GB\)") as e:
        open_dataset(p, cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 5 and e.value.path == str(p)
    _cli_refuses(["check", str(p)], capsys, str(p), "forged header", "Fix:")
    # a plain .npy (a mask file) with the same forged header
    from medwb.store.masks import read_mask

    m = tmp_path / "mask.npy"
    m.write_bytes(b"\x93NUMPY" + _forged_member(np.zeros((28, 28), np.int64), (50_000, 50_000))[6:])
    with pytest.raises(DataError, match="forged header") as e:
        read_mask(m)
    assert e.value.path == str(m)


def test_array_larger_than_memory_is_refused(tmp_path):
    """A consistent header whose array is bigger than this machine's memory: named before numpy tries."""
    with pytest.raises(DataError, match=r"needs 8000000.0 GB of memory") as e:
        check_array_size(tmp_path / "big.npy", "the array", (10**9, 10**6), np.dtype(np.float64))
    assert "more memory" in e.value.fix


@pytest.mark.parametrize("bad", [-1, 255])
def test_unknown_marker_labels_are_invalid(tmp_path, pneumonia, capsys, bad):
    """Before: `medwb check` listed -1 / 255 as classes of their own."""
    y = pneumonia["train_labels"][:40].astype(np.int16 if bad < 0 else np.uint8).copy()
    y[[3, 17]] = bad
    p = tmp_path / "site_export.npz"
    np.savez(p, train_images=pneumonia["train_images"][:40], train_labels=y)
    _cli_refuses(["check", str(p)], capsys, str(p), "invalid labels", f"[{bad}]", "Fix:")
    with pytest.raises(DataError, match="not class indices"):
        open_dataset(p, cache_dir=tmp_path)
    # declared classes: -1 is still refused, 255 is outside them
    with pytest.raises(DataError, match="negative values" if bad < 0 else "outside the declared classes"):
        open_dataset(p, cache_dir=tmp_path, classes={0: "normal", 1: "pneumonia"})


def test_class_names_in_nfc_and_nfd_are_one_class(tmp_path, pneumonia, capsys):
    """Before: "Café" typed on Linux (NFC) and copied from macOS (NFD) became two classes."""
    nfc, nfd = unicodedata.normalize("NFC", "Café"), unicodedata.normalize("NFD", "Café")
    assert nfc != nfd
    root = tmp_path / "cafe_set"
    for split, name, first in (("train", nfc, 0), ("test", nfd, 10), ("train", "Thé", 20), ("test", "Thé", 30)):
        d = root / split / name
        d.mkdir(parents=True)
        for i in range(first, first + 5):
            Image.fromarray(pneumonia["train_images"][i]).save(d / f"img{i}.png")
    ds = open_dataset(root, cache_dir=tmp_path / "cache")
    assert ds.classes == {0: nfc, 1: "Thé"}
    assert ds.cohort.groupby("split")["label"].apply(lambda s: sorted(set(s))).to_dict() == {"test": [0, 1],
                                                                                              "train": [0, 1]}
    assert all(unicodedata.is_normalized("NFC", c) for c in ds.cohort["case_id"])
    assert main(["check", str(root)]) == 0
    assert "Result: OK" in capsys.readouterr().out
    # declared names that differ only in their Unicode form are one name twice: an error, not two classes
    with pytest.raises(DataError, match="same name"):
        open_dataset(root, cache_dir=tmp_path / "cache", classes={0: nfc, 1: nfd})


def _nan_affine_nifti(samples: Path, tmp_path: Path) -> Path:
    src = next((samples / "segmentation_3d").rglob("imagesTr/*.nii.gz"))
    img = nib.load(str(src))
    aff = img.affine.copy()
    aff[0, 3] = np.nan
    folder = tmp_path / "nan_affine"
    (folder / "imagesTr").mkdir(parents=True)
    out = folder / "imagesTr" / src.name
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), aff, img.header), str(out))
    return out


def test_nifti_with_nan_affine_is_refused(samples, tmp_path, capsys):
    """Before: accepted by open_dataset and copied on by `medwb deid`."""
    from medwb.data.nifti import read_nifti
    from medwb.privacy.deid import deidentify_path

    p = _nan_affine_nifti(samples, tmp_path)
    with pytest.raises(DataError, match="NaN/Inf") as e:
        read_nifti(p)
    assert e.value.path == str(p) and "valid sform/qform" in e.value.fix
    with pytest.raises(DataError, match="NaN/Inf"):
        open_dataset(p.parent.parent, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="NaN/Inf"):
        deidentify_path(p, tmp_path / "deid_out", key_file=tmp_path / "keys" / "k.key")
    assert not list((tmp_path / "deid_out").rglob("*.nii*"))
    _cli_refuses(["deid", str(p), str(tmp_path / "deid_out2"), "--key-file", str(tmp_path / "keys" / "k.key")],
                 capsys, str(p), "NaN/Inf", "Fix:")
