"""The AppRole auth method: machines log in with a role id and a secret id.

A role says what token a login gets (``token_policies``, ``token_ttl``, ...) and how secret
ids behave (``secret_id_ttl``, ``secret_id_num_uses``). Secret ids are random, shown once,
and stored only as HMAC-SHA256 under a salt kept in the mount's (encrypted) storage; role
ids are indexed the same way. Use counts are decremented under a per-role lock, so two
concurrent logins cannot both spend the last use.

Storage (the mount's view)::

    salt                                   HMAC key
    role/<name>                            the role
    role_id/<hmac(role_id)>                -> role name
    secret_id/<hmac(name)>/<hmac(secret)>  a secret id (metadata, expiry, uses left)
    accessor/<hmac(accessor)>              -> role name + secret id hmac

Not implemented: CIDR bindings (refused rather than silently ignored), batch tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
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
from socle.secrets.core.fields import (
    parse_bool,
    parse_duration,
    parse_int,
    parse_str,
    parse_str_list,
    parse_str_map,
    rfc3339,
)
from socle.secrets.core.help import synopses

NAME = r"(?P<name>\w(?:[\w.-]*\w)?)"
INVALID = "invalid role or secret ID"
Handler = Callable[[Request, str], Awaitable[Response]]
_DURATIONS = (
    "secret_id_ttl",
    "token_ttl",
    "token_max_ttl",
    "token_explicit_max_ttl",
    "token_period",
)
_INTS = ("secret_id_num_uses", "token_num_uses")
_BOOLS = ("bind_secret_id", "token_no_default_policy", "local_secret_ids")


@dataclass
class Role:
    role_id: str
    bind_secret_id: bool = True
    secret_id_ttl: int = 0
    secret_id_num_uses: int = 0
    local_secret_ids: bool = False
    token_policies: list[str] = field(default_factory=list)
    token_ttl: int = 0
    token_max_ttl: int = 0
    token_explicit_max_ttl: int = 0
    token_num_uses: int = 0
    token_period: int = 0
    token_no_default_policy: bool = False
    token_type: str = "default"  # noqa: S105 - a token type name

    def view(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "role_id"}
        # OpenBao no longer echoes the deprecated ``policies``/``period`` aliases.
        data.update(secret_id_bound_cidrs=None, token_bound_cidrs=[], token_strictly_bind_ip=False)
        return data


class AppRoleBackend:
    unauthenticated_paths = ("login",)

    def __init__(self, storage: Storage, mount: MountInfo, salt: bytes) -> None:
        self._storage = storage
        self._mount = mount
        self._salt = salt
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        U, R, D, L = Operation.UPDATE, Operation.READ, Operation.DELETE, Operation.LIST
        self._routes: list[tuple[re.Pattern[str], dict[Operation, Handler]]] = [
            (re.compile("login"), {U: self._login}),
            (re.compile("role/?"), {L: self._list_roles}),
            (
                re.compile(f"role/{NAME}"),
                {R: self._read_role, U: self._write_role, D: self._delete_role},
            ),
            (re.compile(f"role/{NAME}/role-id"), {R: self._read_role_id, U: self._set_role_id}),
            (
                re.compile(f"role/{NAME}/secret-id/?"),
                {U: self._new_secret_id, L: self._list_secret_ids},
            ),
            (re.compile(f"role/{NAME}/custom-secret-id"), {U: self._custom_secret_id}),
            (re.compile(f"role/{NAME}/secret-id/lookup"), {U: self._lookup_secret_id}),
            (
                re.compile(f"role/{NAME}/secret-id/destroy"),
                {U: self._destroy_secret_id, D: self._destroy_secret_id},
            ),
            (re.compile(f"role/{NAME}/secret-id-accessor/lookup"), {U: self._lookup_accessor}),
            (
                re.compile(f"role/{NAME}/secret-id-accessor/destroy"),
                {U: self._destroy_accessor, D: self._destroy_accessor},
            ),
        ]

    # -- Backend protocol ---------------------------------------------------------------

    def help_routes(self) -> list[tuple[str, str]]:
        return synopses((regex.pattern, handlers) for regex, handlers in self._routes)

    async def handle(self, request: Request) -> Response:
        for regex, handlers in self._routes:
            match = regex.fullmatch(request.path)
            if match is None:
                continue
            op = request.operation
            handler = handlers.get(op) or (
                handlers.get(Operation.UPDATE) if op is Operation.CREATE else None
            )
            if handler is None:
                raise SecretsError(405, "unsupported operation")
            return await handler(request, match.groupdict().get("name") or "")
        raise SecretsError(404, "unsupported path")

    async def exists(self, request: Request) -> bool:
        match = re.fullmatch(f"role/{NAME}", request.path)
        if match is None:
            return True
        return await self._storage.get(f"role/{match.group('name')}") is not None

    async def revoke(self, lease: Lease) -> None:
        return None

    async def renew(self, lease: Lease, increment: float | None) -> Lease:
        return lease

    # -- storage helpers ----------------------------------------------------------------

    def _hmac(self, value: str) -> str:
        return hmac.new(self._salt, value.encode(), hashlib.sha256).hexdigest()

    async def _get(self, key: str) -> Any:
        raw = await self._storage.get(key)
        return None if raw is None else json.loads(raw)

    async def _put(self, key: str, value: Any) -> None:
        await self._storage.put(key, json.dumps(value).encode())

    async def _role(self, name: str) -> Role:
        raw = await self._get(f"role/{name}")
        if raw is None:
            raise SecretsError(400, f"role {name!r} does not exist")
        return Role(**raw)

    def _secret_key(self, name: str, secret_id: str) -> str:
        return f"secret_id/{self._hmac(name)}/{self._hmac(secret_id)}"

    # -- roles --------------------------------------------------------------------------

    async def _list_roles(self, request: Request, _: str) -> Response:
        keys = [k for k in await self._storage.list("role/") if not k.endswith("/")]
        if not keys:
            raise SecretsError(404)
        return Response(data={"keys": keys})

    async def _read_role(self, request: Request, name: str) -> Response:
        raw = await self._get(f"role/{name}")
        return Response(status=404) if raw is None else Response(data=Role(**raw).view())

    async def _write_role(self, request: Request, name: str) -> Response:
        data = request.data
        for key in ("secret_id_bound_cidrs", "token_bound_cidrs", "bound_cidr_list"):
            if parse_str_list(data.get(key), key):
                raise SecretsError(400, f"{key}: CIDR bindings are not supported")
        raw = await self._get(f"role/{name}")
        role = Role(**raw) if raw is not None else Role(role_id=str(uuid.uuid4()))
        for key in _DURATIONS:
            if data.get(key) is not None:
                setattr(role, key, parse_duration(data[key], key))
        if data.get("period") is not None:
            role.token_period = parse_duration(data["period"], "period")
        for key in _INTS:
            if data.get(key) is not None:
                value = parse_int(data[key], key)
                if value < 0:
                    raise SecretsError(400, f"{key} cannot be negative")
                setattr(role, key, value)
        for key in _BOOLS:
            if data.get(key) is not None:
                setattr(role, key, parse_bool(data[key], key))
        if data.get("token_policies") is not None or data.get("policies") is not None:
            role.token_policies = parse_str_list(
                data.get("token_policies", data.get("policies")), "token_policies"
            )
        token_type = parse_str(data.get("token_type"), "token_type", role.token_type)
        if token_type not in ("default", "service"):
            raise SecretsError(400, f"token_type {token_type!r} is not supported")
        role.token_type = token_type
        if not role.bind_secret_id:
            raise SecretsError(400, "at least one constraint should be enabled on the role")
        if role.token_max_ttl and role.token_ttl > role.token_max_ttl:
            raise SecretsError(400, "token_ttl should not be greater than token_max_ttl")
        if raw is None:
            await self._put(f"role_id/{self._hmac(role.role_id)}", {"name": name})
        await self._put(f"role/{name}", role.__dict__)
        return Response()

    async def _delete_role(self, request: Request, name: str) -> Response:
        raw = await self._get(f"role/{name}")
        if raw is None:
            return Response()
        role = Role(**raw)
        folder = f"secret_id/{self._hmac(name)}/"
        for key in await self._storage.list(folder):
            entry = await self._get(folder + key)
            if entry is not None:
                await self._storage.delete(f"accessor/{self._hmac(entry['secret_id_accessor'])}")
            await self._storage.delete(folder + key)
        await self._storage.delete(f"role_id/{self._hmac(role.role_id)}")
        await self._storage.delete(f"role/{name}")
        return Response()

    async def _read_role_id(self, request: Request, name: str) -> Response:
        return Response(data={"role_id": (await self._role(name)).role_id})

    async def _set_role_id(self, request: Request, name: str) -> Response:
        role = await self._role(name)
        new = parse_str(request.data.get("role_id"), "role_id")
        if not new:
            raise SecretsError(400, "missing role_id")
        owner = await self._get(f"role_id/{self._hmac(new)}")
        if owner is not None and owner["name"] != name:
            raise SecretsError(400, "role_id already in use")
        await self._storage.delete(f"role_id/{self._hmac(role.role_id)}")
        role.role_id = new
        await self._put(f"role_id/{self._hmac(new)}", {"name": name})
        await self._put(f"role/{name}", role.__dict__)
        return Response()

    # -- secret ids ---------------------------------------------------------------------

    async def _new_secret_id(self, request: Request, name: str) -> Response:
        return await self._issue(request, name, str(uuid.uuid4()))

    async def _custom_secret_id(self, request: Request, name: str) -> Response:
        secret_id = parse_str(request.data.get("secret_id"), "secret_id")
        if not secret_id:
            raise SecretsError(400, "missing secret_id")
        if await self._get(self._secret_key(name, secret_id)) is not None:
            raise SecretsError(400, "secret_id is already registered")
        return await self._issue(request, name, secret_id)

    async def _issue(self, request: Request, name: str, secret_id: str) -> Response:
        role = await self._role(name)
        data = request.data
        for key in ("cidr_list", "token_bound_cidrs"):
            if parse_str_list(data.get(key), key):
                raise SecretsError(400, f"{key}: CIDR bindings are not supported")
        ttl = parse_duration(data.get("ttl"), "ttl") or role.secret_id_ttl
        if role.secret_id_ttl and ttl > role.secret_id_ttl:
            raise SecretsError(400, "ttl cannot be longer than the role's secret_id_ttl")
        uses = parse_int(data.get("num_uses"), "num_uses") or role.secret_id_num_uses
        if uses < 0 or (role.secret_id_num_uses and uses > role.secret_id_num_uses):
            raise SecretsError(400, "num_uses cannot be negative or above the role's limit")
        now = time.time()
        accessor = str(uuid.uuid4())
        entry = {
            "secret_id_accessor": accessor,
            "metadata": parse_str_map(data.get("metadata"), "metadata"),
            "creation_time": now,
            "expiration_time": now + ttl if ttl else 0,
            "last_updated_time": now,
            "secret_id_num_uses": uses,
            "secret_id_ttl": ttl,
        }
        secret_hmac = self._hmac(secret_id)
        await self._put(self._secret_key(name, secret_id), entry)
        await self._put(f"accessor/{self._hmac(accessor)}", {"name": name, "id": secret_hmac})
        return Response(
            data={
                "secret_id": secret_id,
                "secret_id_accessor": accessor,
                "secret_id_ttl": ttl,
                "secret_id_num_uses": uses,
            }
        )

    async def _list_secret_ids(self, request: Request, name: str) -> Response:
        await self._role(name)
        folder = f"secret_id/{self._hmac(name)}/"
        accessors = []
        for key in await self._storage.list(folder):
            entry = await self._get(folder + key)
            if entry is not None:
                accessors.append(entry["secret_id_accessor"])
        if not accessors:
            raise SecretsError(404)
        return Response(data={"keys": sorted(accessors)})

    @staticmethod
    def _view(entry: dict[str, Any]) -> dict[str, Any]:
        expires = entry["expiration_time"]
        return {
            "cidr_list": [],
            "token_bound_cidrs": [],
            "creation_time": rfc3339(entry["creation_time"]),
            "expiration_time": rfc3339(expires) if expires else "0001-01-01T00:00:00Z",
            "last_updated_time": rfc3339(entry["last_updated_time"]),
            "metadata": entry["metadata"],
            "secret_id_accessor": entry["secret_id_accessor"],
            "secret_id_num_uses": entry["secret_id_num_uses"],
            "secret_id_ttl": entry["secret_id_ttl"],
        }

    async def _by_secret(self, request: Request, name: str) -> tuple[str, dict[str, Any] | None]:
        secret_id = parse_str(request.data.get("secret_id"), "secret_id")
        if not secret_id:
            raise SecretsError(400, "missing secret_id")
        key = self._secret_key(name, secret_id)
        return key, await self._get(key)

    async def _by_accessor(self, request: Request, name: str) -> tuple[str, dict[str, Any]]:
        accessor = parse_str(request.data.get("secret_id_accessor"), "secret_id_accessor")
        index = await self._get(f"accessor/{self._hmac(accessor)}") if accessor else None
        if index is None or index["name"] != name:
            raise SecretsError(404, "failed to find accessor entry for secret_id_accessor")
        key = f"secret_id/{self._hmac(name)}/{index['id']}"
        entry = await self._get(key)
        if entry is None:
            raise SecretsError(404, "failed to find accessor entry for secret_id_accessor")
        return key, entry

    async def _lookup_secret_id(self, request: Request, name: str) -> Response:
        await self._role(name)
        _, entry = await self._by_secret(request, name)
        return Response() if entry is None else Response(data=self._view(entry))

    async def _destroy(self, key: str, entry: dict[str, Any] | None) -> None:
        if entry is not None:
            await self._storage.delete(f"accessor/{self._hmac(entry['secret_id_accessor'])}")
        await self._storage.delete(key)

    async def _destroy_secret_id(self, request: Request, name: str) -> Response:
        await self._destroy(*await self._by_secret(request, name))
        return Response()

    async def _lookup_accessor(self, request: Request, name: str) -> Response:
        _, entry = await self._by_accessor(request, name)
        return Response(data=self._view(entry))

    async def _destroy_accessor(self, request: Request, name: str) -> Response:
        await self._destroy(*await self._by_accessor(request, name))
        return Response()

    # -- login --------------------------------------------------------------------------

    async def _login(self, request: Request, _: str) -> Response:
        role_id = parse_str(request.data.get("role_id"), "role_id")
        if not role_id:
            raise SecretsError(400, "missing role_id")
        index = await self._get(f"role_id/{self._hmac(role_id)}")
        if index is None:
            raise SecretsError(400, INVALID)
        name = str(index["name"])
        async with self._locks[name]:
            role = await self._role(name)
            metadata: dict[str, str] = {}
            if role.bind_secret_id:
                secret_id = parse_str(request.data.get("secret_id"), "secret_id")
                if not secret_id:
                    raise SecretsError(400, "missing secret_id")
                key = self._secret_key(name, secret_id)
                entry = await self._get(key)
                if entry is None:
                    raise SecretsError(400, INVALID)
                if entry["expiration_time"] and time.time() >= entry["expiration_time"]:
                    await self._destroy(key, entry)
                    raise SecretsError(400, INVALID)
                if entry["secret_id_num_uses"] > 0:
                    entry["secret_id_num_uses"] -= 1
                    if entry["secret_id_num_uses"] == 0:
                        await self._destroy(key, entry)
                    else:
                        entry["last_updated_time"] = time.time()
                        await self._put(key, entry)
                metadata = dict(entry["metadata"])
        metadata["role_name"] = name
        return Response(
            auth={
                "policies": role.token_policies,
                "metadata": metadata,
                "ttl": role.token_ttl,
                "max_ttl": role.token_max_ttl,
                "explicit_max_ttl": role.token_explicit_max_ttl,
                "period": role.token_period,
                "num_uses": role.token_num_uses,
                "no_default_policy": role.token_no_default_policy,
                "renewable": True,
            }
        )


async def factory(storage: Storage, mount: MountInfo) -> Backend:
    """Registered as ``approle`` in the registry's ``auth`` dict."""
    salt = await storage.get("salt")
    if salt is None:
        salt = secrets.token_bytes(32)
        await storage.put("salt", salt)
    return AppRoleBackend(storage, mount, salt)
