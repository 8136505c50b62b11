"""De-identification on the real DICOM samples: the WHOLE PS3.15 E.1-1 basic profile is checked attribute by
attribute (at every nesting level), plus UID linkage, pixel identity, burned-in handling, dates, NIfTI."""
from __future__ import annotations

import gzip
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_description, dictionary_has_tag
from pydicom.sequence import Sequence

from medwb.cli import main
from medwb.errors import CryptoError, DataError
from medwb.privacy import crypto
from medwb.privacy.deid import (
    IDENTITY_MAP_NAME,
    PATIENT_ID,
    PATIENT_NAME,
    PROFILE,
    RESOLVED_ACTION,
    SUMMARY_CSV_NAME,
    Pseudonymizer,
    deidentify_path,
    rule_for,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _key(tmp: Path, name: str = "site.key") -> Path:
    p = tmp / name
    crypto.generate_key(p)
    return p


def _empty(value) -> bool:
    return value is None or value == "" or (isinstance(value, (list, Sequence, pydicom.multival.MultiValue))
                                            and len(value) == 0)


def _values(value) -> list[str]:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [str(v) for v in value]
    return [str(value)]


def check_profile(orig: pydicom.Dataset, out: pydicom.Dataset, pseudo: Pseudonymizer, where: str = "") -> int:
    """Every attribute of ``orig`` covered by Table E.1-1 was handled as the profile says; returns how many
    table attributes were checked. Recurses into kept sequences item by item."""
    checked = 0
    for elem in orig:
        tag = elem.tag
        at = f"{where}{tag}"
        if tag.group == 0x0002:
            continue
        if tag.is_private:
            assert tag not in out, f"private attribute {at} survived"
            continue
        if tag.element == 0 and tag.group > 2:
            continue
        if tag in (PATIENT_NAME, PATIENT_ID):
            got = str(out[tag].value)
            assert got.startswith("MWB-"), f"{at} not pseudonymised: {got!r}"
            if str(elem.value).strip():
                assert got != str(elem.value), at
            checked += 1
            continue
        rule = rule_for(tag)
        if rule is None:
            if elem.VR == "SQ" and elem.value:
                assert tag in out and len(out[tag].value) == len(elem.value), f"sequence {at} lost items"
                for i, (a, b) in enumerate(zip(elem.value, out[tag].value)):
                    checked += check_profile(a, b, pseudo, f"{at}[{i}].")
            continue
        checked += 1
        action = RESOLVED_ACTION[rule.action]
        if action == "X":
            assert tag not in out, f"{at} {rule.name} ({rule.action}) should be removed"
        elif action == "Z":
            assert tag not in out or _empty(out[tag].value), f"{at} {rule.name} ({rule.action}) not emptied"
        elif action == "D":
            assert tag in out, f"{at} {rule.name} (D) missing"
            new = out[tag].value
            if elem.VR == "SQ":
                assert len(new) == 1 and len(new[0]) == 0, f"{at} {rule.name}: dummy sequence expected"
            elif elem.VR == "UI":
                assert _values(new) == [pseudo.uid(v) for v in _values(elem.value)]
            elif not _empty(elem.value) and str(elem.value) not in ("ANONYMIZED", "0"):
                assert str(new) != str(elem.value), f"{at} {rule.name} (D) kept its value"
                assert not _empty(new), f"{at} {rule.name} (D) must be non-empty"
        elif action == "U":
            new = out[tag].value
            if not _empty(elem.value):
                assert _values(new) == [pseudo.uid(v) for v in _values(elem.value)], f"{at} UID not remapped"
                assert not set(_values(new)) & set(_values(elem.value)), at
        elif action == "U*":
            assert tag in out and len(out[tag].value) == len(elem.value)
            for i, (a, b) in enumerate(zip(elem.value, out[tag].value)):
                checked += check_profile(a, b, pseudo, f"{at}[{i}].")
    return checked


def _identifying_strings(ds: pydicom.Dataset) -> set[str]:
    """Original values that must not appear anywhere in the output: person names, IDs, numbers, addresses,
    institutions, birth date and replaced UIDs. (Descriptions such as a code meaning outside the table are kept by
    the basic profile; cleaning them is the separate Clean Descriptors option.)"""
    out = set()
    who = re.compile(r"\b(ID|IDs|Name|Names|Number|Numbers|Address|Institution|Telephone|Issuer|Identifier)\b")
    for elem in ds.iterall():
        rule = rule_for(elem.tag)
        if elem.tag in (PATIENT_NAME, PATIENT_ID, 0x00100030) or elem.VR == "PN" or (
            rule is not None and ((elem.VR == "UI" and rule.action == "U") or who.search(rule.name))
        ):
            for v in _values(elem.value) if elem.VR != "SQ" else []:
                if len(v.strip()) >= 6 and v.strip() not in ("ANONYMIZED",):
                    out.add(v.strip())
    return out


def _all_strings(ds: pydicom.Dataset) -> set[str]:
    s = set()
    for elem in list(ds.iterall()) + list(getattr(ds, "file_meta", pydicom.Dataset()).iterall()):
        if elem.VR not in ("SQ", "OB", "OW", "UN", "OF", "OD", "OL", "OV"):
            s.update(v.strip() for v in _values(elem.value))
    return s


def run_and_check(src: Path, tmp: Path) -> dict:
    key_file = _key(tmp)
    out = tmp / "out"
    summary = deidentify_path(src, out, key_file=key_file, allow_burned_in=True)
    pseudo = Pseudonymizer(crypto.load_key(key_file))
    written = summary.by_status("written")
    dicoms = [f for f in written if f.kind == "dicom"]
    assert dicoms, "no DICOM written"
    assert not summary.by_status("failed"), [f.reason for f in summary.by_status("failed")]
    checked = 0
    links: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    names: set[str] = set()
    for f in dicoms:
        orig = pydicom.dcmread(f.source, force=True)
        new = pydicom.dcmread(f.output)
        checked += check_profile(orig, new, pseudo)
        # top-level bookkeeping the profile requires
        assert new.PatientIdentityRemoved == "YES"
        assert new.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert new.file_meta.ImplementationVersionName.startswith("MEDWB")
        assert "SourceApplicationEntityTitle" not in new.file_meta
        assert new.preamble == b"\x00" * 128
        if "SOPInstanceUID" in orig and orig.SOPInstanceUID:
            assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
        # pixel data byte-identical (compressed or not)
        if "PixelData" in orig:
            assert new.PixelData == orig.PixelData, f"pixel bytes changed: {f.output}"
        leaked = _identifying_strings(orig) & _all_strings(new)
        assert not leaked, f"original identifying values in {f.output}: {leaked}"
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            if str(orig.get(kw, "") or ""):
                links[kw][str(orig.get(kw))].add(str(new.get(kw)))
        names.add(str(orig.get("PatientName", "")))
    # UIDs stay linked: one new UID per original study / series / frame of reference, and distinct ones stay distinct
    for kw, m in links.items():
        assert all(len(v) == 1 for v in m.values()), f"{kw} not consistent across files"
        assert len({next(iter(v)) for v in m.values()}) == len(m), f"{kw} mapping not one-to-one"
    return {"summary": summary, "checked": checked, "key_file": key_file, "out": out, "names": names,
            "links": links}


def test_profile_table_is_the_standard_table():
    """620 rows of PS3.15 (2024b) E.1-1; every exact tag's name equals pydicom's data dictionary name."""
    assert len(PROFILE) == 620
    tags = [r.tag for r in PROFILE]
    assert len(set(tags)) == len(tags)
    assert {r.action for r in PROFILE} <= set(RESOLVED_ACTION)
    norm = lambda s: re.sub(r"[^a-z0-9]", "", s.lower())  # noqa: E731
    for r in PROFILE:
        if "x" in r.tag:
            continue
        t = int(r.tag.replace(",", ""), 16)
        assert dictionary_has_tag(t), r
        assert norm(dictionary_description(t)) == norm(r.name), r
    by_tag = {r.tag: r.action for r in PROFILE}
    assert by_tag["0010,0010"] == "Z" and by_tag["0010,0020"] == "Z/D" and by_tag["0020,000D"] == "U"
    assert by_tag["0008,0080"] == "X/Z/D" and by_tag["0008,1140"] == "X/Z/U*" and by_tag["0010,1040"] == "X"
    assert rule_for(0x50001234).name == "Curve Data" and rule_for(0x60003000).name == "Overlay Data"


# sha256 of json.dumps([(tag, action, name), ...]) of the table as it was a Python string inside deid.py, computed
# once before it moved to medwb/privacy/ps315_annex_e.csv: the data file must give exactly the same rules.
_OLD_TABLE_SHA256 = "76183f2938c326bd35df3201d07402e43ab1ddab9d92d6e7e77bc611db449045"


def test_profile_data_file_equals_the_old_in_code_table():
    import hashlib
    import json
    from importlib import resources

    from medwb.privacy.deid import PROFILE_FILE, load_profile

    rows = [(r.tag, r.action, r.name) for r in load_profile()]
    assert rows == [(r.tag, r.action, r.name) for r in PROFILE]
    assert len(rows) == 620
    assert rows[0] == ("0000,1000", "X", "Affected SOP Instance UID")
    assert rows[100] == ("0010,21C0", "X", "Pregnancy Status")
    assert rows[-1] == ("FFFC,FFFC", "X", "Data Set Trailing Padding")
    assert hashlib.sha256(json.dumps(rows).encode()).hexdigest() == _OLD_TABLE_SHA256
    assert resources.files("medwb.privacy").joinpath(PROFILE_FILE).is_file()  # shipped as package data


def test_every_sample_dicom_follows_the_whole_profile(samples, tmp_path):
    res = run_and_check(samples / "dicom", tmp_path)
    s = res["summary"]
    assert res["checked"] > 1000  # attribute occurrences checked against the table
    assert len([f for f in s.files if f.kind == "dicom" and f.status == "written"]) == 59
    # non-DICOM files are reported and skipped, the DICOMDIR is not copied
    skipped = {f.source.name: f.reason for f in s.by_status("skipped")}
    assert "LICENSE.md" in skipped and "DICOMDIR" in skipped
    # the plain CSV summary lists every input, without input paths or patient names
    csv_text = (res["out"] / SUMMARY_CSV_NAME).read_text()
    assert len(csv_text.strip().splitlines()) == len(s.files) + 1
    assert "dicomdirtests" not in csv_text and "Doe^" not in csv_text
    assert "written" in s.to_text() and "excluded" in s.to_text()


def test_identity_map_is_only_written_encrypted(samples, tmp_path):
    res = run_and_check(samples / "dicom" / "pydicom" / "dicomdirtests", tmp_path)
    out = res["out"]
    secrets = {n for n in res["names"] if n} | {"98892001", "98892003", "77654033"}
    assert "Doe^Peter" in secrets
    for p in out.rglob("*"):
        if p.is_file():
            blob = p.read_bytes()
            for s in secrets:
                assert s.encode() not in blob, f"{s!r} leaked into {p}"
            # every identifying value (names, patient IDs used as folder names) is absent from the output path;
            # a 4-digit fragment such as "9889" is not checked: it occurs by chance in the random 2.25.<int> UIDs
            rel = str(p.relative_to(out))
            assert "Doe" not in rel and not any(s in rel for s in secrets), rel
    key = crypto.load_key(res["key_file"])
    idmap = json.loads(crypto.read_encrypted(out / IDENTITY_MAP_NAME, key))
    assert {v["PatientName"] for v in idmap["patients"].values()} >= {"Doe^Peter", "Doe^Archibald"}
    with pytest.raises(CryptoError):
        crypto.read_encrypted(out / IDENTITY_MAP_NAME, crypto.load_key(_key(tmp_path, "other.key")))


def test_same_key_same_uids_other_key_other_uids(samples, tmp_path):
    src = samples / "dicom" / "pydicom" / "dicomdirtests" / "98892003"
    k1, k2 = _key(tmp_path, "a.key"), _key(tmp_path, "b.key")

    def uids(out: Path, key: Path) -> set[str]:
        deidentify_path(src, out, key_file=key)
        return {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.rglob("*.dcm")}

    a1, a2, b = uids(tmp_path / "a1", k1), uids(tmp_path / "a2", k1), uids(tmp_path / "b", k2)
    assert a1 == a2 and len(a1) == 17
    assert not a1 & b and len(b) == 17


def test_burned_in_annotation_is_flagged_and_excluded(samples, tmp_path):
    key = _key(tmp_path)
    src = tmp_path / "in"
    src.mkdir()
    ds = pydicom.dcmread(samples / "dicom" / "pydicom" / "MR_small.dcm")
    ds.BurnedInAnnotation = "YES"
    ds.save_as(src / "yes.dcm")
    ds = pydicom.dcmread(samples / "dicom" / "pydicom" / "MR_small.dcm")
    ds.Modality = "US"  # prone modality, attribute absent -> unknown -> flagged
    ds.save_as(src / "us_unknown.dcm")
    ds.BurnedInAnnotation = "NO"
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".1"
    ds.save_as(src / "us_no.dcm")
    shutil.copy(samples / "dicom" / "pydicom" / "JPEG2000.dcm", src / "sc.dcm")  # Secondary Capture

    s = deidentify_path(src, tmp_path / "out", key_file=key)
    status = {f.source.name: f.status for f in s.files}
    assert status == {"yes.dcm": "excluded", "us_unknown.dcm": "excluded", "sc.dcm": "excluded", "us_no.dcm": "written"}
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1
    s = deidentify_path(src, tmp_path / "out2", key_file=key, allow_burned_in=True)
    assert all(f.status == "written" for f in s.files)
    assert sum("burned-in flagged" in f.reason for f in s.files) == 3


def test_dates_shift_per_patient(samples, tmp_path):
    key = _key(tmp_path)
    src = samples / "dicom" / "pydicom" / "dicomdirtests"
    s = deidentify_path(src, tmp_path / "out", key_file=key, shift_dates=True)
    pseudo = Pseudonymizer(crypto.load_key(key))
    per_patient: dict[str, set[int]] = defaultdict(set)
    from datetime import date

    for f in s.by_status("written"):
        o, n = pydicom.dcmread(f.source), pydicom.dcmread(f.output)
        assert n.LongitudinalTemporalInformationModified == "MODIFIED"
        assert {c.CodeValue for c in n.DeidentificationMethodCodeSequence} == {"113100", "113107"}
        assert not n.get("PatientBirthDate")
        if o.get("StudyDate"):
            d0 = date(int(o.StudyDate[:4]), int(o.StudyDate[4:6]), int(o.StudyDate[6:8]))
            d1 = date(int(n.StudyDate[:4]), int(n.StudyDate[4:6]), int(n.StudyDate[6:8]))
            per_patient[str(n.PatientID)].add((d0 - d1).days)
            assert (d0 - d1).days == pseudo.date_offset_days(str(o.PatientID))
    assert len(per_patient) >= 2 and all(len(v) == 1 for v in per_patient.values())


def test_safe_listed_private_attribute_is_kept(samples, tmp_path):
    src = samples / "dicom" / "pydicom" / "CT_small.dcm"
    ds = pydicom.dcmread(src)
    creators = {(e.tag.group, e.tag.element): str(e.value) for e in ds if e.tag.is_private and e.tag.element < 0x100}
    data = [e.tag for e in ds if e.tag.is_private and e.tag.element >= 0x1000]
    tag = data[0]
    creator = creators[(tag.group, tag.element >> 8)]
    s = deidentify_path(src, tmp_path / "out", key_file=_key(tmp_path),
                        safe_private=((creator, tag.group, tag.element & 0xFF),))
    new = pydicom.dcmread(s.files[0].output)
    kept = [e.tag for e in new if e.tag.is_private]
    assert tag in kept and new[tag].value == ds[tag].value
    assert len([t for t in kept if t.element >= 0x1000]) == 1
    assert "113111" in {c.CodeValue for c in new.DeidentificationMethodCodeSequence}


def test_unparsable_file_is_a_named_error(samples, tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes((samples / "dicom" / "pydicom" / "MR_small.dcm").read_bytes()[:700])
    with pytest.raises(DataError, match="broken.dcm"):
        deidentify_path(bad, tmp_path / "out", key_file=_key(tmp_path))
    assert not list((tmp_path / "out").rglob("*.dcm"))
    # in a folder run it is reported and skipped, the good file is still written
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(bad, folder / "broken.dcm")
    shutil.copy(samples / "dicom" / "pydicom" / "MR_small.dcm", folder / "ok.dcm")
    s = deidentify_path(folder, tmp_path / "out2", key_file=tmp_path / "site.key")
    st = {f.source.name: f.status for f in s.files}
    assert st["ok.dcm"] == "written" and st["broken.dcm"] in ("skipped", "failed")
    assert "broken.dcm" in s.to_text()


def test_output_inside_input_and_missing_key_are_refused(samples, tmp_path, monkeypatch):
    src = tmp_path / "in"
    shutil.copytree(samples / "dicom" / "pydicom" / "dicomdirtests" / "98892001", src)
    with pytest.raises(DataError, match="inside"):
        deidentify_path(src, src / "out", key_file=_key(tmp_path))
    monkeypatch.delenv("MEDWB_KEY", raising=False)
    with pytest.raises(CryptoError, match="MEDWB_KEY"):
        deidentify_path(src, tmp_path / "out")


def test_nifti_header_and_name_scrubbed_voxels_identical(samples, tmp_path):
    img = nib.load(samples / "dicom" / "ct_series_seg.nii.gz")
    hdr = img.header.copy()
    hdr["descrip"] = b"Doe^John 1970-01-01"
    hdr["aux_file"] = b"JD-ID-12345"
    hdr["intent_name"] = b"JohnDoe"
    hdr["db_name"] = b"StMarysHosp"
    new = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, hdr)
    new.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"patient John Doe, MRN 12345"))
    src = tmp_path / "in" / "Doe_John"
    src.mkdir(parents=True)
    nib.save(new, src / "Doe_John_ct.nii.gz")
    s = deidentify_path(tmp_path / "in", tmp_path / "out", key_file=_key(tmp_path))
    f = s.files[0]
    assert f.status == "written" and "Doe" not in str(f.output) and "John" not in str(f.output)
    out = nib.load(f.output)
    for fld in ("aux_file", "intent_name", "db_name"):
        assert bytes(out.header[fld].item()).strip(b"\x00") == b""
    assert b"Doe" not in gzip.decompress(f.output.read_bytes())
    assert len(out.header.extensions) == 0
    a, b = np.asarray(nib.load(src / "Doe_John_ct.nii.gz").dataobj), np.asarray(out.dataobj)
    assert a.dtype == b.dtype and np.array_equal(a, b)
    np.testing.assert_array_equal(out.affine, new.affine)
    raw_in = gzip.decompress((src / "Doe_John_ct.nii.gz").read_bytes())
    raw_out = gzip.decompress(f.output.read_bytes())
    assert raw_in[nib.load(src / "Doe_John_ct.nii.gz").dataobj.offset:] == raw_out[352:]  # voxel bytes verbatim


def test_msd_images_and_labels_keep_their_pairing(samples, tmp_path):
    src = samples / "segmentation_3d" / "hippocampus"
    s = deidentify_path(src, tmp_path / "out", key_file=_key(tmp_path))
    imgs = {p.name for p in (tmp_path / "out" / "nifti" / "imagesTr").iterdir()}
    labs = {p.name for p in (tmp_path / "out" / "nifti" / "labelsTr").iterdir()}
    assert imgs == labs and len(imgs) == len(list((src / "imagesTr").glob("*.nii.gz")))
    assert not any("hippocampus" in n for n in imgs)
    assert {f.source.name for f in s.by_status("skipped")} >= {"dataset.json"}


def test_cli_deid(samples, tmp_path, capsys):
    key = _key(tmp_path)
    rc = main(["deid", str(samples / "dicom" / "pydicom" / "MR_small.dcm"), str(tmp_path / "o"),
               "--key-file", str(key), "--shift-dates"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "1 written" in out and "Doe" not in out
    rc = main(["deid", str(samples / "dicom" / "pydicom" / "README_pydicom_test_files.txt"), str(tmp_path / "o2"),
               "--key-file", str(key)])
    assert rc == 2 and "README_pydicom_test_files.txt" in capsys.readouterr().err


def test_shared_dicom_follows_the_whole_profile(shared_data, tmp_path):
    """Every DICOM in the full shared set (../shared/data/dicom), same checks as the samples."""
    res = run_and_check(shared_data / "dicom", tmp_path)
    assert res["checked"] > 500
