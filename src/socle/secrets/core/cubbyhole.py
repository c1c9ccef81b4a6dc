"""``cubbyhole/``: a private key/value space per token, destroyed with the token.

Each token sees only its own folder (keyed by a digest of its accessor), so even a root
token cannot read another token's cubbyhole, as in Vault.
"""

from __future__ import annotations

import hashlib
import json

from socle.secrets.backend import Operation, Response, SecretsError
from socle.secrets.core.barrier import StorageView
from socle.secrets.core.context import CoreRequest
from socle.secrets.core.errors import PermissionDenied


def _folder(accessor: str) -> str:
    return hashlib.sha256(accessor.encode()).hexdigest() + "/"


class Cubbyhole:
    def __init__(self, storage: StorageView) -> None:
        self._storage = storage

    async def handle_core(self, request: CoreRequest) -> Response:
        caller = request.caller
        if caller is None or caller.entry is None:
            raise PermissionDenied()
        if caller.entry.type != "service":
            raise SecretsError(
                400, "cubbyhole operations are only supported by 'service' type tokens"
            )
        folder = _folder(caller.entry.accessor)
        path = request.relative
        op = request.operation
        if op is Operation.LIST:
            keys = await self._storage.list(folder + path)
            return Response(data={"keys": keys}) if keys else Response(status=404)
        if not path or path.endswith("/"):
            raise SecretsError(400, "missing path")
        if op is Operation.READ:
            raw = await self._storage.get(folder + path)
            return Response(status=404) if raw is None else Response(data=json.loads(raw))
        if op in (Operation.CREATE, Operation.UPDATE):
            if not request.data:
                raise SecretsError(400, "missing data fields")
            await self._storage.put(folder + path, json.dumps(request.data).encode())
            return Response()
        if op is Operation.DELETE:
            await self._storage.delete(folder + path)
            return Response()
        raise SecretsError(405, "unsupported operation")

    async def destroy(self, accessor: str) -> None:
        await self._storage.clear(_folder(accessor))

    async def put_for(self, accessor: str, key: str, value: bytes) -> None:
        """Write into a token's cubbyhole on the core's behalf (response wrapping)."""
        await self._storage.put(_folder(accessor) + key, value)

    async def get_for(self, accessor: str, key: str) -> bytes | None:
        return await self._storage.get(_folder(accessor) + key)
