"""The study folder: the SQLite label store with provenance, its files and its layout.

``from medwb.store import Study`` opens or creates a study; see ``docs/store.md`` for the modules behind it.
"""
from __future__ import annotations

from medwb.store.layout import StudyLayout, checkpoint_path, safe_name
from medwb.store.masks import read_mask
from medwb.store.pool import labelled_ids, load_splits, save_splits
from medwb.store.schema import SCHEMA_VERSION
from medwb.store.study import Study

__all__ = ["SCHEMA_VERSION", "Study", "StudyLayout", "checkpoint_path", "labelled_ids", "load_splits", "read_mask",
           "safe_name", "save_splits"]
