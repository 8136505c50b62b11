"""Image fingerprints for duplicate and leakage checks.

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

import numpy as np
import scipy.fft


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


def phash_batch(batch: np.ndarray, spatial_dims: int) -> np.ndarray:
    """64-bit perceptual hashes (uint64, shape (N,)) of a channel-first batch of equal-size images."""
    import torch  # lazy: opening a dataset should not pay torch's import time
    import torch.nn.functional as F

    plane = _to_plane(batch, spatial_dims)
    t = torch.from_numpy(np.ascontiguousarray(plane))[:, None]
    small = F.interpolate(t, size=(32, 32), mode="area" if min(plane.shape[1:]) >= 32 else "bilinear",
                          **({} if min(plane.shape[1:]) >= 32 else {"align_corners": False}))
    d = scipy.fft.dctn(small[:, 0].numpy().astype(np.float64), axes=(1, 2), norm="ortho")[:, :8, :8]
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
