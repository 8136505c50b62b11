"""Crash-safe file writes: a kill at any moment leaves the old file or the new one, never half of one.
Also the one exclusive lock file (:func:`exclusive_lock`) that lets processes take turns at such writes.

Labels, checkpoints, encrypted exports and caches are all written this way (temporary file in the same folder,
fsync, ``os.replace``, fsync of the folder), so the pattern lives here once; and an output folder is proven
writable (:func:`ensure_output_dir`) before the work whose results it will hold.
"""
from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from medwb.errors import OutputError


#: what a write into a full disk, an exhausted quota or a file-size limit raises
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
DISK_FULL_FIX = ("free space on that disk (or raise the quota / file-size limit) and run again: nothing was "
                 "written, and the previous file is intact")


def fsync_dir(folder: str | Path) -> None:
    """Persist a rename inside ``folder`` (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` and prove it takes a file, before any work starts: a read-only or unwritable output found
    after an hour of training loses the hour, and a half-written output folder is worse than none."""
    path = Path(path)
    fix = f"choose a writable {what} (check its permissions, that the disk is mounted read-write and not full)"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(path, f"the {what} exists and is not a folder", f"pass a folder path as the {what}") from None
    except OSError as e:
        raise OutputError(path, f"the {what} cannot be created ({e.strerror or e})", fix) from None
    if not path.is_dir():
        raise OutputError(path, f"the {what} exists and is not a folder", f"pass a folder path as the {what}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".medwb-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(path, f"the {what} is not writable ({e.strerror or e})", fix) from None
    return path


def atomic_write(path: str | Path, writer: Callable[[BinaryIO], object], *, mode: int | None = None) -> Path:
    """Run ``writer(fileobj)`` into a temp file beside ``path``, fsync, then rename over ``path``.

    If ``writer`` raises, the temp file is removed and ``path`` keeps its previous content (or stays absent). A
    full disk (or quota, or file-size limit) is an :class:`~medwb.errors.OutputError` naming the file and the fix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in FULL_ERRNOS:
            raise OutputError(path, f"the disk is full ({e.strerror})", DISK_FULL_FIX) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int | None = None) -> Path:
    """:func:`atomic_write` of a bytes payload."""
    return atomic_write(path, lambda f: f.write(data), mode=mode)


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[int]:
    """Hold an exclusive flock on the lock file ``path`` (created when missing) and yield its descriptor; the
    kernel releases it when the holder's process dies, so a killed holder never leaves a stale lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)
