"""Images of an uncompressed ``.npz`` member read on demand, a few rows at a time.

Why: ``np.load(...)[key]`` decompresses a whole member into memory. For a pool of 100k images (or 20k volumes)
that is the whole archive in RAM for the loop's life, on every Dask worker too. A member written without
compression (``np.savez``, not ``savez_compressed``) is a plain ``.npy`` inside the zip: its rows sit at fixed
offsets, so a case is one ``pread`` and memory stays flat however large the pool (benchmarks/compute).
Compressed members (the official MedMNIST files) are read whole as before: their rows have no offsets.
"""
from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from medwb.data.npyheader import check_array_size

_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # zip local file header: 30 bytes before the name and extra field


class NpzRows:
    """Read-only, row-indexable view of one uncompressed npz member: ``rows[i]``, ``rows[a:b]``, ``rows[[i, j]]``
    return numpy arrays (copies) of those images; ``shape``, ``dtype``, ``len``. Picklable (holds no open file)."""

    def __init__(self, path: str | Path, key: str) -> None:
        self.path, self.key = Path(path), key
        with zipfile.ZipFile(self.path) as z:
            info = z.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{key} is compressed")
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            sig, *_, name_len, extra_len = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            if sig != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"no local header for {key}.npy")
            start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            f.seek(start)
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if fortran and len(shape) > 1:
            raise ValueError(f"{key} is stored in Fortran order")
        self.shape, self.dtype = tuple(int(v) for v in shape), np.dtype(dtype)
        if self.dtype.hasobject:
            raise ValueError(f"{key} holds Python objects")
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        # the header may not claim more rows than the member holds (a forged or truncated file)
        check_array_size(self.path, f"array {key!r}", (len(self), self.row_bytes), np.dtype(np.uint8),
                         stored_bytes=info.file_size - (self.offset - start), in_memory=False)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _read(self, fd: int, first: int, count: int) -> np.ndarray:
        buf = os.pread(fd, count * self.row_bytes, self.offset + first * self.row_bytes)
        if len(buf) != count * self.row_bytes:
            raise zipfile.BadZipFile(f"{self.key}: rows {first}..{first + count - 1} are cut off (truncated file)")
        return np.frombuffer(buf, dtype=self.dtype).reshape((count, *self.shape[1:]))

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> np.ndarray:
        n = len(self)
        if isinstance(index, slice):
            index = np.arange(n)[index]
        scalar = np.ndim(index) == 0
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
        idx = np.where(idx < 0, idx + n, idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range for {self.key} with {n} rows")
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            # runs of consecutive rows are one read each (a shard of a pool in order is a handful of reads)
            breaks = np.flatnonzero(np.diff(idx) != 1) + 1
            for run in np.split(np.arange(len(idx)), breaks):
                if len(run):
                    out[run] = self._read(fd, int(idx[run[0]]), len(run))
        finally:
            os.close(fd)
        return out[0] if scalar else out


def stored_rows(path: str | Path, key: str) -> NpzRows | None:
    """The on-demand view of ``key`` when it is stored uncompressed, else None (read it whole)."""
    try:
        return NpzRows(path, key)
    except (ValueError, KeyError):
        return None


__all__ = ["NpzRows", "stored_rows"]
