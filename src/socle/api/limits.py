"""Request limits enforced at the ASGI edge, before any route reads a byte of the body.

A client without a token must neither bloat nor starve the control plane, so this layer
wraps the whole ASGI app (the platform API under ``/api/v1`` *and* the Vault API under
``/v1``) and runs before authentication and before any framework parses the body:

- a declared ``Content-Length`` above the limit is answered ``413`` at once, the body is
  never read;
- a chunked (or lying) body is counted as it streams and cut at the limit: the route sees
  an error instead of more bytes, and the client gets ``413`` if nothing was sent yet;
- a body that stalls longer than ``body_timeout`` seconds between chunks is cut the same
  way (``408``), so a slow sender cannot hold a request open for ever.

Connection counts and idle/header timeouts live one level down, in the HTTP server's
options (see ``socle.server``): an ASGI app never sees a connection before its request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from socle.api.audit import ActorScope, AuditEdge
from socle.api.faults import RequestIdMiddleware
from socle.api.tokens import TokenGate, TokenStore
from socle.api.tracing import TraceEdge
from socle.observe.audit import PlatformAudit
from socle.tasks import within

DEFAULT_API_BODY = 1024 * 1024
"""Platform API bodies are small JSON documents (a path, an environment, a token name)."""

DEFAULT_SECRETS_BODY = 32 * 1024 * 1024
"""The Vault API's own default ``max_request_size`` (32 MiB): KV values, PKI CSRs."""
DEFAULT_LOG_PUSH_BODY = 8 * 1024 * 1024
"""Loki pushes: a Promtail batch (1 MiB of lines by default) grows as JSON; 8 MiB holds
one with room to spare."""


@dataclass(frozen=True)
class BodyRule:
    """Requests whose path starts with ``prefix`` may carry at most ``max_bytes``."""

    prefix: str
    max_bytes: int


class _Cut(Exception):
    """Raised inside ``receive`` to stop a route that is reading too much or too slowly."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _content_length(scope: Scope) -> int | None:
    """The declared length, or None; a malformed header counts as "too large" (-1)."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


async def _answer(send: Send, status: int, message: str, hint: str) -> None:
    body = json.dumps(
        {"error": "RequestRejected", "message": message, "hint": hint, "errors": [message]}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: the size and pace limits above, per path prefix (first match wins)."""

    def __init__(
        self,
        app: ASGIApp,
        rules: Sequence[BodyRule],
        *,
        default_max_bytes: int = DEFAULT_API_BODY,
        body_timeout: float = 30.0,
    ) -> None:
        self._app = app
        self._rules = tuple(rules)
        self._default = default_max_bytes
        self._timeout = body_timeout

    def limit_for(self, path: str) -> int:
        for rule in self._rules:
            if path == rule.prefix.rstrip("/") or path.startswith(rule.prefix):
                return rule.max_bytes
        return self._default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        hint = f"requests to this path may carry at most {limit} bytes"
        declared = _content_length(scope)
        if declared is not None and (declared < 0 or declared > limit):
            what = "malformed Content-Length" if declared < 0 else f"{declared} bytes"
            await _answer(send, 413, f"request body too large ({what})", hint)
            return

        received = 0
        started = False
        cut: _Cut | None = None

        async def counted_receive() -> Message:
            nonlocal received, cut
            if cut is not None:
                raise cut
            try:
                message = await within(receive(), self._timeout)
            except TimeoutError:
                cut = _Cut(408, f"request body stalled for {self._timeout:g}s")
                raise cut from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = _Cut(413, f"request body too large (more than {limit} bytes)")
                    raise cut
            return message

        async def guarded_send(message: Message) -> None:
            # Frameworks turn an error while reading into their own 400 (FastAPI does):
            # once the body was cut, whatever the app answers is replaced by the real reason.
            nonlocal started
            if cut is not None:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _answer(send, cut.status, cut.message, hint)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, counted_receive, guarded_send)
        except Exception:
            if cut is None:
                raise  # not ours: let the server log it and answer 500
        if cut is not None and not started:
            await _answer(send, cut.status, cut.message, hint)


def guard(
    app: ASGIApp,
    tokens: TokenStore,
    *,
    max_body_bytes: int = DEFAULT_API_BODY,
    max_secrets_body_bytes: int = DEFAULT_SECRETS_BODY,
    max_log_push_bytes: int = DEFAULT_LOG_PUSH_BODY,
    body_timeout: float = 30.0,
    audit: PlatformAudit | None = None,
    max_trace_push_bytes: int = DEFAULT_LOG_PUSH_BODY,
    traced: bool = False,
) -> ASGIApp:
    """The whole control-plane app behind its edge: a request id, body limits, the token.

    Order matters: a declared oversized body is refused before anything else (even before
    the token lookup), then ``/api/v1`` needs a valid token before any route reads a byte.
    With ``audit``, every request is recorded (refused ones too) and the token's name is
    the actor of the state changes it causes (:mod:`socle.api.audit`). With ``traced``,
    requests that change something get a span (:mod:`socle.api.tracing`).
    """
    inner: ASGIApp = TokenGate(ActorScope(app), tokens)
    limited = BodyLimit(
        inner,
        [
            BodyRule("/v1/traces", max_trace_push_bytes),
            BodyRule("/v1/", max_secrets_body_bytes),
            BodyRule("/loki/api/v1/push", max_log_push_bytes),
        ],
        default_max_bytes=max_body_bytes,
        body_timeout=body_timeout,
    )
    edge: ASGIApp = AuditEdge(limited, audit) if audit is not None else limited
    return RequestIdMiddleware(TraceEdge(edge) if traced else edge)
