"""Shared types of the database engine: connections, roles, and the plugin interface.

A plugin is the part that knows one database's SQL and driver; the engine owns everything
else (paths, storage, leases, TTLs). New databases are one module implementing
:class:`DbPlugin` plus one entry in ``PLUGINS`` of :mod:`socle.secrets.engines.database`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


class DatabaseError(Exception):
    """The database refused or could not be reached; the message holds no secret."""


@dataclass
class ConnectionConfig:
    plugin_name: str
    connection_url: str
    username: str = ""
    password: str = ""
    allowed_roles: list[str] = field(default_factory=list)
    verify_connection: bool = True
    root_rotation_statements: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    """Other plugin settings (``max_open_connections``...) kept and shown as given."""
    pending_password: str = ""
    """A root password being rotated: set before the database changes, cleared after."""

    def allows(self, role: str) -> bool:
        return any(_glob_match(pattern, role) for pattern in self.allowed_roles)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ConnectionConfig:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _glob_match(pattern: str, value: str) -> bool:
    """Vault's ``StrListContainsGlob``: ``*`` matches anything, only as a prefix or suffix."""
    if pattern == "*" or pattern == value:
        return True
    if pattern.endswith("*") and value.startswith(pattern[:-1]):
        return True
    return pattern.startswith("*") and value.endswith(pattern[1:])


@dataclass
class DbRole:
    db_name: str
    creation_statements: list[str]
    revocation_statements: list[str] = field(default_factory=list)
    rollback_statements: list[str] = field(default_factory=list)
    renew_statements: list[str] = field(default_factory=list)
    default_ttl: float = 0.0
    max_ttl: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "db_name": self.db_name,
            "creation_statements": self.creation_statements,
            "revocation_statements": self.revocation_statements,
            "rollback_statements": self.rollback_statements,
            "renew_statements": self.renew_statements,
            "default_ttl": int(self.default_ttl),
            "max_ttl": int(self.max_ttl),
            "credential_type": "password",  # no credential_config: OpenBao omits it empty
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DbRole:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class DbPlugin(Protocol):
    """How the engine talks to one kind of database. Statements arrive unrendered."""

    async def verify(self, config: ConnectionConfig) -> None: ...

    async def create_user(
        self,
        config: ConnectionConfig,
        statements: Sequence[str],
        username: str,
        password: str,
        expiration: str,
    ) -> None: ...

    async def renew_user(
        self, config: ConnectionConfig, statements: Sequence[str], username: str, expiration: str
    ) -> None: ...

    async def revoke_user(
        self, config: ConnectionConfig, statements: Sequence[str], username: str
    ) -> None: ...

    async def rotate_root(
        self, config: ConnectionConfig, statements: Sequence[str], new_password: str
    ) -> None: ...
