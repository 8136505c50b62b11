"""Size check of a ``.npy`` array from its header, before numpy allocates it.

Why: numpy trusts the shape in a ``.npy`` header. A corrupt or hostile header claiming billions of elements makes
``np.load`` allocate for minutes and end in ``MemoryError`` (or swap the machine), with no word about which file.
Reading the header first costs microseconds and lets the error name the file, the claimed size and the fix.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from medwb.errors import DataError


def memory_available() -> int | None:
    """Bytes of memory the process can still get without swapping (Linux ``MemAvailable``), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _gb(n: int | float) -> str:
    return f"{n / 1e9:.1f} GB"


def read_npy_header(f: BinaryIO) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header of the ``.npy`` stream ``f`` (left positioned at the first data byte)."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return tuple(int(v) for v in shape), np.dtype(dtype)


def check_array_size(path: str | Path, what: str, shape: tuple[int, ...], dtype: np.dtype, *,
                     stored_bytes: int | None = None, in_memory: bool = True) -> int:
    """Refuse an array whose header claims more bytes than the file holds or than memory can take; returns bytes.

    ``stored_bytes``: the data bytes actually present after the header (None when unknown, e.g. compressed).
    ``in_memory``: False for an array read a few rows at a time (:mod:`medwb.data.npz_rows`): no memory check.
    """
    if any(v < 0 for v in shape):
        raise DataError(path, f"{what} has a negative dimension in its header {shape}", "re-create the file")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if stored_bytes is not None and not dtype.hasobject and nbytes > stored_bytes:
        raise DataError(path, f"{what}: its header claims shape {shape} {dtype} ({_gb(nbytes)}) but the file holds "
                        f"only {stored_bytes} data bytes (a corrupt or forged header)",
                        "re-download or re-create the file; do not trust its header")
    avail = memory_available() if in_memory else None
    if avail is not None and nbytes > avail:
        raise DataError(path, f"{what}: shape {shape} {dtype} needs {_gb(nbytes)} of memory, {_gb(avail)} available",
                        "use a machine with more memory, or split the array into smaller files")
    return nbytes


def check_npy_file(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """Header check of a plain ``.npy`` file (see :func:`check_array_size`); returns its shape and dtype."""
    path = Path(path)
    with open(path, "rb") as f:
        shape, dtype = read_npy_header(f)
        stored = path.stat().st_size - f.tell()
    check_array_size(path, "the array", shape, dtype, stored_bytes=stored)
    return shape, dtype


def check_npz_member(path: str | Path, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Header check of the array ``name`` of an ``.npz`` archive, without decompressing its data."""
    import zipfile

    with zipfile.ZipFile(path) as z, z.open(f"{name}.npy") as f:
        shape, dtype = read_npy_header(f)
        info = z.getinfo(f"{name}.npy")
        stored = info.file_size - f.tell()
    # an uncompressed member is read a few rows at a time (medwb.data.npz_rows): it need not fit in memory
    check_array_size(path, f"array {name!r}", shape, dtype, stored_bytes=stored,
                     in_memory=info.compress_type != zipfile.ZIP_STORED)
    return shape, dtype
