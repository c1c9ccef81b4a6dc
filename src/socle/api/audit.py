"""The API edge of the platform audit log (:mod:`socle.observe.audit`).

:class:`AuditEdge` wraps the whole listener (inside the request-id middleware): it writes
one ``request`` entry per HTTP request once the answer's status is known, even for a
request that the body limits or the token gate refused. :class:`ActorScope` sits behind the
token gate and makes the token's name the current actor, so that every state change the
request causes is recorded under the same name and request id.

Not recorded here: ``/healthz`` (liveness probes) and the Vault-compatible API under
``/v1``, which has its own audit devices; its state changes are still recorded (who:
``vault-api``).
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from socle.api.faults import request_id
from socle.api.tokens import SCOPE_KEY, TokenInfo
from socle.observe.audit import Actor, PlatformAudit, acting

VAULT_WHO = "vault-api"


def _skipped(path: str) -> bool:
    return path == "/healthz" or ((path == "/v1" or path.startswith("/v1/")) and not _otlp(path))


def _otlp(path: str) -> bool:
    return path.startswith("/v1/traces")


def _result(status: int) -> str:
    if status in (401, 403):
        return "denied"
    return "ok" if status < 400 else "error"


class AuditEdge:
    """ASGI middleware: one audit entry per request (method, path, status, who, id)."""

    def __init__(self, app: ASGIApp, audit: PlatformAudit) -> None:
        self._app = app
        self._audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _skipped(scope.get("path", "")):
            await self._app(scope, receive, send)
            return
        status = 500
        started = time.monotonic()

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, watched)
        except BaseException:
            status = 500
            raise
        finally:
            info = scope.get(SCOPE_KEY)
            entry = {
                "kind": "request",
                "who": info.name if isinstance(info, TokenInfo) else "-",
                "request_id": request_id(scope),
                "method": scope.get("method", ""),
                "path": scope.get("path", ""),
                "status": status,
                "result": _result(status),
                "duration_ms": round((time.monotonic() - started) * 1000, 3),
            }
            await asyncio.shield(asyncio.to_thread(self._audit.append, entry))


class ActorScope:
    """ASGI middleware behind the token gate: the request's actor for the layers below."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        info = scope.get(SCOPE_KEY)
        path = scope.get("path", "")
        if isinstance(info, TokenInfo):
            who = info.name
        elif (path == "/v1" or path.startswith("/v1/")) and not _otlp(path):
            who = VAULT_WHO
        else:
            who = "-"
        with acting(Actor(who, request_id(scope))):
            await self._app(scope, receive, send)


__all__ = ["ActorScope", "AuditEdge"]
