"""The project's own named errors: every message names the file, the problem and the fix."""
from __future__ import annotations

from pathlib import Path


class MedwbError(Exception):
    """Base class: anything medwb raises on purpose for bad input or misuse."""


class DataError(MedwbError, ValueError):
    """Bad input data. The message says which file, what is wrong and how to fix it."""

    def __init__(self, path: str | Path | None, problem: str, fix: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}. Fix: {fix}")


class OutputError(MedwbError):
    """An output folder medwb cannot create or write, found before any work starts; names the folder and the fix."""

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path, self.problem, self.fix = str(path), problem, fix
        super().__init__(f"{path}: {problem}. Fix: {fix}")


class StoreError(MedwbError):
    """The study folder or its label store cannot be used as asked."""


class CryptoError(MedwbError):
    """A wrong or missing encryption key, or a tampered encrypted file."""


class NetworkBlockedError(MedwbError, ConnectionError):
    """medwb never calls out to the network; raised by the offline guard."""


class ClusterError(MedwbError, ConnectionError):
    """A Dask scheduler that cannot be reached or has no workers: names the address, the problem and the fix."""

    def __init__(self, address: str, problem: str, fix: str) -> None:
        self.address, self.problem, self.fix = str(address), problem, fix
        super().__init__(f"Dask scheduler {address}: {problem}. Fix: {fix}")


class ConfigError(MedwbError, ValueError):
    """A setting medwb does not know (an unknown strategy, method or training field): the same error from every
    module that takes the setting, naming the accepted values."""
