"""The medwb key in the operating system's keyring (macOS Keychain, Windows Credential Locker, Linux Secret
Service), through the standard ``keyring`` package: ``export MEDWB_KEY_KEYRING=SERVICE``.

Why: a key file must live somewhere outside every study, and an environment variable leaks into child processes
and shell histories; the OS keyring keeps the key encrypted under the user's login and hands it only to this user.
The entry is the key in its file form (44 url-safe base64 characters) under service ``SERVICE`` and user
:data:`KEYRING_USER`. ``keyring`` is optional (``pip install 'medwb[keyring]'``); without it, or without a
backend, or without the entry, reading the key is a :class:`CryptoError` that names the fix.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from medwb.errors import CryptoError

if TYPE_CHECKING:
    from medwb.privacy.crypto import Key

#: the user name of medwb's keyring entries (the service name is the user's choice)
KEYRING_USER = "medwb"
INSTALL_FIX = "pip install 'medwb[keyring]' (keyring==25.7.0)"


def source(service: str) -> str:
    """How a key read from the keyring names its origin in messages (never the key)."""
    return f"keyring:{service} (user {KEYRING_USER})"


def _backend() -> Any:
    try:
        import keyring
    except ImportError:
        raise CryptoError(f"$MEDWB_KEY_KEYRING: the key is to come from the OS keyring, and the keyring package is "
                          f"not installed. Fix: {INSTALL_FIX}, or use MEDWB_KEY_FILE instead") from None
    return keyring


def _failed(service: str, e: Exception, doing: str) -> CryptoError:
    backend = os.environ.get("PYTHON_KEYRING_BACKEND") or "the default one"
    return CryptoError(f"{source(service)}: the OS keyring could not {doing} ({type(e).__name__}: {e}; backend "
                       f"{backend}). Fix: run medwb where the keyring is unlocked (a desktop session: Keychain, "
                       "Credential Locker, Secret Service), or choose a backend with PYTHON_KEYRING_BACKEND (e.g. "
                       "keyrings.alt.file.EncryptedKeyring), or use MEDWB_KEY_FILE instead")


def read_token(service: str) -> str:
    """The key text stored for ``service``; a missing package, backend or entry is a CryptoError with the fix."""
    keyring = _backend()
    try:
        token = keyring.get_password(service, KEYRING_USER)
    except Exception as e:  # noqa: BLE001 - every backend raises its own errors (NoKeyringError, D-Bus, locked)
        raise _failed(service, e, "be read") from None
    if not token:
        raise CryptoError(f"{source(service)}: the OS keyring holds no medwb key for this service. Fix: store one "
                          f"with `medwb key store --keyring {service} --key-file PATH` (or `--new`), or export "
                          "MEDWB_KEY_KEYRING with the service name the key was stored under")
    return token


def store_key(service: str, key: Key, *, overwrite: bool = False) -> str:
    """Put ``key`` into the OS keyring under ``service``; returns where (:func:`source`). Refuses to replace
    another key there unless ``overwrite``: losing a key loses the data it encrypted."""
    from medwb.privacy.crypto import key_token

    keyring = _backend()
    token = key_token(key)
    try:
        old = keyring.get_password(service, KEYRING_USER)
        if old and old.strip() != token and not overwrite:
            raise CryptoError(f"{source(service)}: the OS keyring already holds another medwb key here; replacing "
                              "it would make the data encrypted with it unreadable. Fix: use another --keyring "
                              "service name, or keep a copy of the old key before storing with --overwrite")
        keyring.set_password(service, KEYRING_USER, token)
    except CryptoError:
        raise
    except Exception as e:  # noqa: BLE001 - as in read_token
        raise _failed(service, e, "store the key") from None
    return source(service)
