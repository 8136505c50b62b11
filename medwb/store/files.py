"""The files a study writes beside its database (masks, checkpoints, caches, maps, exports): THE write / read pair.

Why one pair: in an encrypted study every such file must be encrypted when it is written, not by a later pass
that a crash or a forgotten call skips (``medwb encrypt``, :mod:`medwb.store.convert`, converts a plain study
once), and every reader must decrypt the same way. A writer gives a path; :func:`write_bytes` finds the encrypted
study that holds it (its marker, :func:`medwb.store.cipher.owning_study`) and writes AES-GCM bytes atomically
(temp file, fsync, rename), else plain bytes atomically. :func:`read_bytes` recognises encrypted content by its
header, so plain files (outputs written in clear by the user's choice) still read. The content of an encrypted
file starts with ``MEDWBENC1``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medwb.atomic import atomic_write_bytes
from medwb.errors import CryptoError
from medwb.privacy import crypto
from medwb.store import cipher

if TYPE_CHECKING:
    from medwb.privacy.crypto import Key


def key_for(path: str | Path, key: Key | None = None) -> Key | None:
    """The key a file at ``path`` is written / read with: ``key``, else its encrypted study's (None: plain)."""
    if key is not None:
        return key
    lay = cipher.owning_study(path)
    return None if lay is None else cipher.study_key(lay)


def write_bytes(path: str | Path, data: bytes, *, key: Key | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; encrypted (AES-GCM, mode 0600) with ``key`` or when ``path`` is inside
    an encrypted study, so the plaintext never touches the disk."""
    path = Path(path)
    k = key_for(path, key)
    if k is None:
        return atomic_write_bytes(path, data)
    return crypto.write_encrypted(path, data, k)


def is_encrypted(data: bytes) -> bool:
    """Whether bytes read from a file are medwb-encrypted (their header)."""
    return data.startswith(crypto.MAGIC)


def decrypted(path: str | Path, data: bytes, *, key: Key | None = None) -> bytes:
    """``data`` read from ``path``, decrypted when encrypted (with ``key`` or its study's key)."""
    if not is_encrypted(data):
        return data
    k = key_for(path, key)
    if k is None:
        if not crypto.key_configured():
            raise CryptoError(f"{path}: the file is encrypted and no key is configured. {cipher.NO_KEY_FIX}")
        k = crypto.load_key()
    return crypto.decrypt_bytes(data, k, name=str(path))


def read_bytes(path: str | Path, *, key: Key | None = None) -> bytes:
    """The content of ``path``, decrypted when it is encrypted; a wrong or missing key is a CryptoError."""
    p = Path(path)
    return decrypted(p, p.read_bytes(), key=key)
