"""Request metrics at the ASGI edge: platform API latency and secrets API requests.

:func:`timed` wraps the platform app: each HTTP request's duration lands in
``socle_api_request_duration_seconds`` under the *template* of the route that matched
(``/api/v1/apps/{name}/logs``; the router records it in ``scope["route"]``), never the raw
path, so a client cannot grow the label set; an unmatched path counts as ``unmatched``.
:func:`counted` wraps the Vault-compatible app: ``socle_secrets_requests_total`` by method and
status class (its paths hold secret names, so no path label at all).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from socle.observe.metrics.registry import ControlPlaneMetrics, status_class

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "LIST"})


def _method(scope: Scope) -> str:
    method = str(scope.get("method", "")).upper()
    return method if method in METHODS else "OTHER"


def timed(app: ASGIApp, metrics: ControlPlaneMetrics) -> ASGIApp:
    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await app(scope, receive, watched_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.api_seconds.labels(template, _method(scope), status_class(status)).observe(
                time.perf_counter() - began
            )

    return wrapper


def counted(app: ASGIApp, metrics: ControlPlaneMetrics) -> ASGIApp:
    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await app(scope, receive, watched_send)
        finally:
            metrics.secrets_requests.labels(_method(scope), status_class(status)).inc()

    return wrapper


__all__ = ["counted", "timed"]
