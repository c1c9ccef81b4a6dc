"""Basic auth in front of the embedded Prometheus and Alertmanager (``--web.config.file``).

Both listen on loopback, and every app sandbox shares the host's network: without a
password any app could read every metric, silence alerts, post alerts that Alertmanager
relays to Socle's webhook, or stop Prometheus (``/-/quit``). Each daemon gets a random
password, rotated at every start, kept in an owner-only file (Socle reads it; Prometheus
reads Alertmanager's as its ``password_file``), and a web config holding only its bcrypt
hash, the one hash the Prometheus exporter-toolkit accepts.

The hash comes from the system's libxcrypt (the library behind Python's deprecated
``crypt`` module, already on every Debian host), called through ctypes: no new dependency.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from socle.errors import ObserveError
from socle.fs import write_private

USER = "socle"
BCRYPT_ROUNDS = 10
"""libxcrypt's cost: the daemons cache a verified password, so only the first request of a
connection pays it."""
_lock = threading.Lock()
"""``crypt`` answers in a static buffer: one caller at a time."""


@functools.cache
def _libcrypt() -> ctypes.CDLL:
    name = ctypes.util.find_library("crypt")
    if name is None:
        raise ObserveError(
            "libcrypt is not installed: cannot protect Prometheus and Alertmanager",
            hint="apt-get install libcrypt1",
        )
    lib = ctypes.CDLL(name)
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.crypt.restype = ctypes.c_char_p
    return lib


def bcrypt_hash(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """``$2b$`` bcrypt of ``password`` with a fresh salt (blocking: call it in a thread)."""
    lib = _libcrypt()
    with _lock:
        setting = lib.crypt_gensalt(b"$2b$", rounds, None, 0)
        hashed = lib.crypt(password.encode(), setting) if setting else None
    text = hashed.decode() if hashed else ""
    if not text.startswith("$2b$"):  # libxcrypt answers "*0"/"*1" on failure
        raise ObserveError("libcrypt could not make a bcrypt hash")
    return text


def bcrypt_check(password: str, hashed: str) -> bool:
    """Whether ``password`` matches ``hashed`` (for tests and checks)."""
    lib = _libcrypt()
    with _lock:
        again = lib.crypt(password.encode(), hashed.encode())
    return bool(again) and secrets.compare_digest(again, hashed.encode())


@dataclass(frozen=True)
class WebAuth:
    """One daemon's credentials: where they are, and the pair for Socle's own client."""

    config_file: Path
    """The ``--web.config.file`` (the hash only)."""
    password_file: Path
    """The password itself, owner-only (for ``password_file`` in Prometheus' config)."""
    password: str

    @property
    def pair(self) -> tuple[str, str]:
        return USER, self.password


def write_web_auth(folder: Path) -> WebAuth:
    """A new password for the daemon in ``folder`` and its web config (blocking)."""
    password = secrets.token_urlsafe(32)
    auth = WebAuth(folder / "web.yml", folder / "web.password", password)
    write_private(auth.password_file, password)
    config = {"basic_auth_users": {USER: bcrypt_hash(password)}}
    write_private(auth.config_file, yaml.safe_dump(config))
    return auth


__all__ = ["USER", "WebAuth", "bcrypt_check", "bcrypt_hash", "write_web_auth"]
