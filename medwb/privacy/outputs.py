"""Outputs that leave an encrypted study (reports, a simulation's tables), or that are made with a key configured
and no study (``medwb explore DATA --out DIR``): encrypted, or in clear only by choice.

Why: a report holds the study's images and labels, a simulation's tables its metrics per case count; for an
encrypted study they must not land in clear in some ``--out`` folder because nobody thought about it. The default
is encrypted (``MEDWBENC1`` content, names unchanged; ``medwb decrypt FILE --out DEST`` gives a clear copy). A
user who needs the HTML in a browser passes ``--plaintext-outputs``: the files are written in clear, registered
in the study for purge, and one warning line says they left the protected zone.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from medwb.store import files

if TYPE_CHECKING:
    from medwb.privacy.crypto import Key

#: RAM-backed folder (Linux tmpfs): plaintext produced before encryption never reaches a disk
RAM_DIR = Path("/dev/shm")


@contextmanager
def private_workdir(prefix: str) -> Iterator[Path]:
    """A temporary folder for plaintext that is about to be encrypted: in RAM (``/dev/shm``) where the machine has
    it, else the system temp folder; its files are overwritten before it is removed (see ``shred_file``)."""
    from medwb.privacy.purge import shred_file

    base = RAM_DIR if RAM_DIR.is_dir() and _writable(RAM_DIR) else None
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield work
    finally:
        for p in sorted(work.rglob("*")):
            if p.is_file() and not p.is_symlink():
                shred_file(p)
        shutil.rmtree(work, ignore_errors=True)


def _writable(folder: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def seal(work: Path, out: Path, key: Key) -> list[Path]:
    """Every file under ``work`` written to the same place under ``out``, encrypted with ``key`` (atomic, 0600);
    returns the written paths. The plaintext stays in ``work``."""
    written = []
    for src in sorted(p for p in work.rglob("*") if p.is_file()):
        written.append(files.write_bytes(out / src.relative_to(work), src.read_bytes(), key=key))
    return written


def protect_output(out: Path, key: Key) -> None:
    """Make ``out`` an encrypted zone like a study: the study marker (:mod:`medwb.store.cipher`) in it, so every
    file the store's file pair writes under it is encrypted with ``key`` (a marker of another key: CryptoError).
    Used for outputs of an encrypted study written outside it (simulations, class sweeps, explanations)."""
    from medwb.store import cipher
    from medwb.store.layout import StudyLayout

    lay = StudyLayout(out)
    if cipher.is_encrypted(lay):
        cipher.study_key(lay, key)
    else:
        cipher.write_marker(lay, key)
    cipher.remember(lay, key)


def warn_plaintext(what: str, paths: Sequence[Path], study: str | Path | None) -> None:
    """The one line that says outputs were written in clear (by the user's choice): of an encrypted study (then
    registered there for purge), or, ``study=None``, made with a key configured and no study to register them in
    (``medwb explore`` without ``--study``: no purge will find them)."""
    where = sorted({str(Path(p).parent) for p in paths})
    if study is None:
        print(f"WARNING: {len(paths)} {what} file(s) were written in clear (--plaintext-outputs) in "
              f"{', '.join(where)} although a key is configured: they left the protected zone, and no study "
              "registers them, so medwb purge will not find them (pass --study STUDY to register them; delete "
              "them yourself otherwise).", file=sys.stderr)
        return
    print(f"WARNING: {len(paths)} {what} file(s) of the encrypted study {study} were written in clear "
          f"(--plaintext-outputs) in {', '.join(where)}: they left the protected zone; registered for medwb purge.",
          file=sys.stderr)


def decrypt_output(src: str | Path, dst: str | Path, *, key_file: str | Path | None = None) -> Path:
    """A clear copy of one encrypted file at ``dst`` (``medwb decrypt``): with ``key_file``, else the key of the
    encrypted study holding ``src``, else the configured key. A wrong key is a CryptoError; ``dst`` is then not
    written. Refuses to overwrite ``src`` itself."""
    from medwb.atomic import atomic_write_bytes
    from medwb.errors import CryptoError
    from medwb.privacy.crypto import load_key

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise CryptoError(f"{src}: no such file. Fix: check the path")
    if dst.resolve() == src.resolve():
        raise CryptoError(f"{dst}: the clear copy would replace the encrypted file. Fix: pass another --out")
    data = src.read_bytes()
    if not files.is_encrypted(data):
        raise CryptoError(f"{src}: not a medwb-encrypted file (no MEDWBENC1 header). Fix: it is already in clear")
    plain = files.decrypted(src, data, key=load_key(key_file) if key_file else None)
    return atomic_write_bytes(dst, plain, mode=0o600)
