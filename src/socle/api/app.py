"""The control-plane HTTP API (FastAPI): one app, one router per subsystem, every call
authenticated by token.

``/healthz`` is the only unauthenticated route (for liveness checks) and says nothing but
"ok"; the token itself is checked before any route runs, by :class:`socle.api.tokens.TokenGate`
at the edge (see :func:`socle.api.limits.guard`). The OpenAPI document is at ``/api/v1/openapi.json``. Errors: see :mod:`socle.api.faults`.
A new subsystem's API is a module under :mod:`socle.api.routes` and one entry in
:data:`ROUTERS`.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from socle import __version__
from socle.api import faults
from socle.api.context import ApiContext
from socle.api.routes import (
    alerts,
    audit,
    backups,
    engine,
    firewall,
    gitops,
    logs,
    metrics,
    routes,
    runtime,
    services,
    system,
    tokens,
    traces,
    volumes,
)

ROUTERS: list[APIRouter] = [
    system.router,
    engine.router,
    runtime.router,
    backups.router,
    tokens.router,
    volumes.router,
    routes.router,
    services.router,
    logs.router,
    logs.loki_router,
    metrics.router,
    alerts.router,
    gitops.router,
    firewall.router,
    audit.router,
    traces.router,
    traces.otlp_router,
]
"""Every router of the platform API, in the order they are matched."""


def create_app(ctx: ApiContext, *, routers: list[APIRouter] | None = None) -> FastAPI:
    """The platform API for ``ctx``; ``routers`` adds routers after :data:`ROUTERS`."""
    app = FastAPI(
        title="Socle control plane",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry spans would start new traces from the request's
        # headers instead of joining the span of :class:`socle.api.tracing.TraceEdge`,
        # which decides what is traced (reads, polls and pushes would bury the rest).
        telemetry={"tracing": False, "operation_spans": False},
    )
    app.state.ctx = ctx
    faults.install(app)
    for router in [*ROUTERS, *(routers or [])]:
        app.include_router(router)
    return app


__all__ = ["ROUTERS", "ApiContext", "create_app"]
