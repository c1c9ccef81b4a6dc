"""What the API's routers reach: the subsystems of one control plane, passed in explicitly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from socle.api.tokens import TokenStore
from socle.backup.service import HomeBackups
from socle.engine.service import Engine
from socle.gitops.service import GitOps
from socle.network.firewall.service import Firewall
from socle.network.ingress import Ingress
from socle.network.registry import ServiceRegistry
from socle.observe.audit import PlatformAudit
from socle.observe.logs.service import LogService
from socle.observe.service import Observe
from socle.observe.traces.service import TraceService
from socle.redact import Redactor
from socle.runtime.driver import RuntimeDriver


def _no_control_plane() -> dict[str, object]:
    return {}


@dataclass
class ApiContext:
    engine: Engine
    driver: RuntimeDriver
    tokens: TokenStore
    request_shutdown: Callable[[bool], None]
    control_plane: Callable[[], dict[str, object]] = field(default=_no_control_plane)
    """The "control plane" section of status: components, background tasks, leader lease."""
    backups: HomeBackups | None = None
    """Backups on request (``POST /api/v1/backups``); None: not offered."""
    redact: Redactor = field(default_factory=Redactor)
    """Masks resolved secret values in every message the API returns."""
    ingress: Callable[[], Ingress | None] = field(default=lambda: None)
    """The ingress (nginx) if it runs: routes, upstreams and stable app URLs."""
    registry: ServiceRegistry | None = None
    """The service registry (``/api/v1/services``); None: not offered."""
    logs: LogService | None = None
    """The log store (LogQL queries, Loki API); None: not offered."""
    observe: Observe | None = None
    """Metrics pages, scrape targets, queries and alerts; None: not offered."""
    gitops: GitOps | None = None
    """Sources and their sync; None: not offered."""
    firewall: Firewall | None = None
    """The firewall (``/api/v1/firewall``); None: not offered."""
    audit: PlatformAudit | None = None
    """The platform audit log (``/api/v1/audit``); None: not kept."""
    traces: TraceService | None = None
    """The trace store and the OTLP receiver (``/api/v1/traces``, ``/v1/traces``)."""


def context(request: Request) -> ApiContext:
    """The context of the app serving ``request`` (a FastAPI dependency)."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


__all__ = ["ApiContext", "context"]
