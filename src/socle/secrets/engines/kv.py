"""The ``kv`` engine type: version 1 (plain key/value) or version 2 (versioned).

Vault mounts both under the type ``kv`` and picks the flavour from the mount option
``version``; so do we. Version 1 is a direct map from path to JSON object: read, write
(replaces), delete, list. Version 2 lives in :mod:`socle.secrets.engines.kv_v2`.
"""

from __future__ import annotations

from socle.secrets.backend import (
    Backend,
    Lease,
    MountInfo,
    Operation,
    Request,
    Response,
    SecretsError,
    Storage,
)
from socle.secrets.engines._framework import (
    SYSTEM_TTL,
    UNSUPPORTED_OPERATION,
    get_json,
    list_response,
    put_json,
)
from socle.secrets.engines.kv_v2 import KVv2Backend
from socle.units import parse_vault_duration


async def kv_factory(storage: Storage, mount: MountInfo) -> Backend:
    """Build the KV flavour the mount asks for (``options.version``, default 1)."""
    version = str(mount.options.get("version") or "1").strip()
    if version == "2":
        return KVv2Backend(storage, mount)
    if version == "1":
        return KVv1Backend(storage, mount)
    raise SecretsError(400, f"invalid kv version {version[:20]!r}: must be 1 or 2")


class KVv1Backend:
    """Unversioned key/value: the value at a path is replaced on every write."""

    def __init__(self, storage: Storage, mount: MountInfo) -> None:
        self._storage = storage
        self._mount = mount

    async def handle(self, request: Request) -> Response:
        path = request.path
        operation = request.operation
        if operation is Operation.LIST:
            folder = path if not path or path.endswith("/") else path + "/"
            return list_response(await self._storage.list(folder))
        if operation is Operation.READ:
            stored = await get_json(self._storage, path) if path else None
            if stored is None:
                raise SecretsError(404)
            return Response(data=stored, lease_duration=self._advisory_ttl(stored))
        if operation in (Operation.CREATE, Operation.UPDATE):
            if not path or path.endswith("/"):
                raise SecretsError(400, "missing path" if not path else "path must not end in /")
            if not request.data:
                raise SecretsError(400, "missing data fields")
            await put_json(self._storage, path, request.data)
            return Response()
        if operation is Operation.DELETE:
            if path:
                await self._storage.delete(path)
            return Response()
        raise SecretsError(405, UNSUPPORTED_OPERATION)

    def _advisory_ttl(self, stored: dict[str, object]) -> int:
        """Vault's KV v1 read TTL: the secret's own ``ttl`` field, else the mount's default
        lease TTL, else the system default (nothing is leased)."""
        try:
            own = parse_vault_duration(stored["ttl"]) if "ttl" in stored else 0
        except (ValueError, TypeError):
            own = 0
        return int(own or self._mount.default_lease_ttl or SYSTEM_TTL)

    async def exists(self, request: Request) -> bool:
        return bool(request.path) and await self._storage.get(request.path) is not None

    async def revoke(self, lease: Lease) -> None:
        """KV hands out no leases; nothing to undo."""

    async def renew(self, lease: Lease, increment: float | None) -> Lease:
        raise SecretsError(400, "KV secrets are not renewable")
