"""Errors on the wire: the HTTP status comes from the error, server faults get a request id.

- A :class:`~socle.errors.SocleError` answers with its ``http_status`` and its
  ``to_dict()`` (message, hint, details): the caller did something wrong or a dependency is
  down, and the message says what to do.
- Anything else is a fault of the server (a bug): the client gets 500 and
  ``{"error": "InternalError", "message", "request_id"}`` (never the exception text, which may
  hold paths, SQL or secrets); the log gets the traceback under the same request id.
- Every response carries ``X-Request-Id``: the client's own if it sent a well-formed one
  (1-64 characters of ``A-Za-z0-9._-``), a new one otherwise, so that one id ties a client
  report to the server log. Every 5xx is logged with it.

A server fault must never reach a client as 400: the only 400 answers are a request body
that does not validate and errors whose class says 400 (``ConfigError``).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from socle.errors import SocleError

log = logging.getLogger("socle.api")

HEADER = "X-Request-Id"
SCOPE_KEY = "socle.request_id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id(scope: Scope) -> str:
    """The request's id (set by :class:`RequestIdMiddleware`), or ``"-"`` outside it."""
    state = scope.get("state") or {}
    value = state.get("request_id") if isinstance(state, dict) else None
    return str(value) if value else "-"


def _incoming_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = bytes(value).decode("ascii", "replace")
            if _VALID_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


def internal_error_body(rid: str) -> dict[str, Any]:
    return {
        "error": "InternalError",
        "message": f"internal error in the control plane; see its log for request {rid}",
        "request_id": rid,
    }


class RequestIdMiddleware:
    """Give every HTTP request an id, echo it in the response, turn faults into a clean 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Wrapped twice (at the edge, so that answers of the limits and the token gate carry
        # an id too, and inside the app): the outer one decides, the inner one reuses it.
        rid = scope.get(SCOPE_KEY) or _incoming_id(scope)
        scope[SCOPE_KEY] = rid
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "request %s %s failed (request id %s)", scope.get("method"), scope.get("path"), rid
            )
            if started:
                raise  # the status line is gone: the server closes the connection
            response = JSONResponse(internal_error_body(rid), status_code=500)
            await response(scope, receive, send_with_id)


async def _socle_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SocleError)
    status = exc.http_status if 400 <= exc.http_status <= 599 else 500
    ctx = getattr(request.app.state, "ctx", None)
    redact = getattr(ctx, "redact", None)
    body = redact.deep(exc.to_dict()) if redact is not None else exc.to_dict()
    if status >= 500:
        rid = request_id(request.scope)
        log.error(
            "request %s %s answered %d (request id %s): %s: %s",
            request.method,
            request.url.path,
            status,
            rid,
            type(exc).__name__,
            exc.message,
            exc_info=exc,
        )
        body["request_id"] = rid
    return JSONResponse(body, status_code=status)


async def _bad_body(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"path": ".".join(str(p) for p in err["loc"][1:]), "reason": err["msg"]}
        for err in exc.errors()
    ]
    reasons = "; ".join(f"{p['path'] or 'body'}: {p['reason']}" for p in problems)
    return JSONResponse(
        {
            "error": "BadRequest",
            "message": f"invalid request: {reasons}",
            "hint": "see /api/v1/openapi.json for the request shapes",
            "problems": problems,
        },
        status_code=400,
    )


def install(app: FastAPI) -> None:
    """Error handlers and the request-id middleware, on ``app``."""
    app.add_exception_handler(SocleError, _socle_error)
    app.add_exception_handler(RequestValidationError, _bad_body)
    app.add_middleware(RequestIdMiddleware)


__all__ = ["HEADER", "RequestIdMiddleware", "install", "request_id"]
