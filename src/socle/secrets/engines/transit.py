"""Transit: encryption as a service, with Vault's paths and ciphertext format.

    keys (LIST)                     key names
    keys/<name>                     create (type, exportable), read, delete (if allowed)
    keys/<name>/config              min_decryption_version, min_encryption_version,
                                    deletion_allowed, exportable, auto_rotate_period
    keys/<name>/rotate              new key version
    encrypt|decrypt|rewrap/<name>   single value or ``batch_input`` → ``batch_results``;
                                    encrypt creates the key on first use (Vault's upsert,
                                    which needs the ``create`` capability)
    datakey/plaintext|wrapped/<n>   a fresh data key, wrapped by the named key
    hmac/<name>[/<alg>], verify/<name>[/<alg>]   HMAC with the key's own HMAC key
    export/encryption-key|hmac-key/<name>[/<v>]  only for exportable keys
    random[/<source>][/<bytes>], hash[/<alg>]

Key material is stored as JSON under ``policy/<name>`` in the mount's storage, which the
core keeps behind its encryption barrier. Only symmetric key types are implemented.
"""

from __future__ import annotations

import os
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
from socle.secrets.engines import _transit_ops as ops
from socle.secrets.engines._framework import (
    NAME,
    Clock,
    KeyLocks,
    Params,
    Route,
    RoutedBackend,
    Router,
    get_json,
    handlers,
    list_response,
    put_json,
    system_clock,
)
from socle.secrets.engines._params import get_bool, get_duration, get_int, get_str, merged
from socle.secrets.engines._transit_keys import (
    HASHES,
    KEY_SIZES,
    KeyError_,
    Keyring,
    Random,
    b64,
    b64decode_go,
)

MAX_RANDOM_BYTES = 128 * 1024
NAMED = f"(?P<name>{NAME})"


class TransitBackend(RoutedBackend):
    """One mounted transit engine."""

    def __init__(
        self,
        storage: Storage,
        mount: MountInfo,
        clock: Clock = system_clock,
        random: Random = os.urandom,
    ) -> None:
        self._storage = storage
        self._mount = mount
        self._clock = clock
        self._random = random
        self._locks = KeyLocks()
        self._router = Router(
            [
                Route(r"keys/?", handlers(list_=self._keys_list)),
                Route(
                    f"keys/{NAMED}",
                    # No existence check, as in Vault: creating a key needs "update".
                    handlers(read=self._key_read, write=self._key_create, delete=self._key_delete),
                ),
                Route(f"keys/{NAMED}/config", handlers(write=self._key_config)),
                Route(f"keys/{NAMED}/rotate", handlers(write=self._key_rotate)),
                Route(f"encrypt/{NAMED}", handlers(write=self._encrypt), exists=self._key_exists),
                Route(f"decrypt/{NAMED}", handlers(write=self._decrypt)),
                Route(f"rewrap/{NAMED}", handlers(write=self._rewrap)),
                Route(
                    f"datakey/(?P<kind>plaintext|wrapped)/{NAMED}", handlers(write=self._datakey)
                ),
                Route(f"hmac/{NAMED}(?:/(?P<algorithm>[\\w-]+))?", handlers(write=self._hmac)),
                Route(f"verify/{NAMED}(?:/(?P<algorithm>[\\w-]+))?", handlers(write=self._verify)),
                Route(
                    f"export/(?P<kind>encryption-key|hmac-key)/{NAMED}(?:/(?P<version>latest|\\d+))?",
                    handlers(read=self._export),
                ),
                Route(
                    r"random(?:/(?P<source>platform|seal|all))?(?:/(?P<bytes>\d+))?",
                    handlers(write=self._random_bytes),
                ),
                Route(r"hash(?:/(?P<algorithm>[\w-]+))?", handlers(write=self._hash)),
            ]
        )

    # -- Backend protocol -------------------------------------------------------------

    async def revoke(self, lease: Lease) -> None:
        """Transit hands out no leases."""

    async def renew(self, lease: Lease, increment: float | None) -> Lease:
        raise SecretsError(400, "transit secrets are not renewable")

    # -- storage ----------------------------------------------------------------------

    def _now(self) -> int:
        return self._clock() // 1_000_000_000

    async def _load(self, name: str) -> Keyring | None:
        raw = await get_json(self._storage, "policy/" + name)
        return Keyring.from_json(raw) if raw is not None else None

    async def _save(self, ring: Keyring) -> None:
        await put_json(self._storage, "policy/" + ring.name, ring.to_json())

    async def _key_exists(self, request: Request, params: Params) -> bool:
        return await self._storage.get("policy/" + params["name"]) is not None

    async def _require(self, name: str, message: str = "encryption key not found") -> Keyring:
        ring = await self._load(name)
        if ring is None:
            raise SecretsError(400, message)
        return ring

    async def _rotate_if_due(self, ring: Keyring) -> None:
        """Lazy ``auto_rotate_period``: rotate on use once the latest version is too old."""
        if ring.auto_rotate_period <= 0:
            return
        now = self._now()
        if now - ring.versions[ring.latest_version].created >= ring.auto_rotate_period:
            ring.rotate(now, self._random)
            await self._save(ring)

    # -- keys -------------------------------------------------------------------------

    async def _keys_list(self, request: Request, params: Params) -> Response:
        names = [n for n in await self._storage.list("policy/") if not n.endswith("/")]
        return list_response(names)

    async def _key_read(self, request: Request, params: Params) -> Response:
        ring = await self._load(params["name"])
        if ring is None:
            raise SecretsError(404)
        return Response(data=ring.describe())

    async def _key_create(self, request: Request, params: Params) -> Response:
        name = params["name"]
        data = request.data
        key_type = get_str(data, "type", "aes256-gcm96") or "aes256-gcm96"
        _refuse_derivation(data)
        if key_type not in KEY_SIZES:
            raise SecretsError(400, f"unknown key type {key_type[:64]}")
        exportable = get_bool(data, "exportable")
        plaintext_backup = get_bool(data, "allow_plaintext_backup")
        rotate_period = _rotate_period(data)
        async with self._locks.hold(name):
            ring = await self._load(name)
            if ring is not None:
                return Response(data=ring.describe(), warnings=[f"key {name} already existed"])
            ring = Keyring.create(name, key_type, self._now(), self._random)
            ring.exportable = exportable
            ring.allow_plaintext_backup = plaintext_backup
            ring.auto_rotate_period = rotate_period or 0
            await self._save(ring)
        return Response(data=ring.describe())

    async def _key_delete(self, request: Request, params: Params) -> Response:
        name = params["name"]
        async with self._locks.hold(name):
            ring = await self._load(name)
            if ring is None:
                raise SecretsError(
                    400, f"error deleting policy {name}: could not delete key; not found"
                )
            if not ring.deletion_allowed:
                raise SecretsError(
                    400, f"error deleting policy {name}: deletion is not allowed for this key"
                )
            await self._storage.delete("policy/" + name)
        return Response()

    async def _key_config(self, request: Request, params: Params) -> Response:
        name = params["name"]
        data = request.data
        warnings: list[str] = []
        async with self._locks.hold(name):
            ring = await self._require(name, f"no existing key named {name} could be found")
            if "min_decryption_version" in data:
                wanted = get_int(data, "min_decryption_version")
                if wanted < 0:
                    raise SecretsError(400, "min decryption version cannot be negative")
                if wanted == 0:
                    wanted = 1
                    warnings.append(
                        "since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1"
                    )
                if wanted > ring.latest_version:
                    raise SecretsError(
                        400,
                        f"cannot set min decryption version of {wanted}, "
                        f"latest key version is {ring.latest_version}",
                    )
                ring.min_decryption_version = wanted
            if "min_encryption_version" in data:
                wanted = get_int(data, "min_encryption_version")
                if wanted < 0:
                    raise SecretsError(400, "min encryption version cannot be negative")
                if wanted > ring.latest_version:
                    raise SecretsError(
                        400,
                        f"cannot set min encryption version of {wanted}, "
                        f"latest key version is {ring.latest_version}",
                    )
                ring.min_encryption_version = wanted
            if 0 < ring.min_encryption_version < ring.min_decryption_version:
                raise SecretsError(
                    400,
                    "cannot set min encryption/decryption values; min encryption version of "
                    f"{ring.min_encryption_version} must be greater than or equal to min "
                    f"decryption version of {ring.min_decryption_version}",
                )
            if "deletion_allowed" in data:
                ring.deletion_allowed = get_bool(data, "deletion_allowed")
            # Like Vault, exportable and plaintext backup can be turned on, never off.
            if get_bool(data, "exportable"):
                ring.exportable = True
            if get_bool(data, "allow_plaintext_backup"):
                ring.allow_plaintext_backup = True
            period = _rotate_period(data)
            if period is not None:
                ring.auto_rotate_period = period
            await self._save(ring)
        return Response(data=ring.describe(), warnings=warnings)

    async def _key_rotate(self, request: Request, params: Params) -> Response:
        name = params["name"]
        async with self._locks.hold(name):
            ring = await self._require(name, "key not found")
            ring.rotate(self._now(), self._random)
            await self._save(ring)
        return Response(data=ring.describe())

    # -- encrypt (with upsert) --------------------------------------------------------

    async def _encrypt(self, request: Request, params: Params) -> Response:
        name = params["name"]
        data = request.data
        items, batch = ops.batch_items(data, "plaintext", "missing plaintext to encrypt")
        async with self._locks.hold(name):
            ring = await self._load(name)
            warnings: list[str] = []
            if ring is None:
                if request.operation is not Operation.CREATE:
                    raise SecretsError(400, "encryption key not found")
                ring = await self._upsert(name, data, items)
            elif request.operation is Operation.CREATE:
                warnings.append(
                    "Attempted creation of the key during the encrypt operation, "
                    "but it was created beforehand"
                )
            await self._rotate_if_due(ring)
        results = [ops.encrypt_one(ring, item, self._random) for item in items]
        response = ops.respond(results, batch, data, items)
        response.warnings.extend(warnings)
        return response

    async def _upsert(
        self, name: str, data: dict[str, Any], items: list[dict[str, Any]]
    ) -> Keyring:
        if any(item.get("context") for item in items) or get_bool(data, "convergent_encryption"):
            _refuse_derivation({"derived": True})
        key_type = get_str(data, "type", "aes256-gcm96") or "aes256-gcm96"
        if key_type not in KEY_SIZES:
            raise SecretsError(400, f"unknown key type {key_type[:64]}")
        ring = Keyring.create(name, key_type, self._now(), self._random)
        await self._save(ring)
        return ring

    # -- operations on an existing key ----------------------------------------------

    async def _decrypt(self, request: Request, params: Params) -> Response:
        data = request.data
        items, batch = ops.batch_items(data, "ciphertext", "missing ciphertext to decrypt")
        ring = await self._require(params["name"])
        results = [ops.decrypt_one(ring, item) for item in items]
        return ops.respond(results, batch, data, items)

    async def _rewrap(self, request: Request, params: Params) -> Response:
        data = request.data
        items, batch = ops.batch_items(data, "ciphertext", "missing ciphertext to decrypt")
        ring = await self._require(params["name"])
        results = [ops.rewrap_one(ring, item, self._random) for item in items]
        return ops.respond(results, batch, data, items)

    async def _datakey(self, request: Request, params: Params) -> Response:
        ring = await self._require(params["name"])
        return ops.datakey(ring, params["kind"], request.data, self._random)

    async def _hmac(self, request: Request, params: Params) -> Response:
        ring = await self._require(params["name"])
        return ops.hmac_sign(ring, request.data, params.get("algorithm"))

    async def _verify(self, request: Request, params: Params) -> Response:
        ring = await self._require(params["name"])
        return ops.hmac_verify(ring, request.data, params.get("algorithm"))

    async def _export(self, request: Request, params: Params) -> Response:
        ring = await self._load(params["name"])
        if ring is None:
            raise SecretsError(404)
        return ops.export(ring, params["kind"], params.get("version"))

    # -- random and hash (no key) -----------------------------------------------------

    async def _random_bytes(self, request: Request, params: Params) -> Response:
        data = merged(request)
        count = int(params["bytes"]) if "bytes" in params else get_int(data, "bytes", 32)
        output = get_str(data, "format", "base64") or "base64"
        if count <= 0:
            raise SecretsError(400, "number of bytes cannot be less than or equal to zero")
        if count > MAX_RANDOM_BYTES:
            raise SecretsError(400, f"number of bytes cannot exceed {MAX_RANDOM_BYTES}")
        if output not in ("base64", "hex"):
            raise SecretsError(
                400, f'unsupported encoding format "{output[:32]}"; must be "hex" or "base64"'
            )
        raw = self._random(count)
        return Response(data={"random_bytes": raw.hex() if output == "hex" else b64(raw)})

    async def _hash(self, request: Request, params: Params) -> Response:
        data = request.data
        algorithm = params.get("algorithm") or get_str(data, "algorithm", "sha2-256") or "sha2-256"
        output = get_str(data, "format", "hex") or "hex"
        if algorithm not in HASHES:
            raise SecretsError(400, f"unsupported algorithm {algorithm[:32]}")
        if output not in ("base64", "hex"):
            raise SecretsError(
                400, f'unsupported encoding format {output[:32]}; must be "hex" or "base64"'
            )
        try:
            payload = b64decode_go(get_str(data, "input"))
        except KeyError_ as exc:
            raise SecretsError(400, f"unable to decode input as base64: {exc}") from None
        digest = HASHES[algorithm](payload).digest()
        return Response(data={"sum": digest.hex() if output == "hex" else b64(digest)})


def _refuse_derivation(data: dict[str, Any]) -> None:
    if get_bool(data, "derived") or get_bool(data, "convergent_encryption"):
        raise SecretsError(400, "derived and convergent keys are not supported by this server")


def _rotate_period(data: dict[str, Any]) -> int | None:
    if "auto_rotate_period" not in data:
        return None
    seconds = int(get_duration(data, "auto_rotate_period"))
    if seconds != 0 and seconds < 3600:
        raise SecretsError(400, "auto rotate period must be 0 to disable or at least an hour")
    return seconds


async def transit_factory(storage: Storage, mount: MountInfo) -> Backend:
    """Registry entry: build the engine for a new or restored mount."""
    return TransitBackend(storage, mount)
