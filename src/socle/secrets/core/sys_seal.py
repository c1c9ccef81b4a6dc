"""The raw system endpoints, answered before the sealed gate and without the envelope.

``sys/init``, ``sys/seal-status``, ``sys/unseal``, ``sys/health`` and ``sys/leader`` work
sealed and without a token, as in Vault; ``sys/seal`` needs a token with ``sudo`` on
``sys/seal`` (root has it). Their bodies are flat JSON objects, like Vault's.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from socle import __version__
from socle.secrets.backend import Operation, SecretsError
from socle.secrets.core.errors import PermissionDenied, SealedError
from socle.secrets.core.fields import parse_bool, parse_int, parse_str
from socle.secrets.core.pipeline import Outcome, authenticate
from socle.secrets.core.sys_ceremony import CEREMONY

if TYPE_CHECKING:
    from socle.secrets.core import SecretsCore

BodyReader = Callable[[], Awaitable[dict[str, Any]]]
RawHandler = Callable[["SecretsCore", str, Mapping[str, str], BodyReader, str], Awaitable[Outcome]]
_READ = ("GET",)
_WRITE = ("PUT", "POST")


def _method(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise SecretsError(405, "unsupported operation")


async def init(
    core: SecretsCore, method: str, query: Mapping[str, str], body: BodyReader, token: str
) -> Outcome:
    if method in _READ:
        return Outcome(200, {"initialized": core.seal.initialized})
    _method(method, _WRITE)
    data = await body()
    if data.get("pgp_keys") or data.get("root_token_pgp_key"):
        raise SecretsError(400, "PGP-encrypted keys are not supported")
    shares = parse_int(data.get("secret_shares"), "secret_shares", default=5)
    threshold = parse_int(data.get("secret_threshold"), "secret_threshold", default=3)
    return Outcome(200, await core.initialize(shares, threshold))


async def seal_status(
    core: SecretsCore, method: str, query: Mapping[str, str], body: BodyReader, token: str
) -> Outcome:
    _method(method, _READ)
    return Outcome(200, core.seal.status())


async def unseal(
    core: SecretsCore, method: str, query: Mapping[str, str], body: BodyReader, token: str
) -> Outcome:
    _method(method, _WRITE)
    data = await body()
    reset = parse_bool(data.get("reset"), "reset")
    key = parse_str(data.get("key"), "key")
    if not reset and not key:
        raise SecretsError(
            400, "'key' must be specified in request body as JSON, or 'reset' set to true"
        )
    return Outcome(200, await core.submit_unseal(None if reset else key, reset=reset))


async def seal(
    core: SecretsCore, method: str, query: Mapping[str, str], body: BodyReader, token: str
) -> Outcome:
    _method(method, _WRITE)
    services = core.services
    if services is None:
        raise SealedError()
    caller = await authenticate(services, token)
    if not caller.acl.allows("sys/seal", Operation.UPDATE, sudo=True):
        raise PermissionDenied()
    await core.seal_now()
    return Outcome(204)


def _code(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit() or not 100 <= int(value) <= 599:
        raise SecretsError(400, f"invalid status code for {name}: {value!r}")
    return int(value)


async def health(
    core: SecretsCore, method: str, query: Mapping[str, str], body: BodyReader, token: str
) -> Outcome:
    _method(method, ("GET", "HEAD"))
    initialized = core.seal.initialized
    sealed = core.barrier.sealed
    if not initialized:
        status = _code(query, "uninitcode", 501)
    elif sealed:
        status = _code(query, "sealedcode", 503)
    else:
        status = _code(query, "activecode", 200)
    payload = {
        "initialized": initialized,
        "sealed": sealed,
        "standby": False,
        "performance_standby": False,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": int(time.time()),
        "version": __version__,
        "enterprise": False,
        "echo_duration_ms": 0,
        "clock_skew_ms": 0,
    }
    return Outcome(status, payload)


async def leader(
    core: SecretsCore, method: str, query: Mapping[str, str], body: BodyReader, token: str
) -> Outcome:
    _method(method, _READ)
    return Outcome(
        200,
        {
            "ha_enabled": False,
            "is_self": False,
            "active_time": "0001-01-01T00:00:00Z",
            "leader_address": "",
            "leader_cluster_address": "",
            "performance_standby": False,
            "performance_standby_last_remote_wal": 0,
        },
    )


RAW: dict[str, RawHandler] = {
    "sys/init": init,
    "sys/seal-status": seal_status,
    "sys/unseal": unseal,
    "sys/seal": seal,
    "sys/health": health,
    "sys/leader": leader,
    **CEREMONY,
}
