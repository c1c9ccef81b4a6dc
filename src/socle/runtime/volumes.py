"""The volume provider interface: persistent folders for apps that outlive releases.

A ``Volume`` manifest asks for a named folder of a given size; the engine's Volume handler
asks a provider to make it exist, and the runtime binds it into the instances of the apps
that mount it (:class:`~socle.runtime.driver.Mount`). The data belongs to the volume, not to
a release: code changes, rollbacks, restarts and control-plane crashes never touch it.

The local provider keeps each volume under ``SOCLE_HOME/volumes/<name>/``; other providers
(a node agent, Kubernetes PVCs) implement the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class VolumeInfo:
    """What a provider can say about one volume, for ``socle volume list|show``."""

    name: str
    path: Path
    """The host folder to bind into instances (the volume's data root)."""
    size_bytes: int
    """The size asked for."""
    used_bytes: int
    enforced: bool
    """Whether writes beyond ``size_bytes`` fail (a real limit), or usage is only reported."""
    warning: str | None = None
    """Said to the user when the size is not enforced, or usage is above the size."""
    retained: bool = False
    """Kept after its manifest was deleted (``retain: true``), until a purge."""

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "used_bytes": self.used_bytes,
            "enforced": self.enforced,
            "warning": self.warning,
            "retained": self.retained,
        }


class VolumeProvider(Protocol):
    """Creates, measures and removes volumes. Methods are safe to call from the event loop."""

    async def ensure(self, name: str, size_bytes: int) -> VolumeInfo:
        """Make the volume exist with at least ``size_bytes`` (idempotent; existing data is
        kept; growing is allowed, shrinking below the data in use is refused). A retained
        volume that is declared again is taken back with its data."""
        ...

    async def info(self, name: str) -> VolumeInfo | None:
        """The volume's state and usage, or None if it does not exist."""
        ...

    async def list(self) -> list[VolumeInfo]:
        """Every volume of this home, retained ones included, sorted by name."""
        ...

    async def release(self, name: str, *, purge: bool) -> None:
        """The manifest is gone: keep the data marked as retained (``purge=False``), or
        delete it for good (``purge=True``). Idempotent; unknown names are ignored."""
        ...
