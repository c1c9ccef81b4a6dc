"""Longest-prefix routing from an API path to the backend mounted there.

Mount paths end with ``/`` and may span several segments (``auth/approle/``, ``team/kv/``).
A lookup tries the path's own prefixes from the longest down, one dict probe per segment,
so routing cost grows with the depth of the path, not with the number of mounts.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

from socle import __version__
from socle.secrets.backend import MountInfo

DEFAULT_TOKEN_TYPE = "default-service"  # noqa: S105 - a token kind, not a secret
"""What every auth mount issues unless tuned (Vault's ``token_type``)."""

_CORE_TYPES = frozenset({"system", "token", "cubbyhole", "identity"})
"""Built into the server, not plugins: Vault gives them no deprecation status."""


@dataclass
class MountEntry:
    """One row of the mount table (``sys/mounts`` or ``sys/auth``), persisted as JSON."""

    table: str
    """``mounts`` or ``auth``."""
    path: str
    """Full API path with a trailing slash: ``secret/``, ``auth/approle/``."""
    type: str
    uuid: str
    accessor: str
    description: str = ""
    options: dict[str, str] = field(default_factory=dict)
    default_lease_ttl: int = 0
    max_lease_ttl: int = 0
    local: bool = False
    seal_wrap: bool = False
    listing_visibility: str = ""
    """``unauth`` lists the mount in the UI to anonymous callers; empty: hidden."""

    def info(self) -> MountInfo:
        return MountInfo(
            path=self.path,
            type=self.type,
            uuid=self.uuid,
            accessor=self.accessor,
            description=self.description,
            options=dict(self.options),
            default_lease_ttl=float(self.default_lease_ttl),
            max_lease_ttl=float(self.max_lease_ttl),
        )

    def storage_prefix(self) -> str:
        return ("auth/" if self.table == "auth" else "logical/") + self.uuid + "/"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MountEntry:
        return cls(**raw)

    def describe(self) -> dict[str, Any]:
        """One entry of the ``sys/mounts`` / ``sys/auth`` listing, in Vault's shape."""
        config: dict[str, Any] = {
            "default_lease_ttl": self.default_lease_ttl,
            "force_no_cache": False,
            "max_lease_ttl": self.max_lease_ttl,
        }
        if self.listing_visibility:
            config["listing_visibility"] = self.listing_visibility
        if self.type == "system":
            config["passthrough_request_headers"] = ["Accept"]
        if self.table == "auth":
            config["token_type"] = DEFAULT_TOKEN_TYPE
        described = {
            "accessor": self.accessor,
            "config": config,
            "description": self.description,
            "external_entropy_access": False,
            "local": self.local or self.type == "cubbyhole",  # per-node by nature
            "options": dict(self.options) or None,
            "plugin_version": "",
            "running_plugin_version": f"v{__version__}+builtin.socle",
            "running_sha256": "",
            # The system backend's storage is always seal-wrapped in Vault.
            "seal_wrap": self.seal_wrap or self.type == "system",
            "type": self.type,
            "uuid": self.uuid,
        }
        if self.type not in _CORE_TYPES:
            described["deprecation_status"] = "supported"
        return described


def dumps_table(entries: list[MountEntry]) -> bytes:
    return json.dumps([e.to_dict() for e in entries]).encode()


def loads_table(raw: bytes | None) -> list[MountEntry]:
    return [] if raw is None else [MountEntry.from_dict(r) for r in json.loads(raw)]


class PathMatcher:
    """Vault's ``PathsSpecial`` syntax: exact paths, or a prefix ending in ``*``."""

    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self._exact = frozenset(p for p in patterns if not p.endswith("*") and "+" not in p)
        self._prefixes = tuple(p[:-1] for p in patterns if p.endswith("*") and "+" not in p)
        self._globs = tuple(p for p in patterns if "+" in p)

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes or self._globs)

    def match(self, path: str) -> bool:
        if path in self._exact or path.startswith(self._prefixes):
            return True
        return any(fnmatch.fnmatchcase(path, g.replace("+", "[!/]*")) for g in self._globs)


@dataclass
class Mounted:
    entry: MountEntry
    backend: Any
    unauthenticated: PathMatcher
    sudo: PathMatcher
    core: bool
    """A built-in backend (``handle_core``), decided once at mount time."""


class Router:
    def __init__(self) -> None:
        self._mounts: dict[str, Mounted] = {}
        self._by_uuid: dict[str, Mounted] = {}

    def add(self, entry: MountEntry, backend: Any) -> Mounted:
        mounted = Mounted(
            entry,
            backend,
            PathMatcher(tuple(getattr(backend, "unauthenticated_paths", ()))),
            PathMatcher(tuple(getattr(backend, "sudo_paths", ()))),
            callable(getattr(backend, "handle_core", None)),
        )
        self._mounts[entry.path] = mounted
        self._by_uuid[entry.uuid] = mounted
        return mounted

    def remove(self, path: str) -> Mounted | None:
        mounted = self._mounts.pop(path, None)
        if mounted is not None:
            self._by_uuid.pop(mounted.entry.uuid, None)
        return mounted

    def get(self, path: str) -> Mounted | None:
        return self._mounts.get(path)

    def by_uuid(self, uuid: str) -> Mounted | None:
        return self._by_uuid.get(uuid)

    def mounts(self) -> list[Mounted]:
        return sorted(self._mounts.values(), key=lambda m: m.entry.path)

    def match(self, path: str) -> tuple[Mounted, str] | None:
        """The mount with the longest prefix of ``path``, and the path relative to it."""
        candidate = path if path.endswith("/") else path + "/"
        end = len(candidate)
        while end > 0:
            mounted = self._mounts.get(candidate[:end])
            if mounted is not None:
                return mounted, path[len(mounted.entry.path) :]
            end = candidate.rfind("/", 0, end - 1) + 1
        return None

    def conflict(self, path: str) -> str | None:
        """An existing mount that would overlap ``path`` (either is a prefix of the other)."""
        for existing in self._mounts:
            if existing.startswith(path) or path.startswith(existing):
                return existing
        return None
