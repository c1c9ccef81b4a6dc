"""Small real backends for the core's integration tests (not mocks of the engines).

* ``memkv``: a KV v1-like engine on the mount's storage (read/write/list/delete), used for
  mounts, ACL and ciphertext tests without depending on the engines being there.
* ``leasing``: ``creds/<role>`` answers a fresh credential with a lease; revocations and
  renewals are recorded in a shared :class:`Events`, so tests (and a server restarted on the
  same home) can see what the expiration manager did.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

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
from socle.secrets.registry import BackendRegistry, default_registry


class MemKV:
    def __init__(self, storage: Storage, mount: MountInfo) -> None:
        self.storage = storage
        self.mount = mount

    async def handle(self, request: Request) -> Response:
        op, path = request.operation, request.path
        if op is Operation.LIST:
            keys = await self.storage.list(path)
            return Response(data={"keys": keys}) if keys else Response(status=404)
        if not path:
            raise SecretsError(400, "missing path")
        if path == "tombstone":  # an error status *with* data, like KV v2's deleted versions
            return Response(status=404, data={"deleted": True})
        if op is Operation.READ:
            raw = await self.storage.get(path)
            return Response(status=404) if raw is None else Response(data=json.loads(raw))
        if op in (Operation.CREATE, Operation.UPDATE):
            await self.storage.put(path, json.dumps(request.data).encode())
            return Response()
        if op is Operation.DELETE:
            await self.storage.delete(path)
            return Response()
        raise SecretsError(405, "unsupported operation")

    async def exists(self, request: Request) -> bool:
        return await self.storage.get(request.path) is not None

    async def revoke(self, lease: Lease) -> None:
        return None

    async def renew(self, lease: Lease, increment: float | None) -> Lease:
        return lease


@dataclass
class Events:
    issued: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    fail_revoke: bool = False


class Leasing:
    def __init__(self, events: Events) -> None:
        self.events = events

    async def handle(self, request: Request) -> Response:
        if request.operation is not Operation.READ or not request.path.startswith("creds/"):
            raise SecretsError(404, "unsupported path")
        user = f"{request.path[6:]}-{secrets.token_hex(4)}"
        self.events.issued.append(user)
        ttl = float(request.query.get("ttl", "2"))
        return Response(
            data={"username": user, "password": secrets.token_urlsafe(12)},
            lease=Lease(
                ttl=ttl,
                renewable=True,
                max_ttl=float(request.query.get("max", "0")) or None,
                internal={"username": user},
            ),
        )

    async def exists(self, request: Request) -> bool:
        return True

    async def revoke(self, lease: Lease) -> None:
        if self.events.fail_revoke:
            raise RuntimeError("backend unavailable")
        self.events.revoked.append(str(lease.internal["username"]))

    async def renew(self, lease: Lease, increment: float | None) -> Lease:
        self.events.renewed.append(str(lease.internal["username"]))
        return Lease(ttl=increment or 2, renewable=True, internal=lease.internal)


def make_registry(events: Events | None = None) -> BackendRegistry:
    """The default registry plus ``memkv`` and ``leasing``."""
    events = events or Events()
    registry = default_registry()

    async def memkv(storage: Storage, mount: MountInfo) -> Backend:
        return MemKV(storage, mount)

    async def leasing(storage: Storage, mount: MountInfo) -> Backend:
        return Leasing(events)

    registry.secrets.setdefault("memkv", memkv)
    registry.secrets["leasing"] = leasing
    return registry


def kv_type(registry: BackendRegistry) -> tuple[str, dict[str, Any]]:
    """The real KV v2 engine if the engines are registered, else our memkv."""
    if "kv" in registry.secrets:
        return "kv", {"version": "2"}
    return "memkv", {}
