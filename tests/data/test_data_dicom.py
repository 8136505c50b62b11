"""DICOM on the bundled real files: JPEG 2000 CT series geometry, DICOMDIR, mixed folders, broken files."""
from __future__ import annotations

import itertools
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medwb.data import open_dataset
from medwb.errors import DataError


@pytest.fixture(scope="module")
def ct(samples, tmp_path_factory):
    return open_dataset(samples / "dicom/ct_series", cache_dir=tmp_path_factory.mktemp("c"), progress=False)


def test_ct_series_geometry_against_headers(samples, ct):
    files = sorted((samples / "dicom/ct_series").iterdir())
    hdr = [pydicom.dcmread(f) for f in files]
    assert hdr[0].file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    z = sorted(float(h.ImagePositionPatient[2]) for h in hdr)
    c = ct.cohort.iloc[0]
    assert (ct.ndim, ct.modality, len(ct.cohort)) == (3, "CT", 1)
    assert c["shape"] == f"{hdr[0].Rows}x{hdr[0].Columns}x{len(files)}"
    ps = [float(v) for v in hdr[0].PixelSpacing]
    assert c["spacing"] == f"{ps[0]:.6g}x{ps[1]:.6g}x{np.median(np.diff(z)):.6g}"
    vol = ct.load_image(c["case_id"])
    assert vol.shape == (1, 512, 512, 20)
    lowest = min(hdr, key=lambda h: float(h.ImagePositionPatient[2]))  # slice 0 = most inferior
    ref = pydicom.pixels.apply_modality_lut(lowest.pixel_array, lowest).astype(np.float32)
    np.testing.assert_array_equal(vol[0, :, :, 0], ref)
    assert c["intensity_min"] == -1024.0  # HU, rescale applied
    aff = ct.affine(c["case_id"])
    ipp = np.array([float(v) for v in lowest.ImagePositionPatient])
    np.testing.assert_allclose(aff[:3, 3], ipp * [-1, -1, 1], atol=1e-4)  # LPS -> RAS
    np.testing.assert_allclose(np.linalg.norm(aff[:3, :3], axis=0), [ps[0], ps[1], 2.0], rtol=1e-6)


def test_ct_series_lines_up_with_its_nifti_label_map(samples, ct):
    """TotalSegmentator's label map of this series (written by dcm2niix): same voxel corners in world space,
    and its labelled organs sit in tissue, not air, once reoriented through the two affines."""
    seg = nib.load(samples / "dicom/ct_series_seg.nii.gz")
    aff, shape = ct.affine("ct_series"), (512, 512, 20)

    def corners(a, shp):
        pts = np.array(list(itertools.product(*[(0, s - 1) for s in shp])))
        return np.array(sorted(map(tuple, np.round(pts @ a[:3, :3].T + a[:3, 3], 2))))

    np.testing.assert_allclose(corners(aff, shape), corners(seg.affine, seg.shape), atol=0.01)
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(aff),
                                           nib.orientations.io_orientation(seg.affine))
    vol = nib.orientations.apply_orientation(ct.load_image("ct_series")[0], ornt)
    lab = np.asanyarray(seg.dataobj) > 0
    assert lab.sum() > 1000 and np.median(vol[lab]) > -200 and np.median(vol[~lab]) < -500


def test_dicomdir_one_case_per_series(samples, tmp_path):
    p = samples / "dicom/pydicom/dicomdirtests/DICOMDIR"
    ds = open_dataset(p, cache_dir=tmp_path, progress=False)
    fs = pydicom.fileset.FileSet(pydicom.dcmread(p))
    series = {id(i.node.parent) for i in fs}
    c = ds.cohort
    assert len(c) >= len(series) and c["n_files"].sum() == len(list(fs))  # every instance used exactly once
    assert set(c["modality"]) == {"CR", "CT", "MR"} and c["case_id"].is_unique
    row = c[c["n_files"] == 5].iloc[0]  # the 5-slice CT series
    assert row["shape"] == "16x16x5" and row["spacing"].endswith("x2.5")
    assert ds.load_image(row["case_id"]).shape == (1, 16, 16, 5)
    assert open_dataset(p.parent, cache_dir=tmp_path, progress=False).cohort["case_id"].tolist() == c["case_id"].tolist()


def test_single_files_and_mixed_folder(samples, tmp_path):
    j2k = open_dataset(samples / "dicom/pydicom/JPEG2000.dcm", cache_dir=tmp_path, progress=False)
    ref = pydicom.dcmread(samples / "dicom/pydicom/JPEG2000.dcm")
    assert j2k.ndim == 2 and j2k.load_image("JPEG2000").shape == (1, ref.Rows, ref.Columns)
    np.testing.assert_array_equal(j2k.load_image("JPEG2000")[0], pydicom.pixels.apply_modality_lut(ref.pixel_array, ref))
    mixed = open_dataset(samples / "dicom/pydicom", cache_dir=tmp_path, progress=False)
    notes = " ".join(mixed.notes)
    assert "rtplan.dcm: skipped" in notes and "liver_1frame.dcm: skipped (SEG" in notes
    c = mixed.cohort
    assert c["problem"].isna().all() and {"CT", "MR", "NM", "CR", "RTDOSE"} <= set(c["modality"])
    dose = c[c["modality"] == "RTDOSE"].iloc[0]
    assert dose["shape"] == "10x10x15"  # multi-frame dose grid


def test_truncated_and_unreadable_dicom(samples, tmp_path):
    d = tmp_path / "series"
    shutil.copytree(samples / "dicom/ct_series", d)
    victim = sorted(d.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:-40000])  # pixel data cut short
    ds = open_dataset(d, cache_dir=tmp_path, progress=False)
    with pytest.warns(UserWarning, match="could not be read"):
        assert "cannot decode DICOM pixel data" in ds.cohort["problem"].iloc[0]
    with pytest.raises(DataError, match="cannot decode DICOM pixel data") as e:
        ds.load_image(ds.cohort["case_id"].iloc[0])
    assert str(victim) in str(e.value)
    victim.write_bytes(victim.read_bytes()[:300])  # header cut short
    with pytest.raises(DataError, match="cannot read DICOM") as e:
        open_dataset(d)
    assert str(victim) in str(e.value)


def test_duplicate_slice_positions(samples, tmp_path):
    d = tmp_path / "series"
    shutil.copytree(samples / "dicom/ct_series", d)
    files = sorted(d.iterdir())
    h = pydicom.dcmread(files[1])
    h.ImagePositionPatient = pydicom.dcmread(files[0]).ImagePositionPatient
    h.save_as(files[1])
    with pytest.raises(DataError, match="two slices at the same position"):
        open_dataset(d)


def test_monochrome1_is_inverted(samples, tmp_path):
    """MONOCHROME1 (low values display white) is mirrored to bright = dense: a real CR file from the DICOMDIR
    tree (12-bit unsigned, rescaled), and MR_small.dcm with only its PhotometricInterpretation changed."""
    cr = samples / "dicom/pydicom/dicomdirtests/77654033/CR1/6154"
    ref = pydicom.dcmread(cr)
    assert (ref.PhotometricInterpretation, ref.BitsStored, ref.PixelRepresentation) == ("MONOCHROME1", 12, 0)
    ds = open_dataset(cr, cache_dir=tmp_path / "c1", progress=False)
    img = ds.load_image(ds.cohort["case_id"].iloc[0])[0]
    expected = (4095 - ref.pixel_array.astype(np.float64)) * float(ref.RescaleSlope) + float(ref.RescaleIntercept)
    np.testing.assert_allclose(img, expected, rtol=1e-6)
    assert np.unravel_index(img.argmax(), img.shape) == np.unravel_index(ref.pixel_array.argmin(), img.shape)

    mr = pydicom.dcmread(samples / "dicom/pydicom/MR_small.dcm")
    assert mr.PhotometricInterpretation == "MONOCHROME2" and mr.PixelRepresentation == 1
    mr.PhotometricInterpretation = "MONOCHROME1"
    (tmp_path / "m1").mkdir()
    mr.save_as(tmp_path / "m1" / "MR_small.dcm")
    m2 = open_dataset(samples / "dicom/pydicom/MR_small.dcm", cache_dir=tmp_path / "c2", progress=False)
    m1 = open_dataset(tmp_path / "m1" / "MR_small.dcm", cache_dir=tmp_path / "c2", progress=False)
    a, b = m2.load_image("MR_small"), m1.load_image("MR_small")
    np.testing.assert_array_equal(b, -1 - a)  # signed 16-bit: v -> -1 - v (mirror within the stored range)
    assert b.argmax() == a.argmin()
    assert m1.cohort["intensity_max"].iloc[0] == -1 - m2.cohort["intensity_min"].iloc[0]


@pytest.mark.parametrize("change, message", [
    (lambda d: setattr(d, "Rows", [10, 10]), r"DICOM Rows is \[10, 10\], not one positive integer"),
    (lambda d: delattr(d, "Columns"), r"DICOM image header has no Columns"),
    (lambda d: setattr(d, "Rows", 0), r"DICOM Rows is 0, not one positive integer"),
    (lambda d: setattr(d, "Rows", None), r"DICOM image header has no Rows"),
    (lambda d: setattr(d, "GridFrameOffsetVector", [0.0, 5.0]), r"Grid Frame Offset Vector has 2 value\(s\) for 15"),
])
def test_image_dimensions_and_frame_offsets_checked(samples, tmp_path, change, message):
    """Found by random fuzz runs on rtdose.dcm: Rows holding two values, Columns missing, Rows empty gave
    TypeError/AttributeError/ValueError; the header's image dimensions are now checked in one place."""
    d = pydicom.dcmread(samples / "dicom/pydicom/rtdose.dcm")
    change(d)
    (tmp_path / "dose").mkdir()
    d.save_as(tmp_path / "dose" / "rtdose.dcm")
    with pytest.raises(DataError, match=r"rtdose\.dcm: " + message + r".*Fix: "):
        open_dataset(tmp_path / "dose", cache_dir=tmp_path / "c", progress=False)
