"""The leader lease: at most one control plane acts on a shared state store.

A store that several control planes can open (PostgreSQL) comes with a lease; the embedded
SQLite store does not need one, because the server's flock on its home already keeps a
second control plane out (see :mod:`socle.fs`).

The contract, for every backend:

- :meth:`LeaderLease.acquire` takes the lease or, with ``wait=False``, raises
  :class:`~socle.errors.LeaseHeld` naming the holder (host, pid, address) that
  :meth:`acquire` recorded; with ``wait=True`` it retries until it gets the lease (standby).
- The lease dies with its holder: a killed control plane frees it without anyone's help.
- :meth:`LeaderLease.check` says whether the lease is still held. The holder calls it
  periodically and **stops acting** (fences itself) as soon as it is not, because the store
  may already have another leader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Holder:
    """Who holds (or asks for) the lease: enough for an operator to find it."""

    host: str
    pid: int
    address: str
    home: str

    def to_dict(self) -> dict[str, object]:
        return {"host": self.host, "pid": self.pid, "address": self.address, "home": self.home}

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} (API {self.address}, home {self.home})"


class LeaderLease(Protocol):
    async def acquire(self, *, wait: bool, retry_seconds: float = 1.0) -> None:
        """Take the lease; ``wait=False``: raise LeaseHeld at once if someone holds it."""
        ...

    async def check(self) -> bool:
        """True while this process still holds the lease (False, never raise, if unsure)."""
        ...

    async def holder(self) -> Holder | None:
        """The recorded holder (None if nobody recorded one)."""
        ...

    async def release(self) -> None:
        """Give the lease up (idempotent)."""
        ...


__all__ = ["Holder", "LeaderLease"]
