"""Image fingerprints for duplicate and leakage checks.

- ``file_sha256``: the file's bytes, streamed (datasets, checkpoints, purged files for the audit record).
- ``pixel_sha256``: exact identity of the pixel data (dtype + shape + bytes), independent of file format.
- ``phash``: a 64-bit DCT perceptual hash (pHash): the image (3D: its mean projection along the last
  axis, colour: the channel mean) is resized to 32x32, transformed with a 2D DCT, and each of the 8x8
  lowest frequencies is compared with their median. Re-encoded, slightly shifted or re-windowed copies
  keep almost the same bits, so a small Hamming distance means "probably the same picture".
- ``near_duplicate_pairs``: all pairs within a Hamming distance, without an all-pairs loop (pigeonhole
  banding: two 64-bit hashes within distance d agree exactly on at least one of d+1 bands).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import scipy.fft


def file_sha256(path: str | Path, *, block_size: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in blocks so large files never sit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(block_size), b""):
            h.update(block)
    return h.hexdigest()


def pixel_sha256(arr: np.ndarray) -> str:
    """sha256 of the pixel data as stored (dtype, shape and bytes)."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _to_plane(batch: np.ndarray, spatial_dims: int) -> np.ndarray:
    """(N, C, *spatial) -> (N, H, W) float: channel mean, 3D volumes projected (mean) along the last axis."""
    x = batch.astype(np.float32, copy=False).mean(axis=1)
    if spatial_dims == 3:
        x = x.mean(axis=-1)
    return x


def shrink(x: np.ndarray, size: int = 32) -> np.ndarray:
    """Resize the trailing spatial axes of ``x`` (N, *spatial) to ``size`` each: integer block means first
    (no aliasing from big images), then linear interpolation. numpy/scipy only, so hashing needs no torch."""
    from scipy import ndimage

    x = x.astype(np.float32, copy=False)
    spatial = x.shape[1:]
    f = [max(1, s // size) for s in spatial]
    if any(v > 1 for v in f):
        crop = tuple(slice(0, (s // v) * v) for s, v in zip(spatial, f))
        x = x[(slice(None), *crop)]
        shape = [x.shape[0]]
        for s, v in zip(x.shape[1:], f):
            shape += [s // v, v]
        x = x.reshape(shape).mean(axis=tuple(range(2, 2 + 2 * len(f), 2)))
    zoom = [1.0] + [size / s for s in x.shape[1:]]
    return ndimage.zoom(x, zoom, order=1, grid_mode=True, mode="nearest") if any(z != 1 for z in zoom[1:]) else x


def phash_batch(batch: np.ndarray, spatial_dims: int) -> np.ndarray:
    """64-bit perceptual hashes (uint64, shape (N,)) of a channel-first batch of equal-size images."""
    small = shrink(_to_plane(batch, spatial_dims), 32)
    d = scipy.fft.dctn(small.astype(np.float64), axes=(1, 2), norm="ortho")[:, :8, :8]
    flat = d.reshape(len(d), 64)
    med = np.median(flat[:, 1:], axis=1, keepdims=True)
    bits = (flat > med).astype(np.uint64)
    weights = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
    return (bits * weights).sum(axis=1, dtype=np.uint64)


def phash(image: np.ndarray, spatial_dims: int) -> str:
    """Perceptual hash of one channel-first image, as 16 hex digits."""
    return f"{int(phash_batch(image[None], spatial_dims)[0]):016x}"


def near_duplicate_pairs(hashes: list[str | None], max_distance: int) -> list[tuple[int, int, int]]:
    """Index pairs (i, j, distance), i < j, whose hashes differ in at most ``max_distance`` bits."""
    idx = np.array([i for i, h in enumerate(hashes) if isinstance(h, str)], dtype=np.int64)
    if len(idx) < 2:
        return []
    vals = np.array([int(hashes[i], 16) for i in idx], dtype=np.uint64)  # type: ignore[arg-type]
    n_bands = max_distance + 1
    edges = np.linspace(0, 64, n_bands + 1).astype(int)
    found: dict[tuple[int, int], int] = {}
    for b in range(n_bands):
        lo, hi = int(edges[b]), int(edges[b + 1])
        band = (vals >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(band, kind="stable")
        sb = band[order]
        starts = np.flatnonzero(np.r_[True, sb[1:] != sb[:-1]])
        ends = np.r_[starts[1:], len(sb)]
        for s0, e0 in zip(starts, ends):
            if e0 - s0 < 2:
                continue
            m = np.sort(order[s0:e0])
            v = vals[m]
            for a in range(0, len(m), 2048):  # chunked so a huge bucket stays within memory
                dist = np.bitwise_count(v[a:a + 2048, None] ^ v[None, :])
                ii, jj = np.nonzero(dist <= max_distance)
                keep = m[a + ii] < m[jj]
                for i, j, d in zip(m[a + ii][keep], m[jj][keep], dist[ii, jj][keep]):
                    found[(int(idx[i]), int(idx[j]))] = int(d)
    return [(i, j, d) for (i, j), d in sorted(found.items())]
