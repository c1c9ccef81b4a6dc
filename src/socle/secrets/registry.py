"""Which backend types can be mounted: ``sys/mounts`` and ``sys/auth`` look types up here.

A new engine is one module plus one entry in :func:`default_registry`. The registry is an
object passed to the core, not a global, so tests can mount their own backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from socle.secrets.backend import BackendFactory
from socle.secrets.core import approle
from socle.secrets.engines import database, kv, pki, transit


@dataclass
class BackendRegistry:
    secrets: dict[str, BackendFactory] = field(default_factory=dict)
    """Secrets engines by type (``kv``, ``transit``, ``pki``, ``database``)."""
    auth: dict[str, BackendFactory] = field(default_factory=dict)
    """Auth methods by type (``approle``); ``token`` is built into the core."""


def default_registry() -> BackendRegistry:
    """Every backend Socle ships. Engines add their line here."""
    registry = BackendRegistry()
    registry.secrets["kv"] = kv.kv_factory
    registry.secrets["transit"] = transit.transit_factory
    registry.secrets["pki"] = pki.pki_factory
    registry.secrets["database"] = database.database_factory
    registry.auth["approle"] = approle.factory
    return registry
