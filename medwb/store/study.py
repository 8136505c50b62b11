"""The study store's front door: :class:`Study` opens or creates a study folder and offers every store operation.

A study is one folder (names in :mod:`medwb.store.layout`) holding an SQLite database with full label provenance
(:mod:`medwb.store.schema`). ``Study`` itself only opens, creates and closes; each concept has its own module and
the methods below are one-line delegates to it:

    cases.py    the cohort table as registered          labels.py   THE label writer, provenance, label CSVs
    masks.py    mask files, NIfTI export/import         rounds.py   rounds and registered models
    predicted_masks.py  the model's predicted masks of a segmentation round's proposed cases (readers start there)
    class_evidence.py   the model's class probabilities (MC mean, spread) and saliency map of proposed cases
    review.py   verdicts and the review queue           pool.py     the carved train/val/test splits
    readers.py  several readers: proposals, leases, double reads, adjudication
    structure.py  the structure model's actions: clusters named (pre-labels), split, merged
    artifacts.py  files the study produced outside its folder (reports, exports, simulations), for purge

Provenance rules (docs/store.md): every label row says who (annotator), how (source: ``human`` = a person
chose the label, including accepting a pre-label; ``auto`` = the model's pre-label accepted without a person;
``corrected`` = a person changed the model's pre-label), when, how long it took, in which round and from which
model. Labels are never updated in place: a new label *supersedes* the same annotator's earlier label on the
case (and any ``auto`` label), and every change is written to ``label_history`` (from -> to) in the same
transaction. Two human annotators on one case are both kept.

Encryption (docs/store.md): with a key (``key=...``, ``$MEDWB_KEY_FILE`` or ``$MEDWB_KEY``) a new study is
encrypted: its database is SQLCipher, the files it writes are AES-GCM (:mod:`medwb.store.files`), and file names
carry keyed pseudonyms instead of case ids (:mod:`medwb.store.cipher`).
"""
from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medwb.errors import StoreError
from medwb.store import artifacts as artifact_store
from medwb.store import cases as case_store
from medwb.store import class_evidence as evidence_store
from medwb.store import cipher
from medwb.store import labels as label_store
from medwb.store import readers as reader_store
from medwb.store import masks as mask_store
from medwb.store import pool as pool_store
from medwb.store import predicted_masks as predicted_mask_store
from medwb.store import review as review_store
from medwb.store import rounds as round_store
from medwb.store import schema
from medwb.store import structure as structure_store
from medwb.store.layout import StudyLayout, is_study
from medwb.store.values import now

if TYPE_CHECKING:
    from medwb.privacy.crypto import Key

TASKS = ("classification", "segmentation")


class Study:
    """A study folder and its provenance database. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, folder: str | Path, conn: sqlite3.Connection, key: Key | None = None) -> None:
        self.folder = Path(folder)
        #: the study's key when it is encrypted (None: a plain study); never printed
        self.key = key
        self.layout = cipher.keyed_layout(self.folder, key)
        #: the store's connection; the store's modules use it, everything else calls the methods below
        self.conn = conn
        row = conn.execute(
            "SELECT name, dataset_path, task, classes, created_at, medwb_version FROM study WHERE id = 1"
        ).fetchone()
        self.name, self.dataset_path, self.task, classes, self.created_at, self.medwb_version = row
        self.classes: dict[int, str] = {int(k): v for k, v in json.loads(classes).items()}

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        folder: str | Path,
        *,
        dataset_path: str | Path,
        task: str,
        classes: Mapping[int, str] | Sequence[str],
        name: str | None = None,
        key: Key | str | Path | bool | None = None,
    ) -> Study:
        """Make a new study folder. Refuses a folder that already holds a study (open it instead).
        ``key``: a ``medwb.privacy.crypto.Key`` or a key file's path encrypts the study; None encrypts it when a
        key is configured (``$MEDWB_KEY_FILE`` / ``$MEDWB_KEY``); False makes a plain study regardless."""
        import medwb
        from medwb.privacy.crypto import refuse_key_inside

        layout = StudyLayout(folder)
        folder, db = layout.folder, layout.db
        if db.exists() and not schema.half_created(db, cipher.key_or_none(layout)):
            raise StoreError(f"{db}: a study already exists here. Fix: use Study.open({str(folder)!r}) or pick a new folder")
        if task not in TASKS:
            raise StoreError(f"task {task!r} is not one of {TASKS}. Fix: pass task='classification' or 'segmentation'")
        if not isinstance(classes, Mapping):
            classes = dict(enumerate(classes))
        try:
            cls_map = {int(k): str(v) for k, v in classes.items()}
        except (TypeError, ValueError) as e:
            raise StoreError(f"classes {classes!r} must map integer label values to names. Fix: e.g. {{0: 'normal', 1: 'pneumonia'}}") from e
        if not cls_map:
            raise StoreError("classes is empty. Fix: pass the dataset's classes, e.g. ds.classes")
        k = cipher.key_for_new_study(key)
        if k is not None:
            refuse_key_inside(k, folder, "study folder")
        layout.make_folders()
        conn = schema.create_database(layout, (name or folder.name, str(dataset_path), task,
                                               json.dumps({str(c): v for c, v in cls_map.items()}), now(),
                                               medwb.__version__), k)
        cipher.remember(layout, k)
        return cls(folder, conn, k)

    @classmethod
    def open(cls, folder: str | Path, *, key: Key | None = None) -> Study:
        """Open an existing study, upgrading its schema through MIGRATIONS if it is older. An encrypted study
        needs its key: ``key``, or the configured one (``$MEDWB_KEY_FILE`` / ``$MEDWB_KEY``); a missing or wrong
        key is a CryptoError naming the study and the fix."""
        layout = StudyLayout(folder)
        k = cipher.study_key(layout, key)
        conn = schema.open_database(layout, k)
        layout.make_folders()
        cipher.remember(layout, k)
        return cls(layout.folder, conn, k)

    @classmethod
    def open_or_create(cls, folder: str | Path, *, dataset_path: str | Path, task: str,
                       classes: Mapping[int, str] | Sequence[str], name: str | None = None,
                       key: Key | str | Path | bool | None = None) -> Study:
        """Reopen the study in ``folder`` (a resumed session), or create it for this dataset (when another process
        creates it at the same moment, open theirs). ``key``: as in :meth:`create` (a Key also opens)."""
        opening_key = key if not isinstance(key, (str, Path, bool)) else None
        if is_study(folder):
            return cls.open(folder, key=opening_key)
        try:
            return cls.create(folder, dataset_path=dataset_path, task=task, classes=classes, name=name, key=key)
        except StoreError:
            lay = StudyLayout(folder)
            if is_study(folder) and not schema.half_created(lay.db, cipher.key_or_none(lay)):
                return cls.open(folder, key=opening_key)
            raise

    @staticmethod
    def exists(folder: str | Path) -> bool:
        """Whether ``folder`` holds a study database (use before choosing between open and create)."""
        return is_study(folder)

    def close(self) -> None:
        """Close the database connection (a checkpoint folds the WAL into the main file)."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except cipher.DB_ERRORS:
            pass
        self.conn.close()

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        enc = ", encrypted" if self.encrypted else ""
        return f"Study({str(self.folder)!r}, task={self.task!r}, classes={self.classes}{enc})"

    @property
    def encrypted(self) -> bool:
        """Whether the study is encrypted (SQLCipher database, AES-GCM files, pseudonymous file names)."""
        return self.key is not None

    # ------------------------------------------------------------------ paths and transactions
    @property
    def db_path(self) -> Path:
        return self.layout.db

    def checkpoint_path(self, round: int) -> Path:
        """Where the model of round ``round`` is saved: ``models/round_NNN.pt``."""
        return self.layout.checkpoint(round)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT): all of it is committed, or none of it."""
        with schema.transaction(self.conn) as c:
            yield c

    def query(self, sql: str, params: Sequence[object] = ()) -> pd.DataFrame:
        """Rows of a read query as a DataFrame (for the store's modules)."""
        return schema.query_df(self.conn, sql, params)

    def rel(self, path: str | Path | None) -> str | None:
        """How a path is stored: relative to the study folder when inside it, so a moved study still resolves it."""
        if path is None:
            return None
        p = Path(path)
        try:
            return p.resolve().relative_to(self.folder.resolve()).as_posix()
        except ValueError:
            return str(p.resolve())

    def path(self, stored: str | None) -> Path | None:
        """Absolute path of a path stored in the database."""
        if stored is None or (isinstance(stored, float) and math.isnan(stored)):
            return None
        p = Path(stored)
        return p if p.is_absolute() else self.folder / p

    # ------------------------------------------------------------------ one-line delegates, one module per concept
    # cases (medwb/store/cases.py)
    add_cases = case_store.add_cases
    cases = case_store.cases
    case_ids = case_store.case_ids
    check_case = case_store.check_case
    check_value = case_store.check_value

    # labels: THE label writer (medwb/store/labels.py)
    add_label = label_store.add_label
    add_labels = label_store.add_labels
    labels = label_store.labels
    label_history = label_store.label_history
    retract_label = label_store.retract_label
    export_labels_csv = label_store.export_labels_csv
    import_labels_csv = label_store.import_labels_csv

    # masks (medwb/store/masks.py)
    save_mask = mask_store.save_mask
    export_masks_nifti = mask_store.export_masks_nifti
    import_masks = mask_store.import_masks

    # the model's predicted masks of proposed segmentation cases (medwb/store/predicted_masks.py)
    save_predicted_mask = predicted_mask_store.save_predicted_mask
    predicted_masks = predicted_mask_store.predicted_masks
    predicted_mask = predicted_mask_store.predicted_mask
    predicted_uncertainty = predicted_mask_store.predicted_uncertainty

    # the model's class probabilities and saliency maps of proposed classification cases (class_evidence.py)
    save_class_evidence = evidence_store.save_class_evidence
    class_evidence = evidence_store.class_evidence
    case_class_evidence = evidence_store.case_class_evidence

    # rounds and models (medwb/store/rounds.py)
    start_round = round_store.start_round
    finish_round = round_store.finish_round
    save_round_autolabel = round_store.save_round_autolabel
    current_round = round_store.current_round
    open_round = round_store.open_round
    last_finished_round = round_store.last_finished_round
    rounds = round_store.rounds
    add_model = round_store.add_model
    models = round_store.models
    metrics_curve = round_store.metrics_curve

    # XAI verdicts and the review queue (medwb/store/review.py)
    record_verdict = review_store.record_verdict
    verdicts = review_store.verdicts
    flag_for_review = review_store.flag_for_review
    review_queue = review_store.review_queue
    resolve_review = review_store.resolve_review

    # proposals and per-case leases: several readers on one study (medwb/store/readers.py)
    save_proposals = reader_store.save_proposals
    proposals = reader_store.proposals
    claim_case = reader_store.claim_case
    holds_lease = reader_store.holds_lease
    leased_proposal = reader_store.leased_proposal
    renew_lease = reader_store.renew_lease
    release_case = reader_store.release_case
    retake_case = reader_store.retake_case
    set_reads = reader_store.set_reads
    case_status = reader_store.case_status
    disagreements = reader_store.disagreements
    agreed_labels = reader_store.agreed_labels
    check_round_decided = reader_store.check_round_decided
    adjudicate = label_store.adjudicate

    # the structure model's naming / split / merge actions (medwb/store/structure.py)
    record_structure_action = structure_store.record_structure_action
    structure_actions = structure_store.structure_actions
    structure_names = structure_store.structure_names
    structure_labels = structure_store.structure_labels

    # files produced outside the study folder, so purge finds them (medwb/store/artifacts.py)
    register_artifact = artifact_store.register_artifact
    register_artifacts = artifact_store.register_artifacts
    artifacts = artifact_store.artifacts

    # carved splits (medwb/store/pool.py)
    save_splits = pool_store.save_splits
    splits = pool_store.load_splits
    labelled_ids = pool_store.labelled_ids
