"""De-identification of DICOM and NIfTI files: DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

Why it is built this way:

* The profile's Table E.1-1 is kept as *data* (``ps315_annex_e.csv``, read by :func:`load_profile`; DICOM
  2024b edition, 620 rows: tag, action code, attribute name), so the code that applies it is short and the test
  can check every row.
* The table applies at every nesting level (a sequence item is a data set like any other).
* Action codes with alternatives are resolved the conformance-preserving way without ever keeping the original
  value: ``Z/D``, ``X/Z``, ``X/Z/D`` -> Z (emptied), ``X/D`` -> D (dummy), ``X/Z/U*`` -> the sequence is kept and
  cleaned recursively, so the UIDs it references are replaced consistently (derived images stay linked).
* UIDs (action U) are replaced by ``2.25.<int>`` where the integer comes from an HMAC-SHA256 of the original UID
  under the site key: the same input and key always give the same UID (series and studies stay linked across runs
  and files); a different key gives unrelated UIDs; without the key they cannot be reversed or recomputed.
* Patient's Name / Patient ID get a keyed pseudonym; the identity <-> pseudonym map (and which input file became
  which output file) is written only encrypted (``identity_map.enc``, see :mod:`medwb.privacy.crypto`).
* Output file names never reuse input paths (folder names such as ``98892003`` are often patient IDs):
  ``OUT/<pseudonym>/<new SeriesInstanceUID>/<new SOPInstanceUID>.dcm``.
* Pixel Data is never touched (byte-identical, compressed or not); Overlay Data / Curve Data / Icon Image Sequence
  are removed because the profile says X for them (they can carry burned-in text).
* Burned-in annotation: ``BurnedInAnnotation = YES``, or the attribute missing for a modality / SOP class prone to
  burned-in text (:data:`BURNED_IN_PRONE_MODALITIES`, Secondary Capture) -> the file is flagged and left out unless
  ``allow_burned_in``. medwb does not clean pixels (no Clean Pixel Data Option).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import hmac
import io
import json
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.datadict import keyword_for_tag
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

import medwb
from medwb.atomic import atomic_write, ensure_output_dir
from medwb.errors import DataError
from medwb.privacy import crypto

# --------------------------------------------------------------------------------------------------------------------
# DICOM PS3.15 (2024b) Table E.1-1, column "Basic Prof.": tag, action code, attribute name - kept as data in
# ps315_annex_e.csv beside this module (package data), read once at import by load_profile().
#   D  replace with a non-zero length dummy value        Z  replace with a zero length value
#   X  remove                                            U  replace with a consistent non-zero length UID
#   Z/D, X/Z, X/D, X/Z/D, X/Z/U*: see the module docstring for how medwb resolves them.
# "xx" in a tag is a repeating group (curves 50xx, overlays 60xx). Private attributes (odd groups) are X unless
# safe-listed (Retain Safe Private Option, off by default).
PROFILE_FILE = "ps315_annex_e.csv"


@dataclass(frozen=True)
class ProfileRule:
    """One row of Table E.1-1."""

    tag: str  # "GGGG,EEEE" as in the standard ("xx" for repeating groups)
    action: str  # action code exactly as in the table
    name: str

    @property
    def keyword(self) -> str:
        if "x" in self.tag:
            return ""
        return keyword_for_tag(int(self.tag.replace(",", ""), 16)) or ""


def load_profile() -> list[ProfileRule]:
    """The rows of Table E.1-1 from the package data file :data:`PROFILE_FILE` (columns tag, action, name), in
    table order. A data file, not code, so the table can be checked and updated against the standard row by row."""
    text = resources.files("medwb.privacy").joinpath(PROFILE_FILE).read_text(encoding="utf-8")
    return [ProfileRule(tag=r["tag"], action=r["action"], name=r["name"]) for r in csv.DictReader(io.StringIO(text))]


PROFILE: list[ProfileRule] = load_profile()
_EXACT: dict[int, ProfileRule] = {int(r.tag.replace(",", ""), 16): r for r in PROFILE if "x" not in r.tag}
_REPEATING: list[ProfileRule] = [r for r in PROFILE if "x" in r.tag]

#: how a table action code is applied by medwb (conformance-preserving, never keeps the value)
RESOLVED_ACTION: dict[str, str] = {
    "D": "D", "Z": "Z", "X": "X", "U": "U",
    "Z/D": "Z", "X/Z": "Z", "X/D": "D", "X/Z/D": "Z", "X/Z/U*": "U*",
}

#: modalities that often carry burned-in text when Burned In Annotation (0028,0301) is absent
BURNED_IN_PRONE_MODALITIES = frozenset({"US", "IVUS", "SC", "OT", "XA", "RF", "ES", "XC", "GM", "DOC", "ECG"})
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its .1-.4 multi-frame variants

PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
_NEVER_SHIFTED = {0x00100030, 0x00100032}  # Patient's Birth Date / Time: Z and X in every case
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY = {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y", "IS": "0", "DS": "0"}
_NUMERIC_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"}
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_TEXT_VRS = {"AE", "CS", "SH", "LO", "LT", "ST", "UT", "UC", "UR", "PN"}
MEDWB_IMPLEMENTATION_UID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "medwb-deidentifier").int)
NIFTI_SAFE_DIRS = frozenset({"imagesTr", "labelsTr", "imagesTs", "labelsTs", "images", "labels", "masks"})
IDENTITY_MAP_NAME = "identity_map.enc"
SUMMARY_CSV_NAME = "deid_summary.csv"


def rule_for(tag: int) -> ProfileRule | None:
    """The profile row that governs ``tag`` (exact tags first, then the 50xx / 60xx repeating groups)."""
    r = _EXACT.get(int(tag))
    if r is not None:
        return r
    group, elem = int(tag) >> 16, int(tag) & 0xFFFF
    for rr in _REPEATING:
        g, e = rr.tag.split(",")
        if (group & 0xFF00) != int(g[:2], 16) << 8:
            continue
        if e == "xxxx" or int(e, 16) == elem:
            return rr
    return None


# --------------------------------------------------------------------------------------------------------------------
class Pseudonymizer:
    """Keyed, deterministic replacements: UIDs, patient pseudonyms, per-patient date offsets."""

    def __init__(self, key: crypto.Key) -> None:
        self._k = key.derive("deid-hmac")

    def _mac(self, kind: str, value: str) -> bytes:
        return hmac.new(self._k, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """``2.25.<128-bit int>`` (PS3.5 B.2, UUID-derived) from HMAC(key, original)."""
        if not original:
            return original
        u = uuid.UUID(bytes=self._mac("uid", str(original).strip())[:16], version=4)
        return f"2.25.{u.int}"

    def patient(self, identity: str) -> str:
        return "MWB-" + self._mac("patient", identity).hex()[:10].upper()

    def date_offset_days(self, identity: str) -> int:
        """Days to shift this patient's dates back: 1..3650, fixed per patient and key."""
        return 1 + int.from_bytes(self._mac("dateshift", identity)[:4], "big") % 3650

    def ref(self, kind: str, value: str) -> str:
        return f"{kind}-{self._mac(kind, value).hex()[:12]}"


@dataclass
class FileRecord:
    """What happened to one input file. ``source`` is kept in memory (console) and in the encrypted map only."""

    source: Path
    kind: str  # "dicom" | "nifti" | "other"
    status: str  # "written" | "excluded" | "skipped" | "failed"
    output: Path | None = None
    reason: str = ""
    changes: Counter = field(default_factory=Counter)  # (tag "GGGG,EEEE", name, applied action) -> count
    source_ref: str = ""

    def counts(self) -> Counter:
        c: Counter = Counter()
        for (_, _, act), n in self.changes.items():
            c[act] += n
        return c


@dataclass
class DeidSummary:
    """Per-file account of a de-identification run (``to_text()`` for the console, ``to_csv()`` for the record)."""

    input: Path
    output: Path
    files: list[FileRecord]
    map_path: Path | None
    key_source: str
    key_created: bool
    shift_dates: bool
    allow_burned_in: bool

    def by_status(self, status: str) -> list[FileRecord]:
        return [f for f in self.files if f.status == status]

    def to_text(self) -> str:
        n = Counter(f.status for f in self.files)
        lines = [
            f"medwb deid: {self.input} -> {self.output}",
            f"  profile: DICOM PS3.15 E.1 Basic Application Level Confidentiality ({len(PROFILE)} table rows)"
            + ("; dates shifted per patient" if self.shift_dates else ""),
            f"  files: {n['written']} written, {n['excluded']} excluded (burned-in), "
            f"{n['skipped']} skipped, {n['failed']} failed",
            f"  identity map (encrypted): {self.map_path}" if self.map_path else "  identity map: none written",
            f"  key: {self.key_source}" + (" (NEW key file created: keep it safe, it is needed to re-identify)"
                                           if self.key_created else ""),
        ]
        for f in self.files:
            if f.status == "written":
                c = f.counts()
                what = ", ".join(f"{k} {c[k]}" for k in sorted(c))
                rel = f.output.relative_to(self.output) if f.output else ""
                lines.append(f"  written  {rel}  [{what}]" + (f"  ({f.reason})" if f.reason else ""))
            else:
                lines.append(f"  {f.status:<8} {f.source}: {f.reason}")
        return "\n".join(lines)

    def to_csv(self, path: str | Path) -> Path:
        """One row per input file. Input paths are NOT written (they can identify); ``source_ref`` is resolved
        through the encrypted identity map."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["source_ref", "kind", "status", "output", "reason", "removed_X", "emptied_Z", "dummy_D",
                    "uid_U", "date_shifted", "pseudonym", "private_removed", "attributes"])
        for f in self.files:
            c = f.counts()
            attrs = ";".join(f"{t} {nm}:{a}" for (t, nm, a) in sorted(f.changes))
            out = str(f.output.relative_to(self.output)) if f.output else ""
            w.writerow([f.source_ref, f.kind, f.status, out, f.reason, c["X"], c["Z"], c["D"], c["U"],
                        c["shifted"], c["pseudonym"], c["private-X"], attrs])
        return atomic_write(Path(path), lambda fh: fh.write(buf.getvalue().encode()))


# --------------------------------------------------------------------------------------------------------------------
@dataclass
class _Context:
    pseudo: Pseudonymizer
    patient_pseudonym: str
    shift_days: int | None
    safe_private: frozenset[tuple[str, int, int]]
    changes: Counter


def _record(ctx: _Context, tag: int, action: str) -> None:
    rule = rule_for(tag)
    name = rule.name if rule else (keyword_for_tag(tag) or "private")
    ctx.changes[(f"{int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X}", name, action)] += 1


def _shift_value(value: Any, vr: str, days: int) -> str | None:
    """Shift a DA / DT value back by ``days``; None when it does not parse (the caller then applies the profile)."""
    s = str(value).strip()
    if len(s) < 8 or not s[:8].isdigit():
        return None
    try:
        d = date(int(s[:4]), int(s[4:6]), int(s[6:8])) - timedelta(days=days)
    except ValueError:
        return None
    return d.strftime("%Y%m%d") + (s[8:] if vr == "DT" else "")


def _dummy(elem: DataElement, ctx: _Context) -> Any:
    vr = elem.VR
    if vr == "SQ":
        return Sequence([Dataset()])
    if vr == "UI":
        return _map_uids(elem.value, ctx)
    if vr in _DUMMY:
        return _DUMMY[vr]
    if vr in _TEXT_VRS:
        return _DUMMY_TEXT
    if vr in _NUMERIC_VRS:
        return 0
    if vr in _BINARY_VRS:
        return b"\x00\x00"
    return _DUMMY_TEXT


def _map_uids(value: Any, ctx: _Context) -> Any:
    if value is None or value == "":
        return value
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [ctx.pseudo.uid(str(v)) for v in value]
    return ctx.pseudo.uid(str(value))


def _private_creators(ds: Dataset) -> dict[tuple[int, int], str]:
    out = {}
    for tag in ds.keys():
        if tag.is_private and 0x0010 <= tag.element <= 0x00FF:
            out[(tag.group, tag.element)] = str(ds[tag].value).strip()
    return out


def _keep_private(tag: BaseTag, creators: dict[tuple[int, int], str], safe: frozenset[tuple[str, int, int]]) -> bool:
    if not safe:
        return False
    if 0x0010 <= tag.element <= 0x00FF:  # a creator: kept when any of its block is safe-listed
        creator = creators.get((tag.group, tag.element), "")
        return any(c == creator and g == tag.group for (c, g, _) in safe)
    creator = creators.get((tag.group, tag.element >> 8), "")
    return (creator, tag.group, tag.element & 0xFF) in safe


def _clean(ds: Dataset, ctx: _Context) -> None:
    """Apply the profile to one data set and, recursively, to every sequence item in it."""
    creators = _private_creators(ds)
    for tag in list(ds.keys()):
        elem = ds[tag]  # converts raw elements; malformed values raise here (reported by the caller)
        if tag.element == 0x0000 and tag.group > 0x0002:  # group lengths would be wrong after editing
            del ds[tag]
            continue
        if tag.is_private:
            if _keep_private(tag, creators, ctx.safe_private):
                if elem.VR == "SQ":
                    for item in elem.value:
                        _clean(item, ctx)
                _record(ctx, tag, "private-K")
            else:
                del ds[tag]
                _record(ctx, tag, "private-X")
            continue
        rule = rule_for(tag)
        if tag in (PATIENT_NAME, PATIENT_ID):
            elem.value = ctx.patient_pseudonym
            _record(ctx, tag, "pseudonym")
            continue
        if ctx.shift_days is not None and elem.VR in ("DA", "DT") and tag not in _NEVER_SHIFTED:
            # Retain Longitudinal Temporal Information with Modified Dates Option: every date moves by the
            # patient's offset (table or not, so that no true date is left beside shifted ones)
            vals = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
            shifted = [_shift_value(v, elem.VR, ctx.shift_days) for v in vals if v not in (None, "")]
            if shifted and all(s is not None for s in shifted):
                elem.value = shifted if len(shifted) > 1 else shifted[0]
                _record(ctx, tag, "shifted")
                continue
        if rule is None:
            if elem.VR == "SQ" and elem.value:
                for item in elem.value:
                    _clean(item, ctx)
            continue
        if ctx.shift_days is not None and elem.VR == "TM" and tag not in _NEVER_SHIFTED:
            _record(ctx, tag, "K-time")  # whole-day shift: time of day is kept (Modified Dates Option)
            continue
        action = RESOLVED_ACTION[rule.action]
        if action == "X":
            del ds[tag]
        elif action == "Z":
            elem.value = Sequence([]) if elem.VR == "SQ" else elem.empty_value
        elif action == "D":
            elem.value = _dummy(elem, ctx)
        elif action == "U":
            if elem.VR == "SQ":  # not in the table today; kept for safety if a U row ever names a sequence
                for item in elem.value:
                    _clean(item, ctx)
            else:
                elem.value = _map_uids(elem.value, ctx)
        elif action == "U*":
            if elem.VR == "SQ":
                for item in elem.value:
                    _clean(item, ctx)
            else:
                elem.value = _map_uids(elem.value, ctx)
        _record(ctx, tag, action)


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def burned_in_reason(ds: Dataset) -> str:
    """Why this data set may show identifying text in its pixels ("" when no reason is known)."""
    bia = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if bia == "YES":
        return "Burned In Annotation = YES"
    if bia == "NO":
        return ""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop = str(ds.get("SOPClassUID", "") or "")
    if modality in BURNED_IN_PRONE_MODALITIES:
        return f"Burned In Annotation missing for modality {modality} (prone to burned-in text)"
    if sop.startswith(_SECONDARY_CAPTURE):
        return "Burned In Annotation missing for a Secondary Capture image (prone to burned-in text)"
    return ""


def _check_complete(ds: Dataset, path: Path) -> None:
    """pydicom silently accepts a file cut short (the last value is just shorter): refuse it, because a truncated
    input would otherwise become a plausible-looking but incomplete de-identified copy."""
    from pydicom.dataelem import RawDataElement

    for tag, raw in ds._dict.items():  # raw elements still carry the declared length
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF and raw.value is not None:
            if len(raw.value) < raw.length:
                raise DataError(path, f"file is truncated inside {Tag(tag)} ({len(raw.value)} of {raw.length} bytes)",
                                "re-copy or re-export the complete file")
    if "PixelData" in ds and len(ds.PixelData or b"") % 2:
        # DICOM values have even length; pydicom would pad it on writing, so the copy would not be byte-identical
        raise DataError(path, "pixel data has an odd length (corrupt or truncated file)",
                        "re-copy or re-export the complete file")
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if "PixelData" in ds and (ts is None or not ts.is_compressed) and "Rows" in ds and "Columns" in ds:
        try:
            need = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                    * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("BitsAllocated", 8) or 8) + 7) // 8
        except (TypeError, ValueError):
            return
        have = len(ds.PixelData or b"")
        if have < need:
            raise DataError(path, f"pixel data is truncated ({have} of {need} bytes)",
                            "re-copy or re-export the complete file")


def read_dicom(path: Path) -> Dataset:
    """Read a DICOM file with pydicom (also preamble-less ones); anything else is a :class:`DataError`."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(path)
            except InvalidDicomError:
                ds = pydicom.dcmread(path, force=True)
                if "SOPClassUID" not in ds:
                    raise DataError(path, "not a DICOM file (no DICM prefix and no SOP Class UID)",
                                    "pass DICOM or NIfTI files; other files are skipped in a folder run") from None
            _check_complete(ds, path)
            for _ in ds.iterall():  # decode every element now, so corruption surfaces here and not half-way
                pass
        for w in caught:  # pydicom only warns when a sequence or encapsulated pixel data runs past the file end
            if "End of file reached" in str(w.message):
                raise DataError(path, f"file is truncated ({w.message})", "re-copy or re-export the complete file")
    except DataError:
        raise
    except Exception as e:  # pydicom raises many types on corrupt input; name the file and the cause
        raise DataError(path, f"pydicom cannot parse this file ({type(e).__name__}: {str(e)[:160]})",
                        "check the file is complete DICOM; re-export it from the PACS") from None
    return ds


def deidentify_dataset(ds: Dataset, pseudo: Pseudonymizer, *, shift_dates: bool = False,
                       safe_private: frozenset[tuple[str, int, int]] = frozenset()) -> tuple[Counter, dict]:
    """De-identify ``ds`` in place. Returns (changes, identity record for the encrypted map)."""
    pid = str(ds.get("PatientID", "") or "").strip()
    pname = str(ds.get("PatientName", "") or "").strip()
    identity = pid or pname or f"study:{ds.get('StudyInstanceUID', '')}"
    pseudonym = pseudo.patient(identity)
    days = pseudo.date_offset_days(identity) if shift_dates else None
    ident = {"pseudonym": pseudonym, "PatientID": pid, "PatientName": pname,
             "PatientBirthDate": str(ds.get("PatientBirthDate", "") or ""), "date_shift_days": days}
    ctx = _Context(pseudo, pseudonym, days, safe_private, Counter())
    old_meta = getattr(ds, "file_meta", None)
    meta_sop = str(old_meta.get("MediaStorageSOPInstanceUID", "") or "") if old_meta is not None else ""
    _clean(ds, ctx)
    ds.PatientIdentityRemoved = "YES"
    method = f"medwb {medwb.__version__} PS3.15 E.1 basic profile" + ("+dates shifted" if shift_dates else "")
    ds.DeidentificationMethod = method[:64]
    codes = [_code_item("113100", "Basic Application Confidentiality Profile")]
    if shift_dates:
        codes.append(_code_item("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
    if any(a == "private-K" for (_, _, a) in ctx.changes):
        codes.append(_code_item("113111", "Retain Safe Private Option"))
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if shift_dates else "REMOVED"
    # File Meta Information: describe the de-identifier (PS3.15 E.1.1 step 7), drop anything else that can leak
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        implicit = True
        enc = getattr(ds, "original_encoding", None)
        if enc and enc[0] is not None:
            implicit = bool(enc[0])
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta = meta
    for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
               "PrivateInformationCreatorUID", "PrivateInformation"):
        if kw in meta:
            delattr(meta, kw)
    sop = str(ds.get("SOPInstanceUID", "") or "") or (pseudo.uid(meta_sop) if meta_sop else "")
    if sop:  # Media Storage SOP Instance UID is a U row: same keyed mapping as the SOP Instance UID
        meta.MediaStorageSOPInstanceUID = sop
    elif "MediaStorageSOPInstanceUID" in meta:
        del meta.MediaStorageSOPInstanceUID
    if str(ds.get("SOPClassUID", "") or ""):
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.ImplementationClassUID = MEDWB_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDWB_{medwb.__version__}"[:16]
    ds.preamble = b"\x00" * 128
    return ctx.changes, ident


# --------------------------------------------------------------------------------------------------------------------
def _nifti_name(path: Path) -> tuple[str, str]:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)], ext
    return path.stem, path.suffix


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def deidentify_nifti_bytes(raw: bytes, path: Path) -> tuple[bytes, list[str]]:
    """Scrub descrip / aux_file / intent_name / db_name, drop header extensions; voxel bytes copied verbatim."""
    import nibabel as nib

    from medwb.data.nifti import check_geometry

    try:
        hdr_size = int.from_bytes(raw[:4], "little")
        if hdr_size not in (348, 540):
            hdr_size = int.from_bytes(raw[:4], "big")
        klass = {348: nib.Nifti1Header, 540: nib.Nifti2Header}.get(hdr_size)
        if klass is None:
            raise ValueError("header size is neither 348 (NIfTI-1) nor 540 (NIfTI-2)")
        hdr = klass.from_fileobj(io.BytesIO(raw), check=True)
        vox_offset = int(hdr["vox_offset"])
        if vox_offset < hdr_size or vox_offset > len(raw):
            raise ValueError(f"vox_offset {vox_offset} outside the file")
        data = raw[vox_offset:]
        expected = int(hdr.get_data_dtype().itemsize) * int(__import__("numpy").prod(hdr.get_data_shape()))
        if len(data) < expected:
            raise ValueError(f"truncated voxel data ({len(data)} of {expected} bytes)")
        check_geometry(hdr, path)  # a NaN affine is refused, not copied on
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"nibabel cannot parse this NIfTI file ({type(e).__name__}: {str(e)[:160]})",
                        "check the file is a complete .nii/.nii.gz") from None
    changed = []
    for fld in ("descrip", "aux_file", "intent_name", "db_name"):
        if fld in hdr and bytes(hdr[fld].item() if hasattr(hdr[fld], "item") else hdr[fld]).strip(b"\x00 "):
            changed.append(fld)
        if fld in hdr:
            hdr[fld] = b""
    hdr["descrip"] = b"de-identified by medwb"
    if raw[hdr_size:hdr_size + 4][:1] not in (b"", b"\x00") or vox_offset > hdr_size + 4:
        changed.append("extensions")
    new_offset = hdr_size + 4
    if hdr_size == 348:
        new_offset = max(new_offset, 352)
    hdr["vox_offset"] = new_offset
    block = hdr.binaryblock + b"\x00\x00\x00\x00"
    block += b"\x00" * (new_offset - len(block))
    return block + data, changed


def _safe_rel_dirs(rel: Path, pseudo: Pseudonymizer) -> Path:
    parts = [p if p in NIFTI_SAFE_DIRS else pseudo.ref("dir", p) for p in rel.parent.parts]
    return Path(*parts) if parts else Path()


# --------------------------------------------------------------------------------------------------------------------
def _load_map(map_path: Path, key: crypto.Key) -> dict:
    if map_path.exists():
        return json.loads(crypto.read_encrypted(map_path, key).decode())
    return {"format": "medwb-identity-map-1", "patients": {}, "sources": {}, "nifti": {}}


def _list_inputs(inp: Path) -> list[Path]:
    if inp.is_file():
        return [inp]
    return sorted(p for p in inp.rglob("*") if p.is_file() and not p.is_symlink())


def deidentify_path(
    input: str | Path,
    output: str | Path,
    *,
    key_file: str | Path | None = None,
    shift_dates: bool = False,
    allow_burned_in: bool = False,
    safe_private: tuple[tuple[str, int, int], ...] = (),
) -> DeidSummary:
    """De-identify a DICOM/NIfTI file or every such file under a folder into the folder ``output``.

    ``key_file`` (or ``$MEDWB_KEY``) keys the UID hash, pseudonyms, date offsets and the encrypted identity map;
    a ``key_file`` path that does not exist yet is created. ``safe_private`` lists private attributes to keep as
    (private creator, group, element low byte). A single unparsable input file raises :class:`DataError`; in a
    folder run such files are reported in the summary and skipped. Each output file is written atomically.
    """
    inp, out = Path(input), Path(output)
    if not inp.exists():
        raise DataError(inp, "input does not exist", "pass a DICOM/NIfTI file or a folder of them")
    out_res, inp_res = out.resolve(), inp.resolve()
    if out_res == inp_res or (inp.is_dir() and inp_res in out_res.parents):
        raise DataError(out, "the output folder is the input or inside it",
                        "choose an output folder outside the input folder")
    if out.exists() and not out.is_dir():
        raise DataError(out, "output exists and is not a folder", "pass a folder path for the output")
    crypto.refuse_key_inside(key_file, out, "output folder")
    ensure_output_dir(out)  # a read-only output is named before a key is created or an input read
    key, created = crypto.load_or_create_key(key_file)
    pseudo = Pseudonymizer(key)
    safe = frozenset((str(c), int(g), int(e)) for c, g, e in safe_private)
    map_path = out / IDENTITY_MAP_NAME
    out.mkdir(parents=True, exist_ok=True)
    idmap = _load_map(map_path, key)  # a wrong key fails here, before any file is written
    files = _list_inputs(inp)
    single = inp.is_file()
    records: list[FileRecord] = []
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):  # type: ignore[no-redef]
            return x
    for path in tqdm(files, desc="deid", unit="file", disable=len(files) < 50):
        rel = path.relative_to(inp) if not single else Path(path.name)
        rec = FileRecord(source=path, kind="other", status="failed", source_ref=pseudo.ref("src", str(path)))
        records.append(rec)
        idmap["sources"][rec.source_ref] = str(path)
        try:
            if _is_nifti(path):
                rec.kind = "nifti"
                _do_nifti(path, rel, out, pseudo, rec, idmap)
            else:
                _do_dicom(path, out, pseudo, rec, idmap, shift_dates, allow_burned_in, safe)
        except DataError as e:
            if single:
                raise
            # the reason omits the path: the CSV lands beside de-identified data and paths can identify
            rec.status, rec.reason = ("skipped" if rec.kind == "other" else "failed"), f"{e.problem}. Fix: {e.fix}"
    crypto.write_encrypted(map_path, json.dumps(idmap, indent=1, sort_keys=True).encode(), key)
    summary = DeidSummary(inp, out, records, map_path, key.source, created, shift_dates, allow_burned_in)
    summary.to_csv(out / SUMMARY_CSV_NAME)
    return summary


def _do_dicom(path: Path, out: Path, pseudo: Pseudonymizer, rec: FileRecord, idmap: dict,
              shift_dates: bool, allow_burned_in: bool, safe: frozenset) -> None:
    ds = read_dicom(path)
    rec.kind = "dicom"
    if "DirectoryRecordSequence" in ds:
        rec.status = "skipped"
        rec.reason = "DICOMDIR (it lists identifying paths and names): rebuild one from the de-identified files"
        return
    reason = burned_in_reason(ds)
    if reason and not allow_burned_in:
        rec.status, rec.reason = "excluded", reason + "; pass --allow-burned-in to include it"
        return
    try:
        changes, ident = deidentify_dataset(ds, pseudo, shift_dates=shift_dates, safe_private=safe)
        series = str(ds.get("SeriesInstanceUID", "") or "") or "unknown-series"
        meta = ds.file_meta
        sop = str(meta.get("MediaStorageSOPInstanceUID", "") or "") or pseudo.ref("sop", str(path))
        dst = out / ident["pseudonym"] / series / f"{sop}.dcm"
        # a conformant Part 10 file when the data set allows it (some anonymised exports carry empty SOP UIDs)
        full = all(str(meta.get(k, "") or "") for k in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"))
        atomic_write(dst, lambda f: ds.save_as(f, enforce_file_format=full))
    except DataError:
        raise
    except Exception as e:  # a value pydicom cannot re-encode: the file is reported, nothing partial is left
        raise DataError(path, f"cannot write the de-identified copy ({type(e).__name__}: {str(e)[:160]})",
                        "check the file with `medwb check`; fix or drop the offending attribute") from None
    rec.status, rec.output, rec.changes = "written", dst, changes
    if reason:
        rec.reason = f"burned-in flagged and kept on request: {reason}"
    pat = idmap["patients"].setdefault(ident.pop("pseudonym"), {})
    pat.update({k: v for k, v in ident.items() if v not in (None, "")})
    idmap["sources"][rec.source_ref] = {"input": str(path), "output": str(dst.relative_to(out))}


def _do_nifti(path: Path, rel: Path, out: Path, pseudo: Pseudonymizer, rec: FileRecord, idmap: dict) -> None:
    raw_file = path.read_bytes()
    gz = path.name.endswith(".gz")
    try:
        raw = gzip.decompress(raw_file) if gz else raw_file
    except (OSError, EOFError, ValueError) as e:
        raise DataError(path, f"corrupt gzip stream ({e})", "re-export or re-download the .nii.gz") from None
    new, changed = deidentify_nifti_bytes(raw, path)
    stem, ext = _nifti_name(path)
    pseudo_name = pseudo.ref("NII", stem)
    dst = out / "nifti" / _safe_rel_dirs(rel, pseudo) / f"{pseudo_name}{ext}"
    payload = gzip.compress(new, mtime=0) if gz else new
    atomic_write(dst, lambda f: f.write(payload))
    rec.status, rec.output = "written", dst
    for fld in changed:
        rec.changes[(f"nifti:{fld}", fld, "Z")] += 1
    rec.changes[("nifti:filename", "file name", "pseudonym")] += 1
    idmap["nifti"][pseudo_name] = stem
    idmap["sources"][rec.source_ref] = {"input": str(path), "output": str(dst.relative_to(out))}
