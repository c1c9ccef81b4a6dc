"""KV version 2: versioned secrets with check-and-set, soft delete, undelete and destroy.

Paths and JSON shapes follow Vault's ``kv-v2`` API so that ``hvac``'s ``secrets.kv.v2`` and
the ``vault kv`` CLI work unchanged:

    config                      engine-wide max_versions / cas_required / delete_version_after
    data/<path>                 read (?version=N), write ({"data", "options": {"cas"}}),
                                patch (JSON merge patch), delete (soft-deletes the latest)
    metadata/<path>             read, list (folders end in "/"), write, patch, delete (all)
    delete|undelete|destroy/<p> {"versions": [...]}
    subkeys/<path>              key structure without values

Storage layout (the core encrypts every value): ``config``, ``meta/<path>`` (one JSON
document per secret: the version table) and ``ver/<sha256(path)>/<n>`` (the data of one
version). Hashing the path keeps version data out of the listing namespace, so a secret
called ``a/1`` can never collide with version 1 of ``a``.

Reads keep the parsed version tables of recently read secrets (and their formatted
``metadata`` blocks) in memory, so a hot read decrypts and parses only the version data;
secret *values* are never cached here (they stay ciphertext in the barrier's cache). Every
write goes through this class, which drops the path's table after writing, and a read that
raced a write does not keep what it loaded (a generation counter), so a read never sees a
table older than the last completed write.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from socle.secrets.backend import Lease, MountInfo, Request, Response, SecretsError, Storage
from socle.secrets.engines._framework import (
    Clock,
    KeyLocks,
    Params,
    Route,
    RoutedBackend,
    Router,
    get_json,
    handlers,
    json_bytes,
    list_response,
    put_json,
    system_clock,
)
from socle.secrets.engines._kv_model import (
    EngineConfig,
    KeyMeta,
    VersionMeta,
    merge_patch,
    subkeys,
    validate_custom_metadata,
)
from socle.secrets.engines._params import (
    bad_input,
    get_bool,
    get_duration,
    get_int,
    get_int_list,
    get_map,
    get_str_map,
    merged,
    to_int,
)

INVALID_V2_PATH = (
    "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate "
    "API endpoints to use. If using the Vault CLI, use 'vault kv get' for this operation."
)
CAS_MANDATED_WARNING = (
    '"cas_required" set to false, but is mandated by backend config. This value will be ignored.'
)
READ_CACHE_ENTRIES = 10_000


@dataclass
class _ReadView:
    """A secret's version table as the read paths use it: never mutated once cached."""

    meta: KeyMeta
    data_prefix: str
    """Where the versions' data live: ``ver/<sha256(path)>/``."""
    summaries: dict[int, dict[str, Any]] = field(default_factory=dict)

    def summary(self, number: int, entry: VersionMeta) -> dict[str, Any]:
        """:meth:`KeyMeta.version_summary`, formatted once, handed out as a copy."""
        cached = self.summaries.get(number)
        if cached is None:
            cached = self.summaries[number] = self.meta.version_summary(number, entry)
        summary = dict(cached)
        if summary["custom_metadata"] is not None:
            summary["custom_metadata"] = dict(summary["custom_metadata"])
        return summary


class KVv2Backend(RoutedBackend):
    """One mounted KV v2 engine."""

    def __init__(self, storage: Storage, mount: MountInfo, clock: Clock = system_clock) -> None:
        self._storage = storage
        self._mount = mount
        self._clock = clock
        self._locks = KeyLocks()
        self._views: OrderedDict[str, _ReadView] = OrderedDict()
        self._generation = 0
        """Bumped by every write, so that a read racing it does not cache a stale table."""
        self._router = Router(
            [
                Route("config", handlers(read=self._config_read, write=self._config_write)),
                Route(
                    r"data/(?P<path>.*[^/])",
                    handlers(
                        read=self._data_read,
                        write=self._data_write,
                        delete=self._data_delete,
                        patch=self._data_patch,
                    ),
                    exists=self._meta_exists,
                ),
                Route(
                    r"metadata/(?P<path>.*)",
                    handlers(
                        read=self._meta_read,
                        write=self._meta_write,
                        delete=self._meta_delete,
                        list_=self._meta_list,
                        patch=self._meta_patch,
                    ),
                    exists=self._meta_exists,
                ),
                Route(r"delete/(?P<path>.*)", handlers(write=self._versions_delete)),
                Route(r"undelete/(?P<path>.*)", handlers(write=self._versions_undelete)),
                Route(r"destroy/(?P<path>.*)", handlers(write=self._versions_destroy)),
                Route(r"subkeys/(?P<path>.*[^/])", handlers(read=self._subkeys_read)),
            ],
            not_found=INVALID_V2_PATH,
        )

    # -- Backend protocol -------------------------------------------------------------

    async def revoke(self, lease: Lease) -> None:
        """KV hands out no leases; nothing to undo."""

    async def renew(self, lease: Lease, increment: float | None) -> Lease:
        raise SecretsError(400, "KV secrets are not renewable")

    # -- storage helpers --------------------------------------------------------------

    @staticmethod
    def _data_prefix(path: str) -> str:
        return f"ver/{hashlib.sha256(path.encode('utf-8', 'surrogatepass')).hexdigest()}/"

    @classmethod
    def _version_key(cls, path: str, number: int) -> str:
        return f"{cls._data_prefix(path)}{number}"

    async def _config(self) -> EngineConfig:
        return EngineConfig.from_json(await get_json(self._storage, "config"))

    async def _load_meta(self, path: str) -> KeyMeta | None:
        """A fresh copy of the version table from storage, for writers to change."""
        raw = await get_json(self._storage, "meta/" + path)
        return KeyMeta.from_json(raw) if raw is not None else None

    async def _view(self, path: str) -> _ReadView | None:
        """The version table for reading (shared: never change it)."""
        view = self._views.get(path)
        if view is not None:
            self._views.move_to_end(path)
            return view
        generation = self._generation
        meta = await self._load_meta(path)
        if meta is None:
            return None
        view = _ReadView(meta, self._data_prefix(path))
        if generation == self._generation:  # no write completed while we were loading
            self._views[path] = view
            if len(self._views) > READ_CACHE_ENTRIES:
                self._views.popitem(last=False)
        return view

    def _forget(self, path: str) -> None:
        self._generation += 1
        self._views.pop(path, None)

    async def _save_meta(self, meta: KeyMeta) -> None:
        try:
            await put_json(self._storage, "meta/" + meta.path, meta.to_json())
        finally:
            self._forget(meta.path)

    async def _meta_exists(self, request: Request, params: Params) -> bool:
        return await self._storage.get("meta/" + params.get("path", "")) is not None

    # -- config -----------------------------------------------------------------------

    async def _config_read(self, request: Request, params: Params) -> Response:
        return Response(data=(await self._config()).describe())

    async def _config_write(self, request: Request, params: Params) -> Response:
        data = request.data
        config = await self._config()
        if "max_versions" in data:
            config.max_versions = _non_negative(data, "max_versions")
        if "cas_required" in data:
            config.cas_required = get_bool(data, "cas_required")
        if "delete_version_after" in data:
            config.delete_version_after = get_duration(data, "delete_version_after")
        await put_json(self._storage, "config", config.to_json())
        return Response()

    # -- data -------------------------------------------------------------------------

    async def _data_read(self, request: Request, params: Params) -> Response:
        path = params["path"]
        version = get_int(merged(request), "version")
        view = await self._view(path)
        if view is None:
            raise SecretsError(404)
        number = version if version > 0 else view.meta.current_version
        entry = view.meta.versions.get(number)
        if entry is None:
            raise SecretsError(404)
        body: dict[str, Any] = {"data": None, "metadata": view.summary(number, entry)}
        if entry.destroyed or entry.is_deleted(self._clock()):
            # Vault answers 404 *with* the metadata so clients can tell deleted from absent.
            return Response(data=body, status=404)
        stored = await get_json(self._storage, f"{view.data_prefix}{number}")
        if stored is None:
            raise SecretsError(500, "could not find version data")
        body["data"] = stored
        return Response(data=body)

    async def _data_write(self, request: Request, params: Params) -> Response:
        path = params["path"]
        secret = request.data.get("data")
        if secret is None:
            raise SecretsError(400, "no data provided")
        if not isinstance(secret, dict):
            raise bad_input("data", secret, "expected a map")
        options = get_map(request.data, "options") or {}
        config = await self._config()
        async with self._locks.hold(path):
            now = self._clock()
            meta = await self._load_meta(path) or KeyMeta(path=path, created_ns=now, updated_ns=now)
            _check_cas(options, config, meta)
            return await self._append_version(meta, secret, config, now)

    async def _append_version(
        self, meta: KeyMeta, secret: dict[str, Any], config: EngineConfig, now: int
    ) -> Response:
        if meta.current_version == 0:
            meta.created_ns = now
        entry, trimmed = meta.add_version(now, config)
        data_key = self._version_key(meta.path, meta.current_version)
        put_many = getattr(self._storage, "put_many", None)
        if put_many is not None:
            # Data, version table and trimmed versions in one atomic commit: all or nothing,
            # and one durable flush per write instead of one per key.
            try:
                await put_many(
                    {data_key: json_bytes(secret), "meta/" + meta.path: json_bytes(meta.to_json())},
                    [self._version_key(meta.path, number) for number in trimmed],
                )
            finally:
                self._forget(meta.path)
            return Response(data=meta.version_summary(meta.current_version, entry))
        # Data first, then the version table: a crash in between leaves an unreachable
        # blob, never a version that points at nothing.
        await put_json(self._storage, data_key, secret)
        await self._save_meta(meta)
        for number in trimmed:
            await self._storage.delete(self._version_key(meta.path, number))
        return Response(data=meta.version_summary(meta.current_version, entry))

    async def _data_delete(self, request: Request, params: Params) -> Response:
        path = params["path"]
        async with self._locks.hold(path):
            meta = await self._load_meta(path)
            if meta is None:
                return Response()
            latest = meta.versions.get(meta.current_version)
            now = self._clock()
            if latest is None or latest.destroyed or latest.is_deleted(now):
                return Response()
            latest.deletion_ns = now
            await self._save_meta(meta)
        return Response()

    async def _data_patch(self, request: Request, params: Params) -> Response:
        path = params["path"]
        patch = request.data.get("data")
        if patch is None:
            raise SecretsError(400, "no data provided")
        if not isinstance(patch, dict):
            raise bad_input("data", patch, "expected a map")
        options = get_map(request.data, "options") or {}
        config = await self._config()
        async with self._locks.hold(path):
            meta = await self._load_meta(path)
            if meta is None:
                raise SecretsError(404)
            _check_cas(options, config, meta)
            entry = meta.versions.get(meta.current_version)
            if entry is None:
                raise SecretsError(404)
            now = self._clock()
            if entry.destroyed or entry.is_deleted(now):
                return Response(data=meta.version_summary(meta.current_version, entry), status=404)
            current = await get_json(self._storage, self._version_key(path, meta.current_version))
            if current is None:
                raise SecretsError(500, "could not find version data")
            return await self._append_version(meta, merge_patch(current, patch), config, now)

    # -- metadata ---------------------------------------------------------------------

    async def _meta_read(self, request: Request, params: Params) -> Response:
        view = await self._view(params["path"])
        if view is None:
            raise SecretsError(404)
        return Response(data=view.meta.describe())

    async def _meta_list(self, request: Request, params: Params) -> Response:
        folder = params["path"]
        if folder and not folder.endswith("/"):
            folder += "/"
        return list_response(await self._storage.list("meta/" + folder))

    async def _meta_write(self, request: Request, params: Params) -> Response:
        path = params["path"]
        if not path:
            raise SecretsError(400, "missing path")
        data = request.data
        fields = ("max_versions", "cas_required", "delete_version_after", "custom_metadata")
        if not any(name in data for name in fields):
            return Response()
        custom = _custom_metadata(data) if "custom_metadata" in data else None
        config = await self._config()
        warnings = _cas_warning(data, config)
        async with self._locks.hold(path):
            now = self._clock()
            meta = await self._load_meta(path) or KeyMeta(path=path, created_ns=now, updated_ns=now)
            _apply_settings(meta, data)
            if custom is not None:
                meta.custom_metadata = custom
            meta.current_metadata_version += 1
            await self._save_meta(meta)
        return Response(warnings=warnings, status=200 if warnings else None)

    async def _meta_patch(self, request: Request, params: Params) -> Response:
        path = params["path"]
        if not path:
            raise SecretsError(400, "missing path")
        data = request.data
        custom_patch = get_map(data, "custom_metadata")
        config = await self._config()
        async with self._locks.hold(path):
            meta = await self._load_meta(path)
            if meta is None:
                raise SecretsError(404)
            warnings = _cas_warning(data, config)
            _apply_settings(meta, data)
            if custom_patch is not None:
                patched = merge_patch(meta.custom_metadata or {}, custom_patch)
                meta.custom_metadata = _custom_metadata({"custom_metadata": patched})
            meta.current_metadata_version += 1
            await self._save_meta(meta)
        return Response(warnings=warnings, status=200 if warnings else None)

    async def _meta_delete(self, request: Request, params: Params) -> Response:
        path = params["path"]
        async with self._locks.hold(path):
            meta = await self._load_meta(path)
            if meta is None:
                return Response()
            for number in meta.versions:
                await self._storage.delete(self._version_key(path, number))
            try:
                await self._storage.delete("meta/" + path)
            finally:
                self._forget(path)
        return Response()

    # -- delete / undelete / destroy --------------------------------------------------

    async def _versions_delete(self, request: Request, params: Params) -> Response:
        def soft_delete(entry: VersionMeta, now: int, meta: KeyMeta) -> None:
            if not entry.is_deleted(now):
                entry.deletion_ns = now

        return await self._each_version(request, params, soft_delete)

    async def _versions_undelete(self, request: Request, params: Params) -> Response:
        config = await self._config()

        def undelete(entry: VersionMeta, now: int, meta: KeyMeta) -> None:
            after = meta.deletion_after(config)
            entry.deletion_ns = now + int(after * 1e9) if after > 0 else 0

        return await self._each_version(request, params, undelete)

    async def _versions_destroy(self, request: Request, params: Params) -> Response:
        path = params["path"]
        versions = get_int_list(request.data, "versions")
        if not versions:
            raise SecretsError(400, "no version number provided")
        async with self._locks.hold(path):
            meta = await self._load_meta(path)
            if meta is None:
                return Response()
            for number in versions:
                entry = meta.versions.get(number)
                if entry is not None:
                    entry.destroyed = True
            # The table first: a crash before the deletes still hides the data.
            await self._save_meta(meta)
            for number in versions:
                if number in meta.versions:
                    await self._storage.delete(self._version_key(path, number))
        return Response()

    async def _each_version(
        self,
        request: Request,
        params: Params,
        change: Callable[[VersionMeta, int, KeyMeta], None],
    ) -> Response:
        """Apply ``change`` to each requested version that exists and is not destroyed."""
        path = params["path"]
        versions = get_int_list(request.data, "versions")
        if not versions:
            raise SecretsError(400, "No version number provided")
        async with self._locks.hold(path):
            meta = await self._load_meta(path)
            if meta is None:
                return Response()
            now = self._clock()
            for number in versions:
                entry = meta.versions.get(number)
                if entry is not None and not entry.destroyed:
                    change(entry, now, meta)
            await self._save_meta(meta)
        return Response()

    # -- subkeys ----------------------------------------------------------------------

    async def _subkeys_read(self, request: Request, params: Params) -> Response:
        path = params["path"]
        args = merged(request)
        version = get_int(args, "version")
        depth = get_int(args, "depth")
        if depth < 0:
            raise SecretsError(400, "depth must be a non-negative integer")
        view = await self._view(path)
        if view is None:
            raise SecretsError(404)
        number = version if version > 0 else view.meta.current_version
        entry = view.meta.versions.get(number)
        if entry is None:
            raise SecretsError(404)
        summary = {**entry.describe(), "version": number}
        if entry.destroyed or entry.is_deleted(self._clock()):
            return Response(data={"subkeys": None, "metadata": summary}, status=404)
        stored = await get_json(self._storage, self._version_key(path, number))
        if stored is None:
            raise SecretsError(500, "could not find version data")
        return Response(data={"subkeys": subkeys(stored, depth), "metadata": summary})


def _check_cas(options: dict[str, Any], config: EngineConfig, meta: KeyMeta) -> None:
    """Vault's check-and-set: ``cas`` must equal the current version (0: key must not exist)."""
    raw = options.get("cas")
    if raw is not None:
        try:
            cas = to_int("cas", raw)
        except SecretsError:
            raise SecretsError(400, "error parsing check-and-set parameter") from None
        if cas != meta.current_version:
            raise SecretsError(400, "check-and-set parameter did not match the current version")
    elif config.cas_required or meta.cas_required:
        raise SecretsError(400, "check-and-set parameter required for this call")


def _non_negative(data: dict[str, Any], name: str) -> int:
    value = get_int(data, name)
    if not 0 <= value <= 2**32 - 1:
        raise bad_input(name, data[name], "value out of range")
    return value


def _apply_settings(meta: KeyMeta, data: dict[str, Any]) -> None:
    if "max_versions" in data:
        meta.max_versions = _non_negative(data, "max_versions")
    if "cas_required" in data:
        meta.cas_required = get_bool(data, "cas_required")
    if "delete_version_after" in data:
        meta.delete_version_after = get_duration(data, "delete_version_after")


def _cas_warning(data: dict[str, Any], config: EngineConfig) -> list[str]:
    if "cas_required" in data and config.cas_required and not get_bool(data, "cas_required"):
        return [CAS_MANDATED_WARNING]
    return []


def _custom_metadata(data: dict[str, Any]) -> dict[str, str]:
    custom = get_str_map(data, "custom_metadata") or {}
    problems = validate_custom_metadata(custom)
    if problems:
        raise SecretsError(400, *problems)
    return custom
