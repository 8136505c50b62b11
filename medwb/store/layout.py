"""The study folder's layout: THE one place that names the files and folders of a study.

Everything else (the store's modules, purge, crypto, the loop, reports) asks this module for a path instead of
spelling ``"study.sqlite"`` or ``"models"`` itself, so a rename happens here once and purge / encryption can never
miss a folder the store writes to. ``tests/store/test_layout.py`` checks that no other module spells the
database name.

    study.sqlite        the database (+ -wal / -shm / -journal sidecars); only medwb.store writes it
    encryption.json     present only in an encrypted study: names the ciphers and holds a key check (never the
                        key); its presence is how every reader knows the study is encrypted (medwb.store.cipher)
    encrypting.json     present only while ``medwb encrypt`` converts a plain study (medwb.store.convert): its key
                        check; the study is not opened until a re-run of the conversion finishes and removes it
    .study.sqlite.encrypting  the SQLCipher copy a conversion builds before it replaces study.sqlite
    .study.sqlite.plain       the plain database's second name during the swap, overwritten and removed after it
    .study.sqlite.creating-<pid>-<hex>   a database being built by Study.create (renamed into place when whole)
    models/             checkpoints (round_NNN.pt from the loop) registered with add_model
    cache/              re-computable data (image caches), safe to purge
    cache/pretrain/     self-supervised pretraining results <key>.pt (+ <key>.partial.pt while it runs)
    cache/regions/      the structure model's region maps <config key>/<case id hash>.npy (medwb.al.regions)
    exports/            CSV / NIfTI exports for other tools
    maps/               explanation and uncertainty maps
    maps/saliency/      the model's Grad-CAM of a classification round's proposed cases (shown beside the image on
                        the readers' pages; medwb.store.class_evidence)
    maps/uncertainty/   the model's entropy map of a segmentation round's proposed cases, kept with its predicted
                        mask (shown beside the case, cuts the editor's edge bands; medwb.store.predicted_masks)
    masks/              label masks written by the store (add_label(mask=...), save_mask, import_masks)
    masks/prelabels/    the model's predicted masks of a segmentation round's proposed cases (the readers'
                        editor starts from them; medwb.store.predicted_masks)
    purge_audit.jsonl   the purge audit log (the only file a purge keeps)
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path

DB_NAME = "study.sqlite"
#: files SQLite keeps beside the database (write-ahead log, shared memory, rollback journal)
DB_SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
#: name prefix of the temporary database a running Study.create builds (followed by ``<pid>-<hex>``)
CREATING_PREFIX = f".{DB_NAME}.creating-"
MODELS, CACHE, EXPORTS, MAPS, MASKS = "models", "cache", "exports", "maps", "masks"
#: every sub-folder a study has (created by Study.create / Study.open), in creation order
SUBFOLDERS = (MODELS, CACHE, EXPORTS, MAPS, MASKS)
PURGE_AUDIT = "purge_audit.jsonl"
#: the plaintext marker of an encrypted study (cipher names and a key check, never the key)
ENCRYPTION_MARKER = "encryption.json"
#: the journal of a plain study's conversion into an encrypted one, present only while it runs (medwb.store.convert)
ENCRYPTING_JOURNAL = "encrypting.json"
#: the file beside exported NIfTI masks that maps file names back to case ids (read by import_masks)
NIFTI_MANIFEST = "manifest.csv"
MASK_SUFFIX = ".npy"
CHECKPOINT_PATTERN = "round_{round:03d}.pt"
PRETRAIN = "pretrain"  # sub-folder of cache/ holding pretraining results
REGIONS = "regions"  # sub-folder of cache/ holding the structure model's region maps
PRELABELS = "prelabels"  # sub-folder of masks/ holding the model's predicted masks of proposed cases
EXPLAIN = "explain"  # sub-folder of exports/ holding `medwb explain` outputs (index.csv, maps, overlays)
SALIENCY = "saliency"  # sub-folder of maps/ holding the model's saliency maps of proposed classification cases
UNCERTAINTY = "uncertainty"  # sub-folder of maps/ holding the entropy maps of proposed segmentation cases


def safe_name(case_id: str) -> str:
    """A file-name-safe form of a case id (exports, masks)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(case_id)).strip("._") or "case"


def nifti_mask_name(case_id: str) -> str:
    """File name of a case's mask in a NIfTI export folder (``<safe case id>.nii.gz``)."""
    return f"{safe_name(case_id)}.nii.gz"


def map_stem(case_id: str) -> str:
    """The stem of a case's file in a plain explanation folder (``medwb explain``): every character that is not
    alphanumeric or ``-_.`` replaced by ``_`` (an encrypted study uses :meth:`StudyLayout.case_name`)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(case_id))


def keyed_name(name_key: bytes, text: str, prefix: str) -> str:
    """A pseudonym for ``text`` in a file name: ``<prefix>-`` + 24 hex of HMAC-SHA256 under the study's name key,
    so an encrypted study's file names carry no case id (PatientID, dates) and cannot be recomputed without the key."""
    return f"{prefix}-" + hmac.new(name_key, str(text).encode(), hashlib.sha256).hexdigest()[:24]


@dataclass(frozen=True)
class StudyLayout:
    """The paths of one study folder. Cheap to build: ``StudyLayout(folder).db``. ``name_key`` (an encrypted
    study's, from :mod:`medwb.store.cipher`) turns case ids and annotators in file names into keyed pseudonyms."""

    folder: Path
    name_key: bytes | None = field(default=None, repr=False, compare=False)

    def __init__(self, folder: str | Path, name_key: bytes | None = None) -> None:
        object.__setattr__(self, "folder", Path(folder))
        object.__setattr__(self, "name_key", name_key)

    def case_name(self, case_id: str) -> str:
        """How a case id appears in a file name: its safe form, or a keyed pseudonym in an encrypted study."""
        return safe_name(case_id) if self.name_key is None else keyed_name(self.name_key, case_id, "c")

    def person_name(self, who: str) -> str:
        """How an annotator appears in a file name: its safe form, or a keyed pseudonym in an encrypted study."""
        return safe_name(who) if self.name_key is None else keyed_name(self.name_key, who, "p")

    def export_mask_name(self, case_id: str) -> str:
        """File name of a case's mask in a NIfTI export folder: ``<case name>.nii.gz``."""
        return f"{self.case_name(case_id)}.nii.gz"

    @property
    def encryption_marker(self) -> Path:
        return self.folder / ENCRYPTION_MARKER

    @property
    def encrypting_journal(self) -> Path:
        return self.folder / ENCRYPTING_JOURNAL

    @property
    def encrypting_db(self) -> Path:
        """The SQLCipher copy an encryption of this plain study builds before it replaces the database."""
        return self.folder / f".{DB_NAME}.encrypting"

    @property
    def create_lock(self) -> Path:
        """The lock file Study.create holds while it checks for and links in the database (one creator at a time)."""
        return self.folder / f".{DB_NAME}.create.lock"

    @property
    def plain_db_link(self) -> Path:
        """The plain database's second name while an encryption swaps the encrypted copy in (then shredded)."""
        return self.folder / f".{DB_NAME}.plain"

    @property
    def db(self) -> Path:
        return self.folder / DB_NAME

    def db_files(self) -> list[Path]:
        """The database and its SQLite sidecar files (whether they exist or not)."""
        return [self.db] + [self.db.with_name(DB_NAME + s) for s in DB_SIDECAR_SUFFIXES]

    def creating_db(self, pid: int, token: str) -> Path:
        """The temporary database a Study.create in process ``pid`` builds before linking it into place."""
        return self.folder / f"{CREATING_PREFIX}{pid}-{token}"

    def creating_dbs(self) -> list[tuple[Path, int]]:
        """Temporary database files of creates in this folder, each with the pid that made it (other names skipped)."""
        out = []
        for p in sorted(self.folder.glob(CREATING_PREFIX + "*")):  # their -journal files too
            try:
                out.append((p, int(p.name[len(CREATING_PREFIX):].split("-")[0])))
            except ValueError:
                continue
        return out

    @property
    def models(self) -> Path:
        return self.folder / MODELS

    @property
    def cache(self) -> Path:
        return self.folder / CACHE

    @property
    def exports(self) -> Path:
        return self.folder / EXPORTS

    @property
    def maps(self) -> Path:
        return self.folder / MAPS

    @property
    def masks(self) -> Path:
        return self.folder / MASKS

    @property
    def explain_exports(self) -> Path:
        """Where ``medwb explain`` writes a study's explanations by default (the demo, the report look here)."""
        return self.exports / EXPLAIN

    def explanation_folders(self) -> list[Path]:
        """Where a study's explanations may live, in the order they are looked for: ``exports/explain`` (``medwb
        explain STUDY DATA --out`` default), then ``maps``."""
        return [self.explain_exports, self.maps]

    @property
    def purge_audit(self) -> Path:
        return self.folder / PURGE_AUDIT

    def subfolders(self) -> list[Path]:
        return [self.folder / s for s in SUBFOLDERS]

    def make_folders(self) -> None:
        """Create the study folder and every sub-folder (existing ones are kept)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for p in self.subfolders():
            p.mkdir(exist_ok=True)

    def checkpoint(self, round: int) -> Path:
        """Where the loop saves the model of round ``round``: ``models/round_NNN.pt``."""
        return self.models / CHECKPOINT_PATTERN.format(round=int(round))

    def pretrained(self, key: str) -> Path:
        """Where a finished pretraining result with cache key ``key`` is kept: ``cache/pretrain/<key>.pt``."""
        return self.cache / PRETRAIN / f"{safe_name(key)}.pt"

    def pretrain_partial(self, key: str) -> Path:
        """The resumable checkpoint of a pretraining run in progress: ``cache/pretrain/<key>.partial.pt``."""
        return self.cache / PRETRAIN / f"{safe_name(key)}.partial.pt"

    def regions(self, key: str, case_id: str) -> Path:
        """Where the region maps of a case under region configuration ``key`` are cached:
        ``cache/regions/<key>/<sha256 of the case id, 20 hex>.npy`` (a hash: unique where safe names collide, and
        no case id, which may carry a patient id, in a file name)."""
        if self.name_key is None:
            digest = hashlib.sha256(str(case_id).encode()).hexdigest()[:20]
        else:  # keyed: an unkeyed hash of PatientID + date could be recomputed by anyone who guesses them
            digest = keyed_name(self.name_key, case_id, "r")[2:22]
        return self.cache / REGIONS / safe_name(key) / f"{digest}.npy"

    def label_mask(self, case_id: str, annotator: str, source: str, round: int | None, label_id: int) -> Path:
        """THE naming rule for a mask the store saves with a label (``add_label(mask=...)``, ``import_masks``):
        ``masks/<case>__<annotator>__<source>__r<round>__L<label id>.npy``. The label id makes it unique (the same
        annotator labelling a case twice gets two files) and ties the file to its row; case, annotator, source and
        round (0 = before any round) make it readable in a file browser; an encrypted study names case and annotator
        by keyed pseudonyms (:meth:`case_name`, :meth:`person_name`)."""
        r = 0 if round is None else int(round)
        return self.masks / (f"{self.case_name(case_id)}__{self.person_name(annotator)}__{safe_name(source)}__r{r}"
                             f"__L{int(label_id):06d}{MASK_SUFFIX}")

    def round_case_name(self, round: int, case_id: str) -> str:
        """The file name of a proposed case's per-round file: ``<case>__r<round>__<8 hex>.npy``. One file per
        (round, case): the 8 hex of the case id's sha256 keep two ids with the same safe name apart; an encrypted
        study's keyed pseudonym is unique already and gets no unkeyed hash (anyone could test a guessed PatientID
        against it)."""
        tail = "" if self.name_key is not None else "__" + hashlib.sha256(str(case_id).encode()).hexdigest()[:8]
        return f"{self.case_name(case_id)}__r{int(round)}{tail}{MASK_SUFFIX}"

    def predicted_mask(self, round: int, case_id: str) -> Path:
        """Where the model's predicted mask of a case proposed in round ``round`` is kept:
        ``masks/prelabels/<case>__r<round>__<8 hex>.npy`` (:meth:`round_case_name`)."""
        return self.masks / PRELABELS / self.round_case_name(round, case_id)

    def saliency_map(self, round: int, case_id: str) -> Path:
        """Where the model's saliency map (Grad-CAM) of a classification case proposed in round ``round`` is kept:
        ``maps/saliency/<case>__r<round>__<8 hex>.npy`` (:meth:`round_case_name`)."""
        return self.maps / SALIENCY / self.round_case_name(round, case_id)

    def uncertainty_map(self, round: int, case_id: str) -> Path:
        """Where the model's entropy map of a segmentation case proposed in round ``round`` is kept (with its
        predicted mask): ``maps/uncertainty/<case>__r<round>__<8 hex>.npy`` (:meth:`round_case_name`)."""
        return self.maps / UNCERTAINTY / self.round_case_name(round, case_id)

    def tagged_mask(self, case_id: str, tag: str) -> Path:
        """The older, caller-tagged mask name of :meth:`medwb.store.Study.save_mask`: ``masks/<case>__<tag>.npy``."""
        return self.masks / f"{self.case_name(case_id)}__{safe_name(tag)}{MASK_SUFFIX}"


def db_path(folder: str | Path) -> Path:
    """The database file of the study in ``folder``."""
    return StudyLayout(folder).db


def is_study(folder: str | Path) -> bool:
    """Whether ``folder`` holds a study database (it may still be damaged; Study.open says so)."""
    return StudyLayout(folder).db.is_file()


def checkpoint_path(folder: str | Path, round: int) -> Path:
    """Where the model of round ``round`` of the study in ``folder`` is saved (``models/round_NNN.pt``)."""
    return StudyLayout(folder).checkpoint(round)
