"""The study's pool: which case ids form train (the AL pool), val and test, saved once so every later reader
(the loop after a restart, a report, an explanation) uses the same cases.

Minimal stand-in (a ``splits.json`` in the study folder, written atomically); the store's full pool module
replaces it with the same two functions.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medwb.atomic import atomic_write_bytes
from medwb.errors import StoreError

if TYPE_CHECKING:
    from medwb.store.study import Study


def _file(study: Study) -> Path:
    return Path(study.folder) / "splits.json"


def load_splits(study: Study) -> dict[str, list[str]] | None:
    """The saved splits (split name -> case ids, in saved order), or None before any were saved."""
    f = _file(study)
    if not f.is_file():
        return None
    return {str(k): [str(c) for c in v] for k, v in json.loads(f.read_text()).items()}


def save_splits(study: Study, splits: Mapping[str, Sequence[str]]) -> None:
    """Save the splits once; saving the same splits again is a no-op, different ones raise StoreError."""
    new = {str(k): [str(c) for c in v] for k, v in splits.items()}
    old = load_splits(study)
    if old is not None:
        if old != new:
            raise StoreError(f"{study.folder}: the study already holds other splits "
                             f"({', '.join(f'{k}: {len(v)}' for k, v in old.items())}). "
                             "Fix: reopen it with the same pool settings, or use a new study folder")
        return
    atomic_write_bytes(_file(study), json.dumps(new, indent=1).encode())
