"""The raw endpoints of generate-root and rekey (see :mod:`key_ceremony`).

Vault's paths are unauthenticated, as in Vault: the key shares are the credential, and they
exist for the day no root token is left. ``sys/generate-root/attempt|update`` and
``sys/rekey/init|update`` answer flat JSON objects. OpenBao's CLI asks
``sys/generate-root-token/attempt|update`` instead, an authenticated path with the usual
envelope; it is served too, for a token with ``sudo`` on it, over the same attempt.
Vault's paths are not audited (as in Vault: they run before the request pipeline);
OpenBao's are. Everything here needs the engine unsealed (the shares are checked against the stored root
key, and the new root token or root key wrap is written behind the barrier).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from socle.secrets.backend import Operation, SecretsError
from socle.secrets.core.audit import AuditEvent
from socle.secrets.core.errors import PermissionDenied, SealedError
from socle.secrets.core.fields import parse_bool, parse_int, parse_str, parse_str_list
from socle.secrets.core.pipeline import Outcome, authenticate, new_request_id
from socle.secrets.core.services import Services

if TYPE_CHECKING:
    from socle.secrets.core import SecretsCore

BodyReader = Callable[[], Awaitable[dict[str, Any]]]


def _services(core: SecretsCore) -> Services:
    if core.services is None:
        raise SealedError()
    return core.services


def _method(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise SecretsError(405, "unsupported operation")


async def generate_root_attempt(
    core: SecretsCore, method: str, query: Mapping[str, str], body: BodyReader, token: str
) -> Outcome:
    _services(core)
    _method(method, ("GET", "PUT", "POST", "DELETE"))
    if method == "GET":
        return Outcome(200, core.root_generation.status())
    if method == "DELETE":
        core.root_generation.cancel()
        return Outcome(204)
    data = await body()
    otp = parse_str(data.get("otp"), "otp")
    pgp_key = parse_str(data.get("pgp_key"), "pgp_key")
    return Outcome(200, core.root_generation.start(otp, pgp_key))


async def generate_root_update(
    core: SecretsCore, method: str, query: Mapping[str, str], body: BodyReader, token: str
) -> Outcome:
    services = _services(core)
    _method(method, ("PUT", "POST"))
    data = await body()
    key = parse_str(data.get("key"), "key")
    nonce = parse_str(data.get("nonce"), "nonce")
    return Outcome(200, await core.root_generation.update(key, nonce, services))


async def rekey_init(
    core: SecretsCore, method: str, query: Mapping[str, str], body: BodyReader, token: str
) -> Outcome:
    _services(core)
    _method(method, ("GET", "PUT", "POST", "DELETE"))
    if method == "GET":
        return Outcome(200, core.rekey.status())
    if method == "DELETE":
        core.rekey.cancel()
        return Outcome(204)
    data = await body()
    status = core.rekey.start(
        parse_int(data.get("secret_shares"), "secret_shares", default=5),
        parse_int(data.get("secret_threshold"), "secret_threshold", default=3),
        pgp=bool(parse_str_list(data.get("pgp_keys"), "pgp_keys")),
        backup=parse_bool(data.get("backup"), "backup"),
        verify=parse_bool(data.get("require_verification"), "require_verification"),
    )
    return Outcome(200, status)


async def rekey_update(
    core: SecretsCore, method: str, query: Mapping[str, str], body: BodyReader, token: str
) -> Outcome:
    _services(core)
    _method(method, ("PUT", "POST"))
    data = await body()
    key = parse_str(data.get("key"), "key")
    nonce = parse_str(data.get("nonce"), "nonce")
    return Outcome(200, await core.rekey.update(key, nonce))


# -- OpenBao's authenticated spelling ---------------------------------------------------

_STARTED = (
    "complete",
    "nonce",
    "otp",
    "otp_length",
    "pgp_fingerprint",
    "progress",
    "required",
    "started",
)
_IDLE = ("complete", "otp", "otp_length", "progress", "required", "started")
_DONE = ("complete", "encoded_token", "nonce", "pgp_fingerprint", "progress", "required", "started")


def _openbao_shape(status: dict[str, Any]) -> dict[str, Any]:
    keys = _DONE if status["complete"] else _STARTED if status["started"] else _IDLE
    return {key: status[key] for key in keys}


def _authenticated(
    handler: Callable[[SecretsCore, str, Mapping[str, str], BodyReader, str], Awaitable[Outcome]],
    path: str,
) -> Callable[[SecretsCore, str, Mapping[str, str], BodyReader, str], Awaitable[Outcome]]:
    """OpenBao's spelling: a token with ``sudo`` on ``path``, the usual envelope, and
    audited like any logical request (fail closed; the OTP and the encoded token are
    HMAC'd in the log like every response value)."""

    async def wrapped(
        core: SecretsCore, method: str, query: Mapping[str, str], body: BodyReader, token: str
    ) -> Outcome:
        services = _services(core)
        caller = await authenticate(services, token)
        operation = {"GET": Operation.READ, "DELETE": Operation.DELETE}.get(
            method, Operation.UPDATE
        )
        if not caller.acl.allows(path, operation, sudo=True):
            raise PermissionDenied()
        data = await body() if method in ("PUT", "POST") else {}

        async def cached() -> dict[str, Any]:
            return data

        request_id = new_request_id()
        event = None
        if services.audit.enabled:
            system = services.router.get("sys/")
            event = AuditEvent(
                caller,
                {
                    "id": request_id,
                    "operation": operation.value,
                    "mount_point": "sys/",
                    "mount_type": "system",
                    "mount_accessor": system.entry.accessor if system else "",
                    "client_token": caller.token,
                    "client_token_accessor": caller.entry.accessor if caller.entry else "",
                    "namespace": {"id": "root"},
                    "path": path,
                    "data": data or None,
                    "remote_address": "",
                },
            )
            services.audit.log_request(event)
        try:
            outcome = await handler(core, method, query, cached, token)
        except SecretsError as exc:
            if event is not None:
                services.audit.log_response(event, error="; ".join(exc.errors))
            raise
        shaped = None if outcome.body is None else _openbao_shape(outcome.body)
        if event is not None:
            services.audit.log_response(event, response={"data": shaped})
        if shaped is None:
            return outcome
        return Outcome(
            outcome.status,
            {
                "request_id": request_id,
                "lease_id": "",
                "renewable": False,
                "lease_duration": 0,
                "data": shaped,
                "wrap_info": None,
                "warnings": None,
                "auth": None,
            },
        )

    return wrapped


CEREMONY: dict[
    str, Callable[[SecretsCore, str, Mapping[str, str], BodyReader, str], Awaitable[Outcome]]
] = {
    "sys/generate-root/attempt": generate_root_attempt,
    "sys/generate-root/update": generate_root_update,
    "sys/rekey/init": rekey_init,
    "sys/rekey/update": rekey_update,
    "sys/generate-root-token/attempt": _authenticated(
        generate_root_attempt, "sys/generate-root-token/attempt"
    ),
    "sys/generate-root-token/update": _authenticated(
        generate_root_update, "sys/generate-root-token/update"
    ),
}
