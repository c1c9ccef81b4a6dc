"""The state store interface: a small key-value store with compare-and-swap.

Everything Socle keeps (app targets, revisions, runtime records, secrets ciphertext) lives
behind this protocol, so SQLite (embedded default), PostgreSQL and etcd are interchangeable
without touching the callers. Keys are ``/``-separated paths; values are bytes. Each key has a
version that grows on every write; writes may say which version they expect (``0`` = "must
not exist") and lose with :class:`~socle.errors.ConflictError` if another writer got there
first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def prefix_end(prefix: str) -> str | None:
    """The smallest string after every string that starts with ``prefix`` (None: no bound).

    With code-point ordering, the keys starting with ``prefix`` are exactly the half-open
    range ``[prefix, prefix_end(prefix))``: bump the last character that can be bumped and
    drop what follows it. Surrogates are skipped because no stored key can contain one.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < _MAX_CODE_POINT:
            bumped = last + 1
            if bumped in _SURROGATES:
                bumped = _SURROGATES.stop
            return "".join(chars) + chr(bumped)
    return None


@dataclass(frozen=True)
class Record:
    key: str
    value: bytes
    version: int


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    expect_version: int | None = None


@dataclass(frozen=True)
class Delete:
    key: str
    expect_version: int | None = None


Op = Put | Delete


class StateStore(Protocol):
    async def get(self, key: str) -> Record | None: ...

    async def scan(self, prefix: str) -> list[Record]:
        """Records whose key starts with ``prefix``, sorted by key."""
        ...

    async def keys(self, prefix: str) -> list[str]:
        """Keys that start with ``prefix``, sorted, without reading values."""
        ...

    async def put(self, key: str, value: bytes, *, expect_version: int | None = None) -> int:
        """Write and return the new version."""
        ...

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        """Remove; return whether the key existed."""
        ...

    async def commit(self, ops: Sequence[Op]) -> None:
        """Apply all ops atomically, or none of them (ConflictError on a version mismatch)."""
        ...

    async def close(self) -> None: ...
