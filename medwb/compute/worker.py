"""What a process that scores shards sets up once: the dataset opened from its path, and glibc's allocator back
to its defaults when a Dask nanny tuned it.

Why the allocator: Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand memory back to the
OS sooner). That fixes glibc's trim and mmap thresholds, so every torch activation above 128 KB is a fresh mmap /
munmap: measured 4-5x slower scoring of a 28x28 shard (benchmarks/compute). Workers medwb starts and workers
someone else started get the same fix: glibc's own dynamic ceilings (32 MB mmap, 64 MB trim), set once.
"""
from __future__ import annotations

import functools
import os
import platform
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest dynamic mmap threshold on 64-bit
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc's dynamic rule pairs with it


def file_stamp(path: str) -> tuple[int, int]:
    """(mtime, size) of the dataset path: a worker reopens a dataset whose file was replaced."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=4)
def worker_dataset(path: str, stamp: tuple[int, int]) -> Dataset:
    """The dataset at ``path``, opened once per process (and per file version ``stamp``)."""
    from medwb.data import open_dataset

    return open_dataset(path, progress=False)


@functools.cache
def undo_malloc_trim() -> bool:
    """Once per process: when ``MALLOC_TRIM_THRESHOLD_`` is set (Dask's nanny does) and libc is glibc, set the
    mmap and trim thresholds to glibc's dynamic ceilings. True when it did."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters (malloc.h)
    return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(libc.mallopt(m_trim_threshold,
                                                                                      TRIM_THRESHOLD))
