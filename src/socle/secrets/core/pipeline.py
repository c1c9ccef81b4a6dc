"""One logical request, from token to envelope: the core's hot path.

Order of events (each step can stop the request; only the last ones change anything)::

    route (longest mount prefix)  ->  authenticate (token cache)  ->  create or update?
    ->  ACL (+ sudo)  ->  audit the request (fail closed)  ->  count a token use
    ->  backend  ->  lease / login token  ->  audit the response  ->  envelope

Refused requests are audited too (with their error), like Vault. The result is a plain
:class:`Outcome` that the HTTP layer serialises and ``read_for_app`` reads directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from socle.secrets.backend import Operation, Response, SecretsError
from socle.secrets.core.audit import AuditEvent
from socle.secrets.core.context import Caller, CoreRequest, CoreResponse, EnvelopeResponse
from socle.secrets.core.errors import ACL_DENIED, AuditFailure, PermissionDenied
from socle.secrets.core.fields import (
    clamp_ttl,
    parse_bool,
    parse_duration,
    parse_int,
    parse_str,
    parse_str_list,
    parse_str_map,
)
from socle.secrets.core.help import render as render_help
from socle.secrets.core.router import Mounted
from socle.secrets.core.services import Services
from socle.secrets.core.tokens import TokenParams
from socle.secrets.core.wrapping import INVALID as INVALID_WRAPPING_TOKEN
from socle.secrets.core.wrapping import wrapped_envelope

log = logging.getLogger("socle.secrets")
_WRITES = (Operation.CREATE, Operation.UPDATE)
_ENVELOPE = (
    "lease_id",
    "renewable",
    "lease_duration",
    "data",
    "wrap_info",
    "warnings",
    "auth",
    "mount_type",
)


@dataclass
class Outcome:
    status: int
    body: dict[str, Any] | None = None
    raw: bytes | None = None
    content_type: str = "application/json"


class _RandomPool:
    """OS randomness read 4 KiB at a time. Each ``getrandom(2)`` releases the GIL, and on
    the server every release lets an HTTP thread in and costs a thread switch: one read per
    256 request ids instead of one per request. Emptied in a forked child."""

    def __init__(self) -> None:
        self._buffer = b""
        self._used = 0

    def take(self, size: int) -> bytes:
        if self._used + size > len(self._buffer):
            self._buffer, self._used = os.urandom(4096), 0
        chunk = self._buffer[self._used : self._used + size]
        self._used += size
        return chunk

    def reset(self) -> None:
        self._buffer, self._used = b"", 0


_random = _RandomPool()
os.register_at_fork(after_in_child=_random.reset)


def new_request_id() -> str:
    """A random UUID (version 4), as ``str(uuid.uuid4())`` gives, at a fraction of the cost."""
    raw = bytearray(_random.take(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def error_outcome(exc: SecretsError) -> Outcome:
    return Outcome(exc.status, {"errors": exc.errors})


async def authenticate(s: Services, token: str) -> Caller:
    entry = await s.tokens.lookup(token) if token else None
    if entry is None:
        raise PermissionDenied()
    acl = await s.policies.acl(entry.policies)
    return Caller(acl, tuple(entry.policies), entry, token, entry.display_name)


def _request_info(request: CoreRequest, mounted: Mounted | None) -> dict[str, Any]:
    caller = request.caller
    return {
        "id": request.id,
        "operation": request.operation.value,
        "mount_point": mounted.entry.path if mounted else "",
        "mount_type": mounted.entry.type if mounted else "",
        "mount_accessor": mounted.entry.accessor if mounted else "",
        "client_token": caller.token if caller else "",
        "client_token_accessor": caller.entry.accessor if caller and caller.entry else "",
        "namespace": {"id": "root"},
        "path": request.path,
        "data": request.data or None,
        "remote_address": request.remote_address,
    }


class Pipeline:
    def __init__(self, services: Services) -> None:
        self.s = services

    async def handle(
        self,
        operation: Operation,
        path: str,
        data: dict[str, Any],
        query: dict[str, str],
        *,
        token: str = "",
        remote_address: str = "",
        caller: Caller | None = None,
        wrap_ttl: int = 0,
    ) -> Outcome:
        """``wrap_ttl``: the seconds of ``X-Vault-Wrap-TTL``; a 200 answer with data or
        auth then comes back as ``wrap_info`` only (see :mod:`~socle.secrets.core.wrapping`)."""
        s = self.s
        if operation is Operation.LIST and not path.endswith("/"):
            path += "/"  # Vault lists folders: the ACL and the backend both see "x/"
        match = s.router.match(path)
        mounted, relative = match if match is not None else (None, "")
        request = CoreRequest(
            id=new_request_id(),
            operation=operation,
            path=path,
            mount_path=mounted.entry.path if mounted else "",
            relative=relative,
            data=data,
            query=query,
            caller=caller,
            remote_address=remote_address,
            token=token,
            wrap_ttl=wrap_ttl,
        )
        unauthenticated = (
            mounted is not None
            and bool(mounted.unauthenticated)
            and mounted.unauthenticated.match(relative)
        )
        try:
            if not unauthenticated and request.caller is None:
                request.caller = await self._authenticate(token, path, data)
            elif unauthenticated and request.caller is None and token:
                # An open path may still answer per caller (sys/internal/ui/mounts); a bad
                # token there is simply no caller, as in Vault.
                with contextlib.suppress(PermissionDenied):
                    request.caller = await authenticate(s, token)
            if mounted is not None and operation in _WRITES and not mounted.core:
                exists = await mounted.backend.exists(request.logical())
                request.operation = Operation.UPDATE if exists else Operation.CREATE
            if not unauthenticated:
                assert request.caller is not None
                sudo = mounted is not None and bool(mounted.sudo) and mounted.sudo.match(relative)
                if not request.caller.acl.allows(path, request.operation, data, sudo=sudo):
                    raise PermissionDenied(ACL_DENIED)
        except SecretsError as exc:
            return self._refused(request, mounted, exc)
        return await self._run(request, mounted, unauthenticated)

    async def _authenticate(self, token: str, path: str, data: dict[str, Any]) -> Caller:
        try:
            return await authenticate(self.s, token)
        except PermissionDenied:
            if path == "sys/wrapping/unwrap" and not data.get("token"):
                # the header token *is* the wrapping token: Vault says why it cannot unwrap
                raise SecretsError(400, INVALID_WRAPPING_TOKEN) from None
            raise

    async def help(self, path: str, token: str) -> Outcome:
        """``GET PATH?help=1`` (``bao path-help``): the mount's help text. Needs a token with
        some capability on the path (root has all); reads and changes nothing."""
        match = self.s.router.match(path)
        if match is None:
            return Outcome(
                404, {"errors": [f'no handler for route "{path}". route entry not found.']}
            )
        mounted, relative = match
        try:
            caller = await authenticate(self.s, token)
        except SecretsError as exc:
            return error_outcome(exc)
        if not caller.acl.capabilities(path):
            return error_outcome(PermissionDenied())
        text = render_help(mounted.backend, relative)
        return Outcome(200, {"help": text, "openapi": None, "see_also": None})

    def _refused(self, request: CoreRequest, mounted: Mounted | None, exc: SecretsError) -> Outcome:
        audit = self.s.audit
        if audit.enabled:
            event = AuditEvent(request.caller, _request_info(request, mounted))
            error = "; ".join(exc.errors)
            try:
                audit.log_request(event, error=error)
            except AuditFailure as failure:
                return error_outcome(failure)
            audit.log_response(event, error=error)
        return error_outcome(exc)

    async def _run(
        self, request: CoreRequest, mounted: Mounted | None, unauthenticated: bool
    ) -> Outcome:
        s = self.s
        caller = request.caller
        audit = s.audit
        event: AuditEvent | None = None
        if audit.enabled:
            event = AuditEvent(caller, _request_info(request, mounted))
            try:
                audit.log_request(event)
            except AuditFailure as failure:
                return error_outcome(failure)
        entry = None if unauthenticated or caller is None else caller.entry
        revoke_after = entry is not None and await s.tokens.use(entry)
        try:
            try:
                if mounted is None:
                    raise SecretsError(404, f"no handler for route {request.path!r}")
                if mounted.core:
                    response = await mounted.backend.handle_core(request)
                else:
                    response = await mounted.backend.handle(request.logical())
                outcome, logged = await self._finish(request, mounted, response)
            except SecretsError as exc:
                if event is not None:
                    audit.log_response(event, error="; ".join(exc.errors))
                return error_outcome(exc)
            except Exception:
                log.exception("internal error on %s %s", request.operation.value, request.path)
                if event is not None:
                    audit.log_response(event, error="internal error")
                return Outcome(500, {"errors": ["internal error"]})
            if event is not None:
                audit.log_response(event, response=logged)
            return outcome
        finally:
            if revoke_after and entry is not None:
                await s.tokens.revoke_tree(entry)

    async def _finish(
        self, request: CoreRequest, mounted: Mounted, response: Response
    ) -> tuple[Outcome, dict[str, Any]]:
        s = self.s
        caller = request.caller
        logged: dict[str, Any] = {
            "mount_type": mounted.entry.type,
            "mount_accessor": mounted.entry.accessor,
        }
        if isinstance(response, EnvelopeResponse):
            sent = response.body
            if "request_id" not in sent:
                sent = {"request_id": request.id, **sent}
            logged["data"] = sent.get("data")
            logged["auth"] = sent.get("auth")
            if sent.get("wrap_info"):
                logged["wrap_info"] = sent["wrap_info"]
            elif request.wrap_ttl and (sent.get("data") is not None or sent.get("auth")):
                return await self._wrap(request, sent, logged)  # unwrap into a new wrapping
            return Outcome(response.status or 200, sent), logged
        if response.raw_body is not None:
            logged["data"] = None
            return Outcome(
                response.status or 200, None, response.raw_body, response.content_type
            ), logged
        body: dict[str, Any] = {
            "request_id": request.id,
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": response.data,
            "wrap_info": None,
            "warnings": list(response.warnings) or None,
            "auth": None,
            "mount_type": mounted.entry.type,
        }
        if response.lease is not None:
            lease = await s.leases.register(
                mounted.entry, request.path, response.lease, caller.entry if caller else None
            )
            body["lease_id"] = lease.lease_id
            body["renewable"] = lease.renewable
            body["lease_duration"] = max(0, round(lease.expire_at - s.clock()))
            logged["secret"] = {"lease_id": lease.lease_id}
        elif response.lease_duration is not None:
            body["lease_duration"] = response.lease_duration
        if response.auth is not None:
            body["auth"] = (
                response.auth if mounted.core else await self._login(request, mounted, response)
            )
        body["warnings"] = list(response.warnings) or None
        if isinstance(response, CoreResponse):
            body.update(response.envelope)
        if mounted.entry.type == "system" and isinstance(response.data, dict):
            for key, value in response.data.items():
                body.setdefault(key, value)  # Vault mirrors sys data at the top level
        logged["data"] = response.data
        logged["auth"] = body["auth"]
        status = response.status
        if status is None:
            empty = response.data is None and body["auth"] is None and not body["lease_id"]
            status = 204 if empty and not response.warnings else 200
        if status >= 400 and response.data is None:
            return Outcome(status, {"errors": list(response.warnings)}), logged
        if request.wrap_ttl and status == 200 and (body["data"] is not None or body["auth"]):
            return await self._wrap(request, body, logged)
        # >= 400 with data (KV v2 reading a deleted version): Vault sends the envelope.
        return Outcome(status, None if status == 204 else body), logged

    async def _wrap(
        self, request: CoreRequest, body: dict[str, Any], logged: dict[str, Any]
    ) -> tuple[Outcome, dict[str, Any]]:
        """Keep ``body`` in a new wrapping token's cubbyhole; answer only ``wrap_info``."""
        auth = body.get("auth")
        # the envelope only: sys answers mirror their data at the top level, unwrap does not
        stored = {key: body[key] for key in _ENVELOPE if key in body}
        wrap_info = await self.s.wrapping.wrap(
            stored,
            request.wrap_ttl,
            request.path,
            wrapped_accessor=str(auth.get("accessor") or "") if isinstance(auth, dict) else "",
        )
        logged["wrap_info"] = wrap_info
        return Outcome(200, wrapped_envelope(wrap_info)), logged

    async def _login(
        self, request: CoreRequest, mounted: Mounted, response: Response
    ) -> dict[str, Any]:
        """Turn an auth method's ``auth`` answer into a new orphan token."""
        auth = response.auth or {}
        entry = mounted.entry
        ttl = parse_duration(auth.get("ttl"), "ttl") or entry.default_lease_ttl
        max_ttl = clamp_ttl(parse_duration(auth.get("max_ttl"), "max_ttl"), entry.max_lease_ttl)
        params = TokenParams(
            policies=parse_str_list(auth.get("policies") or auth.get("token_policies"), "policies"),
            meta=parse_str_map(auth.get("metadata"), "metadata"),
            display_name=f"{entry.type}-{parse_str(auth.get('display_name'), 'display_name')}".rstrip(
                "-"
            ),
            num_uses=parse_int(auth.get("num_uses"), "num_uses"),
            ttl=ttl,
            max_ttl=max_ttl,
            explicit_max_ttl=parse_duration(auth.get("explicit_max_ttl"), "explicit_max_ttl"),
            period=parse_duration(auth.get("period"), "period"),
            renewable=parse_bool(auth.get("renewable"), "renewable", default=True),
            no_default_policy=parse_bool(auth.get("no_default_policy"), "no_default_policy"),
            path=request.path,
        )
        token, token_entry, warnings = await self.s.tokens.create(params, None)
        response.warnings.extend(warnings)
        return token_entry.auth_block(token, self.s.clock())


def runtime_caller(acl: Any, policies: list[str]) -> Caller:
    """The caller for :meth:`SecretsCore.read_for_app`: exactly these policies, no token."""
    return Caller(acl, tuple(policies), None, "", "socle-runtime")


__all__ = ["Outcome", "Pipeline", "authenticate", "error_outcome", "runtime_caller"]
