"""Per-case statistics cache: reading every pixel of a large folder once is expensive, so the results
(shape, intensity statistics, sha256, perceptual hash) are kept on disk and reused on the next open.

Location: ``cache_dir=`` argument, else ``$MEDWB_CACHE``, else ``~/.cache/medwb``. Entries are keyed by
file path + size + modification time, so an edited or replaced file is recomputed automatically.

No path in clear (issue 16: folder names can be patient names, ``Doe_John_.../``): the file of a dataset is
``stats/<sha256 of its resolved path>.json`` and each entry's key is the sha256 of the key above. A purge finds the
file of a study's dataset by the same hash (:func:`stats_cache_files`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from medwb.atomic import atomic_write_bytes

CACHE_VERSION = 3  # bump when a statistic's definition changes


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder to use (argument > $MEDWB_CACHE > ~/.cache/medwb)."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("MEDWB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "medwb"


def file_key(*paths: str | Path, extra: str = "") -> str:
    """A key that changes when any of the files changes (path, size, mtime)."""
    parts = []
    for p in paths:
        st = os.stat(p)
        parts.append(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}")
    if extra:
        parts.append(extra)
    return "#".join(parts)


def hashed(key: str) -> str:
    """What is stored for a key: its sha256 (no path, no case id in the file)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


def stats_cache_files(dataset_path: str | Path, cache_dir: str | Path | None = None) -> list[Path]:
    """The statistics cache file of a dataset, then the name older medwb versions gave it (folder name in clear):
    what a purge of a study on this dataset removes."""
    resolved = str(Path(dataset_path).resolve())
    stats = cache_root(cache_dir) / "stats"
    legacy = f"{Path(dataset_path).name[:40]}-{hashlib.sha1(resolved.encode()).hexdigest()[:16]}.json"
    return [stats / f"{hashed(resolved)}.json", stats / legacy]


class StatsCache:
    """A JSON dictionary ``hashed(key) -> stats dict`` for one dataset root, written atomically."""

    def __init__(self, dataset_path: str | Path, cache_dir: str | Path | None = None) -> None:
        self.path = stats_cache_files(dataset_path, cache_dir)[0]
        self.entries: dict[str, dict[str, Any]] = {}
        self.dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") == CACHE_VERSION:
                self.entries = data["entries"]
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(hashed(key))

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.entries[hashed(key)] = value
        self.dirty = True

    def save(self) -> None:
        """Write the cache; a read-only or missing home directory only costs speed, never an error."""
        if not self.dirty:
            return
        try:
            payload = json.dumps({"version": CACHE_VERSION, "entries": self.entries}).encode("utf-8")
            atomic_write_bytes(self.path, payload)
            self.dirty = False
        except OSError:
            pass
