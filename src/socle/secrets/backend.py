"""The secrets backend interface, shared by the core (router, tokens, leases) and engines.

It mirrors Vault's logical request/response: the core authenticates, checks ACLs, routes a
request to the backend mounted at the longest matching prefix, and turns the backend's
:class:`Response` into Vault's JSON envelope (``request_id``, ``lease_id``, ``renewable``,
``lease_duration``, ``data``, ``wrap_info``, ``warnings``, ``auth``). A backend sees only
its own :class:`Storage` view (already behind the encryption barrier and prefixed with the
mount's UUID), never the raw state store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Operation(StrEnum):
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    LIST = "list"
    PATCH = "patch"


class SecretsError(Exception):
    """An error answered as Vault does: an HTTP status and ``{"errors": [...]}``."""

    def __init__(self, status: int, *errors: str) -> None:
        super().__init__("; ".join(errors) or f"HTTP {status}")
        self.status = status
        self.errors = list(errors)


@dataclass(frozen=True)
class TokenInfo:
    """The caller, as the core resolved it from ``X-Vault-Token``."""

    accessor: str
    policies: tuple[str, ...]
    display_name: str = ""
    entity_id: str = ""
    meta: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    operation: Operation
    path: str
    """Path below the mount point, without a leading slash (``data/db`` for ``secret/data/db``).
    For LIST it always ends with ``/`` (``metadata/app/``), as in Vault, except at the mount
    root where it is ``""``. For GET/LIST/DELETE the query parameters are also in ``data``."""
    mount_point: str
    """The mount's path with a trailing slash (``secret/``)."""
    data: dict[str, Any] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    token: TokenInfo | None = None


@dataclass
class Lease:
    """A secret with a lifetime; the core's lease manager tracks, renews and revokes it."""

    ttl: float
    renewable: bool = True
    max_ttl: float | None = None
    internal: dict[str, Any] = field(default_factory=dict)
    """Given back to :meth:`Backend.revoke`/:meth:`Backend.renew`; stored encrypted."""


@dataclass
class Response:
    data: dict[str, Any] | None = None
    status: int | None = None
    """Defaults to 200 with data, 204 without."""
    warnings: list[str] = field(default_factory=list)
    lease: Lease | None = None
    auth: dict[str, Any] | None = None
    """Set by auth methods on login; the core turns it into a new orphan token. Keys read:
    ``policies`` (or ``token_policies``), ``metadata``, ``display_name``, ``ttl``, ``max_ttl``
    (cap on renewals), ``explicit_max_ttl``, ``period``, ``num_uses``, ``renewable``,
    ``no_default_policy`` (durations as seconds or ``"1h"``)."""
    lease_duration: int | None = None
    """An advisory TTL in seconds without a lease (KV v1 reads: how long a client may cache
    the value); the core answers it as ``lease_duration`` and registers nothing."""
    raw_body: bytes | None = None
    """For endpoints that answer raw bytes (e.g. PKI ``ca/pem``); ``content_type`` applies."""
    content_type: str = "application/json"


@dataclass(frozen=True)
class MountInfo:
    """What a backend knows about where and how it is mounted (``sys/mounts`` entry)."""

    path: str
    """With a trailing slash: ``secret/``, ``auth/approle/``."""
    type: str
    uuid: str
    accessor: str
    description: str = ""
    options: dict[str, str] = field(default_factory=dict)
    default_lease_ttl: float = 0.0
    """0 means the system default (32 days, like Vault)."""
    max_lease_ttl: float = 0.0


class Storage(Protocol):
    """A backend's private, encrypted key space."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def list(self, prefix: str) -> list[str]:
        """Direct children of ``prefix``, Vault-style: folders end with ``/``."""
        ...


class Backend(Protocol):
    """A secrets engine or auth method mounted at a path.

    Optional, looked up with ``getattr`` by the core (not part of the protocol, so existing
    backends need nothing):

    * ``unauthenticated_paths: tuple[str, ...]``: paths (relative, exact or ending in ``*``)
      answered without a token, like Vault's ``PathsSpecial.Unauthenticated`` (AppRole:
      ``("login",)``);
    * ``sudo_paths: tuple[str, ...]``: paths that also need ``sudo`` (``PathsSpecial.Root``);
    * ``async def close(self) -> None``: called after the mount is removed.

    A status >= 400 with ``data`` is answered with the full envelope (KV v2 deleted
    versions); without ``data`` as ``{"errors": warnings}``.
    """

    async def handle(self, request: Request) -> Response: ...

    async def revoke(self, lease: Lease) -> None:
        """Undo what a leased secret granted (e.g. drop a database role)."""
        ...

    async def renew(self, lease: Lease, increment: float | None) -> Lease:
        """Extend a lease, within the backend's limits."""
        ...

    async def exists(self, request: Request) -> bool:
        """Whether the target of a write exists: the core asks before a write to choose
        between the ``create`` and ``update`` ACL capabilities, as Vault does."""
        ...


BackendFactory = Callable[[Storage, MountInfo], Awaitable[Backend]]
"""Builds a backend for a mount; registered by type name in :mod:`socle.secrets.registry`."""
