"""Observe's control-plane components (listed in :func:`socle.server.build_components`).

- :class:`ObserveComponent` (before the API): the :class:`~socle.observe.service.Observe`
  face the API serves (``/metrics``, ``/metrics/instances``, ``http_sd`` targets), fed by
  the runtime's status stream;
- :class:`AlertmanagerComponent` (after the API): the embedded Alertmanager, its config
  pointing the webhook back at Socle;
- :class:`PrometheusComponent` (last): the embedded Prometheus, scraping Socle through
  ``http_sd`` with its own API token, its rule files from ``AlertRule`` and ``SLO`` objects.

They read the plane through :class:`PlaneView` (a protocol the server's ``Plane`` fits),
so observe never imports the composition root.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from socle.engine.service import Engine
from socle.errors import ConfigError, SocleError, need
from socle.fs import private_dir
from socle.observe._embedded import EmbeddedDaemon
from socle.observe.alerts.forward import AlertForwarder, Sink, resolve_removed
from socle.observe.alerts.manager import AlertmanagerServer
from socle.observe.alerts.releases import ReleaseWatch
from socle.observe.alerts.rules import builtin_rule_files, rule_files
from socle.observe.alerts.service import Alerts
from socle.observe.autoscale import Autoscaler
from socle.observe.metrics.certs import CertificateExpiry
from socle.observe.metrics.prometheus import (
    PrometheusQuery,
    PrometheusServer,
    ScrapeSetup,
    render_config,
)
from socle.observe.metrics.registry import ControlPlaneMetrics
from socle.observe.metrics.rulefiles import RuleWriter
from socle.observe.service import Observe
from socle.ports import PortBook
from socle.redact import Redactor
from socle.runtime.local.driver import LocalDriver
from socle.settings import Settings
from socle.tasks import TaskGroup, TaskMonitor

log = logging.getLogger("socle.observe")


RULE_KINDS = ("AlertRule", "SLO")
"""Kinds whose applied objects become Prometheus rule files."""

PROMETHEUS_TOKEN_NAME = "socle-prometheus"  # noqa: S105 (a name, not a secret)
"""The API token Prometheus scrapes with (rotated at every start; never shown)."""
ALERTMANAGER_TOKEN_NAME = "socle-alertmanager"  # noqa: S105
"""The API token Alertmanager's webhook calls Socle back with."""


class PlaneView(Protocol):
    """What observe reads of the plane (:class:`socle.server.parts.Plane` fits it)."""

    settings: Settings
    monitor: TaskMonitor
    host: str
    port: int
    url: str
    tls: tuple[Path, Path] | None
    ports: PortBook
    driver: LocalDriver | None
    engine: Engine | None
    metrics: ControlPlaneMetrics | None
    observe: Observe | None

    redactor: Redactor
    """Masks every secret value the engine resolved (alerts forwarded to notifiers)."""

    async def service_token(self, name: str) -> str:
        """A fresh API token for one of Socle's own daemons (the previous one dies)."""

    @property
    def alert_sink(self) -> Sink | None:
        """Where alerts go to reach the notifiers (GitOps' notification queue), if any."""


def reachable_address(host: str, port: int) -> str:
    """``host:port`` of the main listener as a local client reaches it."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def app_metrics(engine: Engine) -> dict[str, Mapping[str, Any]]:
    """``spec.metrics`` of every applied App that has one."""
    found: dict[str, Mapping[str, Any]] = {}
    for name, state in engine.handler("App").current().items():
        manifest = getattr(state, "manifest", None) or {}
        spec = manifest.get("spec") or {}
        if spec.get("metrics"):
            found[name] = spec["metrics"]
    return found


class ObserveComponent:
    name = "observe"

    def __init__(self, plane: PlaneView) -> None:
        self._plane = plane

    async def start(self) -> None:
        plane = self._plane
        driver: LocalDriver = need(plane.driver, "runtime")
        engine: Engine = need(plane.engine, "engine")
        metrics: ControlPlaneMetrics = need(plane.metrics, "metrics")
        observe = Observe(
            metrics,
            address=reachable_address(plane.host, plane.port),
            instances=driver.instances,
            resources=driver.resources,
            app_metrics=lambda: app_metrics(engine),
        )
        for status in driver.instances():
            metrics.instance_changed(status)
        driver.subscribe(metrics.instance_changed)
        if plane.settings.metrics_query_url:
            observe.query = PrometheusQuery(plane.settings.metrics_query_url)
        if plane.tls is not None:
            metrics.gauge_source(
                "socle_tls_certificate_expiry_timestamp_seconds",
                "When the certificate the control plane serves with expires (notAfter).",
                ("file",),
                CertificateExpiry([plane.tls[0]]),
            )
        plane.observe = observe

    async def stop(self) -> None:
        self._plane.observe = None


class AlertmanagerComponent:
    name = "alertmanager"

    def __init__(self, plane: PlaneView) -> None:
        self._plane = plane
        self._server: AlertmanagerServer | None = None
        self._tasks = plane.monitor.group("alertmanager")

    async def start(self) -> None:
        plane = self._plane
        settings = plane.settings
        observe: Observe = need(plane.observe, "observe")
        engine: Engine = need(plane.engine, "engine")
        driver: LocalDriver = need(plane.driver, "runtime")
        alerts = Alerts(
            engine=engine,
            driver=driver,
            metrics=need(plane.metrics, "metrics"),
            min_interval=settings.remediation_interval,
            record_file=settings.observe_dir / "remediations.jsonl",
            tasks=self._tasks,
        )
        alerts.forwarder = AlertForwarder(lambda: plane.alert_sink, redact=plane.redactor)
        await asyncio.to_thread(private_dir, settings.observe_dir)
        await asyncio.to_thread(alerts.load)
        observe.alerts = alerts
        await alerts.resume_rolls()
        watch = ReleaseWatch(
            engine, alerts, lambda: observe.query, interval=settings.release_check_seconds
        )
        self._tasks.spawn(watch.run(), "release-check")
        scaler = Autoscaler(
            engine, alerts, lambda: observe.query, interval=settings.autoscale_seconds
        )
        self._tasks.spawn(scaler.run(), "autoscale")
        if settings.alertmanager == "off" or not _installed(settings.alertmanager_bin):
            return
        host, port = plane.ports.hold(
            settings.alertmanager_listen, setting="SOCLE_ALERTMANAGER_LISTEN"
        )
        server = AlertmanagerServer(
            settings.observe_dir / "alertmanager",
            binary=settings.alertmanager_bin,
            host=host,
            port=port,
            tasks=self._tasks,
        )
        await server.prepare(await plane.service_token(ALERTMANAGER_TOKEN_NAME))
        await server.write_config(
            socle_url=plane.url,
            ca_file=settings.ca or (plane.tls[0] if plane.tls else None),
        )
        await server.start()
        self._server = server
        alerts.manager = server

    async def stop(self) -> None:
        observe = self._plane.observe
        if observe is not None:
            observe.alerts = None
        server, self._server = self._server, None
        await _stop_daemon(server, self._tasks)


async def _stop_daemon(server: EmbeddedDaemon | None, tasks: TaskGroup) -> None:
    """Stop a component's daemon, then its tasks (even when the daemon's stop failed)."""
    try:
        if server is not None:
            await server.stop()
    finally:
        await tasks.close()


def _installed(binary: str) -> bool:
    """Whether ``binary`` exists; if not, say so once and run without it (the control plane
    and its apps matter more than their metrics)."""
    if shutil.which(binary):
        return True
    log.warning(
        "%s is not installed: running without it (scripts/install.sh installs it; "
        "set SOCLE_PROMETHEUS=off / SOCLE_ALERTMANAGER=off to silence this)",
        binary,
    )
    return False


class PrometheusComponent:
    name = "prometheus"

    def __init__(self, plane: PlaneView) -> None:
        self._plane = plane
        self._server: PrometheusServer | None = None
        self._tasks = plane.monitor.group("prometheus")
        self._rules: RuleWriter | None = None
        self._heard: list[Engine] = []
        """Engines whose rule kinds this component listens to (subscribed once each)."""

    async def start(self) -> None:
        plane = self._plane
        settings = plane.settings
        if settings.prometheus == "off" or not _installed(settings.prometheus_bin):
            return
        observe: Observe = need(plane.observe, "observe")
        agent = settings.prometheus == "agent"
        if agent and not settings.metrics_remote_write:
            raise ConfigError(
                "SOCLE_PROMETHEUS=agent forwards every sample to SOCLE_METRICS_REMOTE_WRITE, "
                "which is not set",
                hint="set SOCLE_METRICS_REMOTE_WRITE (and SOCLE_METRICS_QUERY_URL to query "
                "that Prometheus), or use SOCLE_PROMETHEUS=embedded",
            )
        host, port = plane.ports.hold(settings.prometheus_listen, setting="SOCLE_PROMETHEUS_LISTEN")
        server = PrometheusServer(
            settings.observe_dir / "prometheus",
            binary=settings.prometheus_bin,
            host=host,
            port=port,
            retention=settings.prometheus_retention,
            retention_size=settings.prometheus_retention_size,
            tasks=self._tasks,
            agent=agent,
        )
        await server.prepare(await plane.service_token(PROMETHEUS_TOKEN_NAME))
        alerts = observe.alerts
        manager = alerts.manager if alerts is not None else None
        setup = ScrapeSetup(
            socle_url=plane.url,
            token_file=server.token_file,
            ca_file=settings.ca or (plane.tls[0] if plane.tls else None),
            scrape_interval=settings.scrape_interval,
            alert_interval=settings.alert_interval,
            rules_dir=server.rules_dir,
            alertmanager=manager.address if manager is not None else None,
            alertmanager_password_file=(
                manager.web.password_file if manager is not None and manager.web else None
            ),
            remote_write=settings.metrics_remote_write,
            agent=agent,
        )
        await server.write_config(render_config(setup), reload=False)
        engine: Engine = need(plane.engine, "engine")

        async def write(files: Mapping[str, str]) -> None:
            await server.write_rules(files)
            if self._server is server:  # a rewrite (not the first write): end removed alerts
                await self._resolve_removed()

        rules = RuleWriter(lambda: self._rule_files(engine), write, self._tasks)
        self._rules = rules
        # Listen before the first write: an apply that lands while Prometheus starts (the
        # API already serves) is kept as pending, never lost (issue 11).
        if not any(heard is engine for heard in self._heard):
            self._heard.append(engine)
            for kind in RULE_KINDS:
                engine.handler(kind).subscribe(self._rules_changed)
        await rules.write_now()
        await server.start()
        self._server = server
        if not settings.metrics_query_url and not agent:
            observe.query = PrometheusQuery(
                server.url, auth=server.web.pair if server.web is not None else None
            )
        rules.run()
        observe.prometheus = lambda: {**server.to_dict(), "rules": rules.to_dict()}

    @staticmethod
    def _rule_files(engine: Engine) -> dict[str, str]:
        kinds = [engine.handler(kind) for kind in RULE_KINDS]
        return {**builtin_rule_files(), **rule_files(kinds)}

    def _rules_changed(self) -> None:
        """An apply changed AlertRules or SLOs: the writer rewrites the rule files (checked),
        then reloads; changes in a burst coalesce and the last state wins."""
        rules = self._rules
        if rules is not None:
            rules.changed()

    async def _resolve_removed(self) -> None:
        """Prometheus no longer has the removed rules: end their alerts in Alertmanager now
        (else they linger for minutes and the notifiers hear of the end late)."""
        observe = self._plane.observe
        manager = observe.alerts.manager if observe and observe.alerts else None
        if manager is None:
            return
        engine: Engine = need(self._plane.engine, "engine")
        applied = set(engine.handler("AlertRule").rules())
        applied.update(f"SLO/{name}" for name in engine.handler("SLO").rules())
        try:
            await resolve_removed(manager, applied)
        except SocleError as exc:
            log.warning("cannot end the alerts of removed rules: %s", exc.message)

    async def stop(self) -> None:
        observe = self._plane.observe
        server = self._server
        if (
            observe is not None
            and server is not None
            and observe.query is not None
            and observe.query.url == server.url
        ):
            observe.query = None
        if observe is not None:
            observe.prometheus = None
        server, self._server = self._server, None
        self._rules = None
        await _stop_daemon(server, self._tasks)


__all__ = [
    "ALERTMANAGER_TOKEN_NAME",
    "PROMETHEUS_TOKEN_NAME",
    "AlertmanagerComponent",
    "ObserveComponent",
    "PlaneView",
    "PrometheusComponent",
    "app_metrics",
    "reachable_address",
]
