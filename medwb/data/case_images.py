"""The model inputs of a list of cases, read on demand: a pool that need not fit in memory.

Why: :meth:`Dataset.arrays` stacks a whole split at the model's input size, and 20,000 volumes at 64³ are 21 GB
as float32. Pretraining and FixMatch only ever need one batch of the pool at a time, so they take a
:class:`CaseImages` wherever they take an array: indexing it reads only those cases, through
:meth:`Dataset.inputs` (the numbers ``arrays`` gives, bit for bit, so a streamed run equals an in-memory one),
from the dataset's own files (an uncompressed npz a few rows at a time, NIfTI / DICOM / PNG one file per case).
:func:`batches` reads an epoch's batches ahead in torch DataLoader worker processes when asked.

    pool = CaseImages(dataset, dataset.case_ids("train"), size=(28, 28))
    pretrain(build_args, pool)            # the same weights as pretrain(build_args, pool[:])
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Union

import numpy as np
import torch

from medwb.errors import DataError

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset

#: cases per read when a whole pool is walked (fingerprint, BatchNorm statistics): memory stays at one chunk
CHUNK = 256


class CaseImages:
    """Row-indexable, read-only view of the model inputs of ``case_ids``: ``images[i]``, ``images[a:b]`` and
    ``images[[i, j]]`` return float32 arrays (n, C, *size) read from the files at that moment; ``shape``,
    ``dtype``, ``ndim`` and ``len`` describe the whole without reading it (only the first case is read, for its
    channels and size). A case whose pixels are NaN or Inf is a :class:`DataError` naming its file when it is
    read (:meth:`Dataset.load_raw` validates every case it reads)."""

    def __init__(self, dataset: Dataset, case_ids: Sequence[str], size: Sequence[int] | None = None) -> None:
        self.dataset, self.case_ids = dataset, [str(c) for c in case_ids]
        self.size = None if size is None else tuple(int(s) for s in size)
        if not self.case_ids:
            raise DataError(dataset.path, f"no cases to read from {dataset.name}", "pass at least one case id")
        first = dataset.inputs(self.case_ids[:1], self.size)
        self.shape: tuple[int, ...] = (len(self.case_ids), *(int(s) for s in first.shape[1:]))
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.case_ids)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: int | slice | np.ndarray | torch.Tensor | Sequence[int]) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        scalar = np.ndim(index) == 0
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
        ids = [self.case_ids[i] for i in idx.tolist()]
        if not ids:
            return np.empty((0, *self.shape[1:]), np.float32)
        x = self.dataset.inputs(ids, self.size, what=f"{len(ids)} streamed case(s)")
        return x[0] if scalar else x

    def chunks(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        """The whole view in order, ``chunk`` cases at a time."""
        for i in range(0, len(self), chunk):
            yield self[i:i + chunk]

    def __repr__(self) -> str:
        return f"CaseImages({self.dataset.name}, {len(self)} cases, shape {self.shape})"


#: what pretraining and FixMatch accept as images: an array in memory or a :class:`CaseImages`
Images = Union[np.ndarray, torch.Tensor, CaseImages]


def is_streamed(X: object) -> bool:
    return isinstance(X, (CaseImages, Stacked))


def rows(X: Images | Stacked, index: torch.Tensor | np.ndarray | slice) -> torch.Tensor:
    """``X[index]`` as a float32 tensor, whether ``X`` is in memory or streamed."""
    if isinstance(X, (torch.Tensor, Stacked)):
        return X[index]
    return torch.from_numpy(np.ascontiguousarray(X[index], dtype=np.float32))


class Stacked:
    """``parts`` one after the other, without copying them into one array (``torch.cat`` of a streamed pool
    would read it whole): ``len`` and contiguous slices, e.g. the labelled set followed by the pool."""

    def __init__(self, *parts: Images) -> None:
        self.parts = parts
        self.starts = np.cumsum([0, *(len(p) for p in parts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: slice) -> torch.Tensor:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("Stacked images take contiguous slices only")
        a, b, _ = index.indices(len(self))
        out = [rows(p, slice(max(a - s, 0), min(b - s, len(p))))
               for p, s in zip(self.parts, self.starts[:-1].tolist()) if a < s + len(p) and b > s]
        if not out:
            return rows(self.parts[0], slice(0, 0))
        return torch.cat(out) if len(out) > 1 else out[0]


def fingerprint(X: Images) -> str:
    """sha256 of the images (dtype, shape, bytes), read chunk by chunk when streamed: the same hex digest for a
    :class:`CaseImages` as for the array it stands for, so a pretraining cache made in memory is found when
    streaming, and the reverse."""
    if not is_streamed(X):
        a = np.ascontiguousarray(X.numpy() if isinstance(X, torch.Tensor) else X)
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
        return h.hexdigest()
    h = hashlib.sha256(f"{X.dtype.str}{X.shape}".encode())
    for part in X.chunks():
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


class _Batches(torch.utils.data.Dataset):
    """One item per batch of indices (for a DataLoader that reads batches ahead in worker processes)."""

    def __init__(self, X: CaseImages, index_batches: Sequence[torch.Tensor]) -> None:
        self.X, self.index_batches = X, index_batches

    def __len__(self) -> int:
        return len(self.index_batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        return rows(self.X, self.index_batches[i])


def batches(X: Images, index_batches: Sequence[torch.Tensor], *, workers: int = 0) -> Iterator[torch.Tensor]:
    """``X[b]`` for each index batch ``b``, in order. In memory, plain indexing. Streamed with ``workers`` > 0, a
    torch DataLoader reads the next batches in that many worker processes while the current one trains (the order,
    hence the result, does not depend on ``workers``)."""
    if not is_streamed(X) or workers <= 0:
        for b in index_batches:
            yield rows(X, b)
        return
    loader = torch.utils.data.DataLoader(_Batches(X, index_batches), batch_size=None, shuffle=False,
                                         num_workers=int(workers), persistent_workers=False)
    yield from loader


__all__ = ["CHUNK", "CaseImages", "Images", "Stacked", "batches", "fingerprint", "is_streamed", "rows"]
