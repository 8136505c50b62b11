"""The study folder: the SQLite label store with provenance, its files and its layout.

``from medwb.store import Study`` opens or creates a study; see ``docs/store.md``.
"""
from __future__ import annotations

from medwb.store.study import SCHEMA_VERSION, Study, read_mask, safe_name

__all__ = ["SCHEMA_VERSION", "Study", "read_mask", "safe_name"]
