"""The mount tables (``sys/mounts`` and ``sys/auth``): what is mounted where.

Both tables live behind the barrier (``core/mounts``, ``core/auth``). Each mount has a UUID
and its own storage view, ``logical/<uuid>/`` or ``auth/<uuid>/``, so unmounting removes
exactly its data and remounting at the same path starts empty. Built-in backends (``sys``,
the token store, cubbyhole) are rows like any other but are instances owned by the core.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from socle.secrets.backend import BackendFactory, SecretsError
from socle.secrets.core.barrier import Barrier, StorageView
from socle.secrets.core.fields import check_mount_ttls
from socle.secrets.core.paths import check_path
from socle.secrets.core.router import MountEntry, Router, dumps_table, loads_table

if TYPE_CHECKING:
    from socle.secrets.registry import BackendRegistry

log = logging.getLogger("socle.secrets")

TABLE_KEYS = {"mounts": "core/mounts", "auth": "core/auth"}
BUILTIN_TYPES = {"system", "token", "cubbyhole"}
_RESERVED = ("sys/", "auth/", "cubbyhole/", "identity/", "traces/")
"""``traces/`` too: ``/v1/traces`` is the OTLP/HTTP receiver on the same listener."""
TYPE_ALIASES = {"kv-v2": ("kv", {"version": "2"}), "kv-v1": ("kv", {"version": "1"})}


def _accessor(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def normalise_mount_path(path: str) -> str:
    path = path.strip("/")
    if not path:
        raise SecretsError(400, "a mount path is required")
    check_path(path)
    return path + "/"


class MountManager:
    def __init__(
        self,
        barrier: Barrier,
        registry: BackendRegistry,
        router: Router,
        builtins: dict[str, Any],
    ) -> None:
        self._barrier = barrier
        self._registry = registry
        self._router = router
        self._builtins = builtins
        self._tables: dict[str, list[MountEntry]] = {"mounts": [], "auth": []}
        self._lock = asyncio.Lock()
        self.on_unmount: Callable[[MountEntry], Awaitable[None]] | None = None
        self.on_remount: Callable[[str, str], Awaitable[None]] | None = None
        """Set by the core: moves the leases of a remounted path (source, target)."""

    # -- lifecycle ----------------------------------------------------------------------

    async def setup(self, *, dev: bool) -> None:
        """First initialisation: the built-in mounts, plus ``secret/`` (KV v2) in dev mode."""
        self._tables = {
            "mounts": [
                MountEntry(
                    "mounts",
                    "cubbyhole/",
                    "cubbyhole",
                    str(uuid.uuid4()),
                    _accessor("cubbyhole"),
                    "per-token private secret storage",
                ),
                MountEntry(
                    "mounts",
                    "sys/",
                    "system",
                    str(uuid.uuid4()),
                    _accessor("system"),
                    "system endpoints used for control, policy and debugging",
                ),
            ],
            "auth": [
                MountEntry(
                    "auth",
                    "auth/token/",
                    "token",
                    str(uuid.uuid4()),
                    _accessor("auth_token"),
                    "token based credentials",
                ),
            ],
        }
        if dev and "kv" in self._registry.secrets:
            self._tables["mounts"].append(
                MountEntry(
                    "mounts",
                    "secret/",
                    "kv",
                    str(uuid.uuid4()),
                    _accessor("kv"),
                    "key/value secret storage",
                    {"version": "2"},
                )
            )
        for table in self._tables:
            await self._save(table)

    async def load(self) -> None:
        for table, key in TABLE_KEYS.items():
            self._tables[table] = loads_table(await self._barrier.get(key))
            for entry in self._tables[table]:
                try:
                    await self._attach(entry)
                except Exception:
                    log.exception(
                        "could not mount %s (type %s); it stays unrouted", entry.path, entry.type
                    )

    async def _save(self, table: str) -> None:
        await self._barrier.put(TABLE_KEYS[table], dumps_table(self._tables[table]))

    def _factory(self, entry: MountEntry) -> BackendFactory:
        source = self._registry.auth if entry.table == "auth" else self._registry.secrets
        factory = source.get(entry.type)
        if factory is None:
            raise SecretsError(400, f"plugin not found in the catalog: {entry.type}")
        return factory

    async def _attach(self, entry: MountEntry) -> None:
        if entry.type in BUILTIN_TYPES:
            self._router.add(entry, self._builtins[entry.type])
            return
        storage = StorageView(self._barrier, entry.storage_prefix())
        backend = await self._factory(entry)(storage, entry.info())
        self._router.add(entry, backend)

    # -- queries ------------------------------------------------------------------------

    def entries(self, table: str) -> list[MountEntry]:
        return sorted(self._tables[table], key=lambda e: e.path)

    def find(self, table: str, path: str) -> MountEntry | None:
        return next((e for e in self._tables[table] if e.path == path), None)

    # -- changes ------------------------------------------------------------------------

    async def mount(
        self,
        table: str,
        path: str,
        type_: str,
        *,
        description: str = "",
        options: dict[str, str] | None = None,
        default_lease_ttl: int = 0,
        max_lease_ttl: int = 0,
        local: bool = False,
        seal_wrap: bool = False,
        listing_visibility: str = "",
    ) -> MountEntry:
        path = normalise_mount_path(path)
        options = dict(options or {})
        if type_ in TYPE_ALIASES:
            type_, extra = TYPE_ALIASES[type_]
            options = {**options, **extra}
        if table == "auth":
            if type_ == "token":
                raise SecretsError(400, "the token auth method is built in and cannot be enabled")
            full = "auth/" + path
        else:
            if path.startswith(_RESERVED) or path in ("sys/", "auth/"):
                raise SecretsError(400, f"cannot mount under reserved path {path!r}")
            full = path
        if type_ in BUILTIN_TYPES:
            raise SecretsError(400, f"cannot mount another {type_!r} backend")
        check_mount_ttls(default_lease_ttl, max_lease_ttl)
        async with self._lock:
            existing = self._router.conflict(full)
            if existing is not None:
                raise SecretsError(400, f"path is already in use at {existing}")
            entry = MountEntry(
                table,
                full,
                type_,
                str(uuid.uuid4()),
                _accessor(("auth_" if table == "auth" else "") + type_),
                description,
                options,
                default_lease_ttl,
                max_lease_ttl,
                local,
                seal_wrap,
                listing_visibility,
            )
            self._factory(entry)  # unknown type: refuse before anything changes
            await self._attach(entry)
            self._tables[table].append(entry)
            try:
                await self._save(table)
            except BaseException:
                self._tables[table].remove(entry)
                self._router.remove(full)
                raise
        return entry

    async def unmount(self, table: str, path: str) -> bool:
        path = normalise_mount_path(path)
        full = "auth/" + path if table == "auth" else path
        async with self._lock:
            entry = self.find(table, full)
            if entry is None:
                return False
            if entry.type in BUILTIN_TYPES:
                raise SecretsError(400, f"cannot unmount {full!r}: it is built in")
            if self.on_unmount is not None:
                await self.on_unmount(entry)
            mounted = self._router.remove(full)
            self._tables[table].remove(entry)
            await self._save(table)
            await StorageView(self._barrier, entry.storage_prefix()).clear()
            close = getattr(mounted.backend if mounted else None, "close", None)
            if close is not None:
                await close()
        return True

    async def remount(self, source: str, target: str) -> tuple[MountEntry, MountEntry]:
        """Move a mount to another path (``sys/remount``, ``secrets move``); returns (old
        entry, new entry). Paths are full API paths (``auth/x/`` for auth methods).

        Only the mount table row changes: storage is keyed by the mount's UUID, so the data
        goes with it without a copy, and the backend is rebuilt with its new
        :class:`MountInfo`. ``on_remount`` (set by the core) then moves the leases. ACL
        policies are path rules: from here on the target path's rules apply, the source
        path's do not. On failure nothing changes.
        """
        source, target = normalise_mount_path(source), normalise_mount_path(target)
        async with self._lock:
            mounted = self._router.get(source)
            table = "auth" if source.startswith("auth/") else "mounts"
            entry = self.find(table, source)
            if mounted is None or entry is None:
                raise SecretsError(400, f'no matching mount at "{source}"')
            if entry.type in BUILTIN_TYPES:
                raise SecretsError(400, f'cannot remount "{source}"')
            if table == "auth" and not target.startswith("auth/"):
                raise SecretsError(400, f'cannot remount auth mount to non-auth mount "{target}"')
            if table == "mounts" and target.startswith("auth/"):
                raise SecretsError(400, f'cannot remount non-auth mount to auth mount "{target}"')
            if table == "mounts" and target.startswith(_RESERVED):
                raise SecretsError(400, f"cannot remount to destination {target}")
            if table == "auth" and target == "auth/":
                raise SecretsError(400, f"cannot remount to destination {target}")
            existing = self._router.conflict(target)
            if existing is not None and existing != source:
                raise SecretsError(400, f'path already in use at "{existing}"')
            if existing == source:
                raise SecretsError(400, f'path already in use at "{source}"')
            moved = dataclasses.replace(entry, path=target)
            self._router.remove(source)
            try:
                await self._attach(moved)
            except BaseException:
                self._router.add(entry, mounted.backend)
                raise
            rows = self._tables[table]
            rows[rows.index(entry)] = moved
            try:
                await self._save(table)
            except BaseException:
                rows[rows.index(moved)] = entry
                self._router.remove(target)
                self._router.add(entry, mounted.backend)
                raise
        close = getattr(mounted.backend, "close", None)
        if close is not None:
            await close()
        if self.on_remount is not None:
            await self.on_remount(source, target)
        return entry, moved

    async def tune(self, entry: MountEntry, changes: dict[str, Any]) -> MountEntry:
        """Change description, lease TTLs or options; the backend is rebuilt with the new
        :class:`MountInfo` so it sees them (its storage is untouched). On failure nothing
        changes."""
        async with self._lock:
            tuned = dataclasses.replace(entry, **changes)
            if tuned.type not in BUILTIN_TYPES:
                old = self._router.remove(entry.path)
                try:
                    await self._attach(tuned)
                except BaseException:
                    if old is not None:
                        self._router.add(entry, old.backend)
                    raise
            else:
                mounted = self._router.remove(entry.path)
                assert mounted is not None
                self._router.add(tuned, mounted.backend)
            table = self._tables[entry.table]
            table[table.index(entry)] = tuned
            await self._save(entry.table)
        return tuned
