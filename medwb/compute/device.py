"""Which torch device pool-wide work runs on: ``auto`` (CUDA when one is visible, else CPU), ``cpu``, ``cuda``.

Why resolved where the work runs: a Dask worker on a GPU node may have CUDA while the client has none, so the
choice travels as a word and becomes a device on the worker.
"""
from __future__ import annotations

import torch

from medwb.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str) -> str:
    """``device`` if it is one of :data:`DEVICES`, else a ConfigError naming them."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    return device


def pick_device(device: str = "auto") -> torch.device:
    """The torch device for ``device`` on this process; ``cuda`` without a visible GPU is an error, not a silent
    fallback (a run meant for the GPU that takes the CPU would just look 50x slow)."""
    check_device(device)
    if device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if device == "cuda":
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device here "
                          f"(torch {torch.__version__}): use device 'auto' or 'cpu', or run on a GPU machine "
                          "with a CUDA build of torch")
    return torch.device("cpu")
