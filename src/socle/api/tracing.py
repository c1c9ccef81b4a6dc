"""The API edge of tracing: a server span per request that changes something.

Traced: every request of the platform API but reads (``GET``/``HEAD``: polls would bury
the traces worth reading), and every request of the Vault-compatible API (``secret
request`` spans). Not traced: ``/healthz``, the OTLP receiver itself (it would trace its
own input) and Loki pushes (a steady stream). An incoming W3C ``traceparent`` header is
honoured, so a CI job or a webhook sender can join its own trace. The span is current
while the route runs: the engine's spans, audit entries and log lines of the request all
carry its trace id.
"""

from __future__ import annotations

from opentelemetry import propagate, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from socle.tracing import tracer

_tracer = tracer("socle.api")
UNTRACED = ("/healthz", "/v1/traces", "/loki/api/v1/push")


def _vault(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def traced(method: str, path: str) -> bool:
    if any(path == p or path.startswith(p + "/") for p in UNTRACED):
        return False
    return _vault(path) or method not in ("GET", "HEAD")


class TraceEdge:
    """ASGI middleware: the request's server span (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope.get("method", ""))
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not traced(method, path):
            await self._app(scope, receive, send)
            return
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers") or ()
            if k in (b"traceparent", b"tracestate")
        }
        parent = propagate.extract(carrier) if carrier else None
        name = "secret request" if _vault(path) else f"{method} {path}"
        attributes = {"http.request.method": method, "url.path": path[:256]}
        with _tracer.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:

            async def watched(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
                await send(message)

            await self._app(scope, receive, watched)


__all__ = ["TraceEdge", "traced"]
