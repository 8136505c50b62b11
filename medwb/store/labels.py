"""THE label writer: validation, provenance rules, label history, label CSV import/export.

Every label enters the study through :func:`add_labels` (``Study.add_label`` / ``add_labels`` /
``import_labels_csv`` / ``import_masks`` all end here), so the provenance rules live in one place:

* ``source``: ``human`` = a person chose the label (also when accepting a pre-label), ``auto`` = the model's
  pre-label accepted without a person, ``corrected`` = a person changed the model's pre-label.
* A new label *supersedes* the same annotator's earlier label on the case and any ``auto`` label; other people's
  labels stay current (agreement is computed from them). Rows are never updated except the ``superseded`` flag.
* Every write adds a ``label_history`` row (who, when, from -> to) in the same transaction as the label.
* A label is taken back (a reader's undo) with :func:`retract_label`: it is marked superseded, what it had
  superseded is current again, and the history row says ``retracted``. Nothing is deleted.
* A mask given as an array (``mask=``) is saved by the store under ``masks/`` with the one naming rule of
  :meth:`medwb.store.layout.StudyLayout.label_mask`, inside the label's transaction (the file is on disk before
  the row commits, and removed again when the transaction fails).
"""
from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medwb.errors import DataError, MedwbError, StoreError
from medwb.store import files
from medwb.store.artifacts import register_artifact
from medwb.store.masks import check_mask_array, save_npy
from medwb.store.values import now

if TYPE_CHECKING:
    from medwb.privacy.crypto import Key
    from medwb.store.study import Study

SOURCES = ("human", "auto", "corrected")
#: ``label_history.to_source`` of a label taken back (:func:`retract_label`); never a label's own source
RETRACTED = "retracted"


@dataclass
class LabelRow:
    """One validated label, ready to insert: either ``mask_path`` (a file already on disk, stored relative to the
    study) or ``mask`` (an int64 array the writer saves), or neither for a class label."""

    case_id: str
    value: int | None
    mask_path: str | None
    mask: np.ndarray | None
    source: str
    annotator: str
    seconds: float | None
    round: int | None
    model_version: str | None
    note: str


def validate_label(
    study: Study,
    case_id: Any,
    *,
    value: Any = None,
    mask_path: str | Path | None = None,
    mask: np.ndarray | None = None,
    source: str = "human",
    annotator: str = "",
    seconds: float | None = None,
    round: int | None = None,
    model_version: str | None = None,
    note: str = "",
) -> LabelRow:
    """Check one label against the study (case, class, source, mask, model); returns the row to insert."""
    case_id = str(case_id)
    if source not in SOURCES:
        raise StoreError(f"label source {source!r} is not one of {SOURCES}. Fix: 'human' (a person chose it, "
                         "also when accepting a pre-label), 'auto' (pre-label accepted without a person), "
                         "'corrected' (a person changed the pre-label)")
    if not annotator or not str(annotator).strip():
        raise StoreError("annotator is empty. Fix: pass who made the label (a person's name, or 'model:<version>' for auto labels)")
    study.check_case(case_id)
    if mask is not None and mask_path is not None:
        raise StoreError(f"label for {case_id!r} has both mask= and mask_path=. Fix: pass the array as mask= (the "
                         "store saves it) or a file already on disk as mask_path=, not both")
    if value is None and mask_path is None and mask is None:
        raise StoreError(f"label for {case_id!r} has neither value nor mask_path. Fix: pass value= (class), mask= "
                         "(mask array) or mask_path= (mask file)")
    if study.task == "classification" and value is None:
        raise StoreError(f"{case_id!r}: a classification study needs value=. Fix: pass the class index")
    if value is not None:
        value = study.check_value(value)
    if mask_path is not None and not Path(mask_path).is_file():
        raise DataError(mask_path, "mask file not found", "pass the mask array as mask=, or save it first and pass its path")
    arr = None if mask is None else check_mask_array(study, case_id, mask)
    if seconds is not None and (not np.isfinite(seconds) or seconds < 0):
        raise StoreError(f"seconds={seconds!r} must be a non-negative number. Fix: pass the time spent, or None")
    if model_version is not None:
        if study.conn.execute("SELECT 1 FROM models WHERE version = ?", (model_version,)).fetchone() is None:
            raise StoreError(f"model version {model_version!r} is not registered. Fix: register it with study.add_model(...) first")
    return LabelRow(case_id, value, study.rel(mask_path), arr, source, str(annotator),
                    None if seconds is None else float(seconds), None if round is None else int(round),
                    model_version, str(note or ""))


def _next_label_id(study: Study) -> int:
    """The id AUTOINCREMENT would give the next label (inside the write transaction, so no one else takes it)."""
    row = study.conn.execute("SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'labels'), 0), "
                             "COALESCE((SELECT MAX(id) FROM labels), 0))").fetchone()
    return int(row[0]) + 1


def _insert(study: Study, r: LabelRow, written: list[Path]) -> int:
    """Insert one validated label inside the caller's transaction: mask file, row, supersede, history row."""
    c = study.conn
    ts = now()
    rel_mask, lid = r.mask_path, None
    if r.mask is not None:
        lid = _next_label_id(study)
        path = study.layout.label_mask(r.case_id, r.annotator, r.source, r.round, lid)
        save_npy(path, r.mask)
        written.append(path)
        rel_mask = study.rel(path)
    prev = c.execute("SELECT id, value, mask_path, source FROM labels WHERE case_id = ? AND superseded = 0 ORDER BY id DESC LIMIT 1",
                     (r.case_id,)).fetchone()
    cur = c.execute(
        "INSERT INTO labels (id, case_id, value, mask_path, source, annotator, seconds, created_at, round, model_version, note) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (lid, r.case_id, r.value, rel_mask, r.source, r.annotator, r.seconds, ts, r.round, r.model_version, r.note),
    )
    lid = int(cur.lastrowid)
    c.execute("UPDATE labels SET superseded = 1 WHERE case_id = ? AND id != ? AND superseded = 0 AND (annotator = ? OR source = 'auto')",
              (r.case_id, lid, r.annotator))
    if r.source != "auto":  # a person labelled the case: its open review-queue entries are answered
        c.execute("UPDATE review_queue SET resolved_at = ? WHERE case_id = ? AND resolved_at IS NULL", (ts, r.case_id))
    c.execute(
        "INSERT INTO label_history (case_id, label_id, changed_by, changed_at, from_label_id, from_value, to_value, from_mask, "
        "to_mask, from_source, to_source, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (r.case_id, lid, r.annotator, ts, prev[0] if prev else None, prev[1] if prev else None, r.value,
         prev[2] if prev else None, rel_mask, prev[3] if prev else None, r.source, r.note),
    )
    return lid


def write_labels(study: Study, rows: list[LabelRow]) -> list[int]:
    """Write validated rows in ONE transaction: all of them or none (mask files of a failed write are removed)."""
    written: list[Path] = []
    try:
        with study.transaction():
            return [_insert(study, r, written) for r in rows]
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


def add_label(
    study: Study,
    case_id: str,
    *,
    value: int | None = None,
    mask: np.ndarray | None = None,
    mask_path: str | Path | None = None,
    source: str = "human",
    annotator: str,
    seconds: float | None = None,
    round: int | None = None,
    model_version: str | None = None,
    note: str = "",
) -> int:
    """Record one label decision (one transaction, with its label_history row). Returns the label id.

    A segmentation label: pass the array as ``mask=`` (the store saves it under ``masks/``, one file per label), or
    ``mask_path=`` for a mask already on disk (e.g. edited in 3D Slicer). Supersedes this annotator's earlier label
    on the case and any ``auto`` label; other annotators' labels stay (agreement is computed from them)."""
    row = validate_label(study, case_id, value=value, mask=mask, mask_path=mask_path, source=source,
                         annotator=annotator, seconds=seconds, round=round, model_version=model_version, note=note)
    return write_labels(study, [row])[0]


def add_labels(study: Study, records: Iterable[Mapping[str, Any]]) -> list[int]:
    """Many labels at once (keys as in :func:`add_label`, ``mask`` included), all validated first, then written in
    ONE transaction: all of them or none (a simulated oracle labelling a batch pays one disk sync, not one each)."""
    rows = [validate_label(study, r["case_id"], value=r.get("value"), mask=r.get("mask"), mask_path=r.get("mask_path"),
                           source=r.get("source", "human"), annotator=r.get("annotator", ""), seconds=r.get("seconds"),
                           round=r.get("round"), model_version=r.get("model_version"), note=r.get("note", ""))
            for r in records]
    return write_labels(study, rows)


def adjudicate(study: Study, case_id: str, *, value: int | None = None, mask: np.ndarray | None = None,
               by: str, note: str = "", seconds: float | None = None) -> int:
    """A senior reader's decision on a case the readers disagree on: written as their label (source ``human``,
    note "adjudicated: ..."), with an ``adjudications`` row in the same transaction, so it is *the* current label
    of the case (:func:`labels`) and the readers' own labels stay for agreement. Returns the label id."""
    case_id = str(case_id)
    rnd = study.conn.execute("SELECT MAX(round) FROM labels WHERE case_id = ? AND superseded = 0",
                             (case_id,)).fetchone()[0]
    row = validate_label(study, case_id, value=value, mask=mask, mask_path=None, source="human", annotator=by,
                         seconds=seconds, round=rnd, model_version=None,
                         note=f"adjudicated{': ' + note if note else ''}")
    written: list[Path] = []
    try:
        with study.transaction() as c:
            lid = _insert(study, row, written)
            c.execute("INSERT INTO adjudications (case_id, label_id, adjudicator, created_at) VALUES (?,?,?,?)",
                      (case_id, lid, row.annotator, now()))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return lid


def retract_label(study: Study, label_id: int, *, by: str, reason: str = "") -> int | None:
    """Take back one current label (a reader's undo): the row stays - rows are never deleted - but is marked
    superseded, so training, ``labels()`` and the pool no longer see it, and a ``label_history`` row records who
    took it back (``to_source`` ``retracted``). What the label had superseded when it was written (this
    annotator's earlier label on the case, or an ``auto`` label no later label would have superseded) is current
    again, so an undo restores the case as it was. Returns the restored label's id, or None. One transaction."""
    if not by or not str(by).strip():
        raise StoreError("retract_label needs who takes the label back. Fix: pass by='<your name>'")
    lid = int(label_id)
    with study.transaction() as c:
        me = c.execute("SELECT id, case_id, value, mask_path, source, annotator, superseded FROM labels WHERE id = ?",
                       (lid,)).fetchone()
        if me is None:
            raise StoreError(f"label {lid} does not exist. Fix: pass a label_id from study.labels()")
        if me[6]:
            raise StoreError(f"label {lid} of case {me[1]!r} is not current (superseded or retracted already). Fix: "
                             "retract a current label (study.labels(per_annotator=True))")
        gone = {r[0] for r in c.execute("SELECT label_id FROM label_history WHERE case_id = ? AND to_source = ?",
                                        (me[1], RETRACTED))}
        live = [r for r in c.execute("SELECT id, value, mask_path, source, annotator, superseded FROM labels "
                                     "WHERE case_id = ? ORDER BY id", (me[1],)) if r[0] not in gone]
        back = [r for r in live if r[0] < lid and r[5] and (r[4] == me[5] or r[3] == "auto")
                and [x[0] for x in live if x[0] > r[0] and (r[3] == "auto" or x[4] == r[4])] == [lid]]
        c.execute("UPDATE labels SET superseded = 1 WHERE id = ?", (lid,))
        c.executemany("UPDATE labels SET superseded = 0 WHERE id = ?", [(r[0],) for r in back])
        to = back[-1] if back else None
        c.execute(
            "INSERT INTO label_history (case_id, label_id, changed_by, changed_at, from_label_id, from_value, to_value, "
            "from_mask, to_mask, from_source, to_source, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (me[1], lid, str(by), now(), lid, me[2], to and to[1], me[3], to and to[2], me[4], RETRACTED, str(reason or "")),
        )
    return None if to is None else int(to[0])


def labels(study: Study, latest: bool = True, *, per_annotator: bool = False) -> pd.DataFrame:
    """Label rows. ``latest=True``: the current label of each labelled case (one row per case: its adjudicated
    label when a senior reader decided it (:func:`adjudicate`), else its most recent non-superseded label). ``per_annotator=True``: the current label of each (case, annotator) - use for
    agreement. ``latest=False``: every row ever written, superseded ones included (``superseded`` column)."""
    base = ("SELECT id AS label_id, case_id, value, mask_path, source, annotator, seconds, created_at, round, "
            "model_version, note, superseded FROM labels")
    if not latest:
        df = study.query(base + " ORDER BY id")
    elif per_annotator:
        df = study.query(base + " WHERE superseded = 0 ORDER BY id")
    else:
        df = study.query(base + " WHERE id IN (SELECT COALESCE((SELECT MAX(a.label_id) FROM adjudications a JOIN labels "
                         "l2 ON l2.id = a.label_id WHERE a.case_id = labels.case_id AND l2.superseded = 0), MAX(id)) "
                         "FROM labels WHERE superseded = 0 GROUP BY case_id) ORDER BY id")
    df["value"] = pd.array(df["value"], dtype="Int64")
    df["round"] = pd.array(df["round"], dtype="Int64")
    df["seconds"] = df["seconds"].astype(float)
    df["superseded"] = df["superseded"].astype(bool)
    df["class_name"] = [study.classes.get(int(v)) if v is not pd.NA else None for v in df["value"]]
    df["mask_path"] = [None if p is None else str(study.path(p)) for p in df["mask_path"]]
    return df


def label_history(study: Study) -> pd.DataFrame:
    """The audit log: every label change - who, when, from -> to (value, mask, source) and why."""
    df = study.query("SELECT * FROM label_history ORDER BY id")
    for col in ("from_value", "to_value", "from_label_id"):
        df[col] = pd.array(df[col], dtype="Int64")
    return df


def export_labels_csv(study: Study, path: str | Path, latest: bool = True, *, encrypt_with: Key | None = None,
                      plaintext: bool = False) -> Path:
    """Write the labels (current ones by default) with their provenance to CSV (atomically). With
    ``encrypt_with`` (a ``medwb.privacy.crypto.Key``) the file is AES-GCM encrypted; the plaintext never
    touches the disk. An encrypted study encrypts it with its own key unless ``plaintext=True`` (the user's
    choice to let the labels leave the protected zone; inside the study folder it is encrypted regardless)."""
    data = labels(study, latest=latest).to_csv(index=False).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_bytes(path, data, key=encrypt_with or (None if plaintext else study.key))
    register_artifact(study, path, "export")  # outside the study: purge must find it
    return path


def import_labels_csv(study: Study, path: str | Path, annotator: str, source: str = "human", *,
                      decrypt_with: Key | None = None) -> int:
    """Import class labels from a CSV with columns ``case_id`` and ``value`` (class index) or ``class_name``;
    optional ``seconds``. All rows are validated first and written in one transaction (all or nothing).
    ``decrypt_with``: the ``medwb.privacy.crypto.Key`` of an encrypted CSV (a wrong key is a CryptoError)."""
    path = Path(path)
    if source not in SOURCES:
        raise StoreError(f"label source {source!r} is not one of {SOURCES}. Fix: pick one of them")
    if not path.is_file():
        raise DataError(path, "label CSV not found", "check the path")
    try:
        if decrypt_with is not None:
            from medwb.privacy.crypto import read_encrypted

            df = pd.read_csv(io.BytesIO(read_encrypted(path, decrypt_with)), dtype=str, keep_default_na=False)
        else:  # an encrypted study's own export reads back with the study's key
            df = pd.read_csv(io.BytesIO(files.read_bytes(path, key=study.key)), dtype=str, keep_default_na=False)
    except MedwbError:
        raise
    except Exception as e:
        raise DataError(path, f"cannot read as CSV ({type(e).__name__}: {e})", "save it as comma-separated text with a header row") from e
    if "case_id" not in df.columns or not ({"value", "class_name", "label"} & set(df.columns)):
        raise DataError(path, f"columns {list(df.columns)} lack case_id and value/class_name",
                        "give the CSV a header 'case_id,value' (class index) or 'case_id,class_name'")
    known = {r[0] for r in study.conn.execute("SELECT case_id FROM cases")}
    by_name = {v: k for k, v in study.classes.items()}
    todo = []
    for i, rec in enumerate(df.to_dict("records"), start=2):
        cid = rec["case_id"].strip()
        if cid not in known:
            raise DataError(path, f"line {i}: unknown case id {cid!r}", "use the study's case ids (study.cases())")
        raw = (rec.get("value") or rec.get("label") or "").strip()
        if raw == "" and rec.get("class_name", "").strip():
            name = rec["class_name"].strip()
            if name not in by_name:
                raise DataError(path, f"line {i}: class name {name!r} is not one of {list(by_name)}", "fix the class name")
            v = by_name[name]
        else:
            try:
                v = int(float(raw))
                if float(raw) != v:
                    raise ValueError
            except (ValueError, OverflowError):
                raise DataError(path, f"line {i}: value {raw!r} is not a class index", f"use one of {sorted(study.classes)}") from None
            if v not in study.classes:
                raise DataError(path, f"line {i}: value {v} is not one of the classes {study.classes}", f"use one of {sorted(study.classes)}")
        sec = rec.get("seconds", "").strip()
        try:
            todo.append((cid, v, float(sec) if sec else None))
            if sec and not (0 <= float(sec) < float("inf")):
                raise ValueError
        except ValueError:
            raise DataError(path, f"line {i}: seconds {sec!r} is not a number", "leave it empty or give seconds") from None
    add_labels(study, ({"case_id": cid, "value": v, "source": source, "annotator": annotator, "seconds": sec,
                        "note": f"imported from {path.name}"} for cid, v, sec in todo))
    return len(todo)
