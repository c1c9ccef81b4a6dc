"""What the API reaches of observe: metrics pages, scrape targets, queries, alerts.

One :class:`Observe` per control plane, built by the server before the API starts. Parts
that run later (the embedded Prometheus, the Alertmanager) attach themselves when they start
(:attr:`query`, :attr:`alerts`); until then the routes that need them answer 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from socle.errors import ConfigError, ObserveError
from socle.observe.metrics.instances import instance_exposition
from socle.observe.metrics.prometheus import JOBS, PrometheusQuery
from socle.observe.metrics.registry import ControlPlaneMetrics
from socle.observe.metrics.targets import app_targets, socle_targets
from socle.runtime.driver import InstanceResources, InstanceStatus

if TYPE_CHECKING:
    from socle.observe.alerts.service import Alerts


class Unavailable(ObserveError):
    http_status = 503


class Observe:
    """The observe subsystem's face (see the module docstring)."""

    def __init__(
        self,
        metrics: ControlPlaneMetrics,
        *,
        address: str,
        instances: Callable[[], list[InstanceStatus]],
        resources: Callable[[], list[InstanceResources]],
        app_metrics: Callable[[], Mapping[str, Mapping[str, Any]]],
    ) -> None:
        self.metrics = metrics
        self.address = address
        """``host:port`` of the main listener, as Prometheus reaches it."""
        self._instances = instances
        self._resources = resources
        self._app_metrics = app_metrics
        self.query: PrometheusQuery | None = None
        self.alerts: Alerts | None = None
        self.prometheus: Callable[[], dict[str, object]] | None = None
        """Where the embedded Prometheus runs (pid, url, restarts), once started."""

    def describe(self) -> dict[str, object]:
        """The "observe" part of the control plane's status."""
        alerts = self.alerts
        manager = alerts.manager if alerts is not None else None
        return {
            "prometheus": self.prometheus() if self.prometheus is not None else None,
            "alertmanager": manager.to_dict() if manager is not None else None,
            "query_url": self.query.url if self.query is not None else None,
        }

    def socle_page(self) -> bytes:
        live = {status.id for status in self._instances()}
        self.metrics.forget_instances(live.__contains__)  # bounded memory as instances churn
        return self.metrics.exposition()

    async def instances_page(self) -> bytes:
        snapshot = self._resources()  # on the loop: the driver's state is not thread-safe
        return await asyncio.to_thread(instance_exposition, lambda: snapshot)

    def targets(self, job: str | None) -> list[dict[str, Any]]:
        if job is not None and job not in JOBS:
            raise ConfigError(f"unknown scrape job {job!r}", hint=f"one of {', '.join(JOBS)}")
        groups: list[dict[str, Any]] = []
        for name in [job] if job else list(JOBS):
            if name == "apps":
                groups.extend(app_targets(self._instances(), self._app_metrics()))
            else:
                groups.extend(socle_targets(self.address, name))
        return groups

    def need_query(self) -> PrometheusQuery:
        if self.query is None:
            raise Unavailable(
                "no Prometheus to query",
                hint="the embedded Prometheus starts just after the API: retry in a few "
                "seconds (`socle status` lists it under components); otherwise it is off "
                "(SOCLE_PROMETHEUS) and SOCLE_METRICS_QUERY_URL is not set",
            )
        return self.query

    async def firing_alerts(self) -> list[dict[str, Any]]:
        """The alerts Prometheus has firing now: what the webhook's alerts are checked against.

        No Prometheus, or one that does not answer, is an error (503): Alertmanager retries the
        call later, and nothing unconfirmed is ever acted on.
        """
        data = await self.need_query().get("alerts", {})
        alerts = data.get("alerts")
        if not isinstance(alerts, list):
            return []
        return [a for a in alerts if isinstance(a, dict) and a.get("state") == "firing"]

    async def evaluated_alerts(self) -> list[dict[str, Any]]:
        """Prometheus' own firing and pending alerts, in Alertmanager's v2 shape (what
        ``socle alerts`` shows when no Alertmanager runs: nothing is routed or silenced,
        but the rules are still evaluated)."""
        data = await self.need_query().get("alerts", {})
        return prometheus_alerts(data.get("alerts"))

    def need_alerts(self) -> Alerts:
        if self.alerts is None:
            raise Unavailable(
                "no Alertmanager", hint="the embedded Alertmanager is off or not started"
            )
        return self.alerts


def prometheus_alerts(alerts: object) -> list[dict[str, Any]]:
    """Prometheus' ``/api/v1/alerts`` items as Alertmanager's v2 alerts: ``labels``,
    ``annotations``, ``startsAt`` (Prometheus' ``activeAt``) and ``status.state``:
    ``active`` for a firing alert, ``pending`` for one whose ``for`` has not passed yet."""
    if not isinstance(alerts, list):
        return []
    rows = []
    for alert in alerts:
        if not isinstance(alert, dict):
            continue
        state = "active" if alert.get("state") == "firing" else str(alert.get("state", ""))
        rows.append(
            {
                "labels": alert.get("labels") or {},
                "annotations": alert.get("annotations") or {},
                "startsAt": alert.get("activeAt", ""),
                "status": {"state": state, "silencedBy": [], "inhibitedBy": []},
            }
        )
    return rows


__all__ = ["Observe", "Unavailable", "prometheus_alerts"]
