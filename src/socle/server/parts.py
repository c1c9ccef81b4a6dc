"""The control plane's components, in the order :func:`socle.server.serve` starts them.

Each component owns one part (what it opens in ``start`` it closes in ``stop``) and reads
what earlier components made from the shared :class:`Plane`. Adding a subsystem (gitops,
network, observe) is one class here plus one line in :func:`socle.server.build_components`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.server.embed import Server as GranianServer

from socle.api.app import ApiContext, create_app
from socle.api.consul import create_consul_app
from socle.api.instrument import counted, timed
from socle.api.limits import guard
from socle.api.otlp import create_otlp_app
from socle.api.tokens import TokenStore
from socle.backup.guard import check_start_safe
from socle.backup.schedule import VolumeBackupPlan, VolumeBackupScheduler
from socle.backup.service import HomeBackups
from socle.engine.releases import ReleaseStore
from socle.engine.service import Engine
from socle.errors import ConfigError, LeaseLost, need
from socle.fs import write_private
from socle.gitops.notify import Notifications
from socle.gitops.service import GitOps
from socle.network.dns import DnsServer
from socle.network.firewall.compiler import FirewallConfig
from socle.network.firewall.nft import Nft
from socle.network.firewall.service import Firewall, decide_enforcement
from socle.network.ingress import (
    AppPorts,
    Ingress,
    Listen,
    Nginx,
    RegistryEndpoints,
    RuntimeEndpoints,
)
from socle.network.ingress.acme import AcmeCertificates
from socle.network.ingress.credentials import RouteCredentials
from socle.network.ingress.nginx import worker_user
from socle.network.service import NetworkService
from socle.network.templates import TemplateService
from socle.observe.alerts.logrules import LogQueryRules, check_log_query, log_query_specs
from socle.observe.audit import AuditedStore, PlatformAudit
from socle.observe.logs.model import InstanceLabels
from socle.observe.logs.service import LogService
from socle.observe.logs.worker import WorkerStore
from socle.observe.metrics.expiry import ingress_certificate_gauge, lease_gauges
from socle.observe.metrics.ingress import IngressTraffic
from socle.observe.metrics.registry import ControlPlaneMetrics
from socle.observe.service import Observe
from socle.observe.traces.model import Sender
from socle.observe.traces.service import TraceService
from socle.ports import PortBook
from socle.redact import RedactingReader, Redactor
from socle.runtime.local.driver import LocalDriver
from socle.runtime.local.netns import BridgeNetwork, home_prefix, missing_tools
from socle.runtime.local.volumes import LocalVolumeProvider
from socle.secrets.core import SecretsCore
from socle.secrets.registry import default_registry as secrets_registry
from socle.server.addresses import main_listener
from socle.server.components import Components
from socle.settings import Settings, parse_listen
from socle.state.lease import Holder, LeaderLease
from socle.state.registry import StoreRegistry
from socle.state.store import StateStore
from socle.tasks import TaskGroup, TaskMonitor

log = logging.getLogger("socle.server")


@dataclass
class Plane:
    """What the components of one control plane share; filled in as they start."""

    settings: Settings
    stores: StoreRegistry
    monitor: TaskMonitor
    components: Components
    host: str
    port: int
    url: str
    tls: tuple[Path, Path] | None
    ports: PortBook = field(default_factory=PortBook)
    """The TCP ports this control plane holds (picked or configured), until it stops."""
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    keep_apps: bool = True
    fenced: str | None = None
    """Why this control plane stopped acting (leader lease lost), or None."""
    store: StateStore | None = None
    lease: LeaderLease | None = None
    leader_since: float | None = None
    """When this control plane took the leader lease (None: its store needs no lease)."""
    holder: Holder | None = None
    redactor: Redactor = field(default_factory=Redactor)
    """Every secret value the engine resolves, masked in logs and API answers."""
    secrets: SecretsCore | None = None
    driver: LocalDriver | None = None
    volumes: LocalVolumeProvider | None = None
    engine: Engine | None = None
    ingress: Ingress | None = None
    network: NetworkService | None = None
    firewall: Firewall | None = None
    network_isolation: tuple[bool, str] = (False, "the runtime has not started")
    """Whether instances run in their own network namespaces, and why not."""
    bridge_gateway: str | None = None
    """The Socle bridge's address (instances' gateway) when instances are isolated."""
    bridge_dns: str | None = None
    """Where instances reach the DNS server (``GATEWAY:PORT``) when they are isolated."""
    otlp_bridge: str | None = None
    """Where isolated instances reach the OTLP/HTTP receiver (``GATEWAY:PORT``)."""
    tokens: TokenStore | None = None
    """The API tokens (the platform API and the Consul listener share them)."""
    consul_address: str | None = None
    """Where the Consul-compatible API answers (``HOST:PORT``), once it does."""
    dns_address: str | None = None
    """Where the service-discovery DNS answers (``HOST:PORT``), once it does."""
    logs: LogService | None = None
    metrics: ControlPlaneMetrics | None = None
    """The control plane's own metrics (``/metrics``), fed by the engine, runtime and API."""
    observe: Observe | None = None

    async def service_token(self, name: str) -> str:
        """A fresh API token for one of Socle's own daemons (Prometheus, Alertmanager):
        rotated at every start, so the previous one dies with the previous process."""
        tokens = need(self.tokens, "tokens")
        if any(info.name == name for info in await tokens.list()):
            return await tokens.rotate(name)
        return await tokens.create(name)

    gitops: GitOps | None = None
    audit: PlatformAudit | None = None
    """The platform audit log: the store's writes and the API's requests go there."""
    log_worker: WorkerStore | None = None
    """The log store's worker process (it serves the trace store too)."""
    traces: TraceService | None = None

    def instance_env(self) -> dict[str, str]:
        """What every instance gets from the control plane (resolver, OTLP export)."""
        env: dict[str, str] = {}
        if self.dns_address:
            env["SOCLE_DNS"] = self.bridge_dns or self.dns_address
        if self.traces is not None:
            if self.bridge_gateway is None:
                env.update(self.traces.app_env(self.url))
            elif self.otlp_bridge is not None:
                # Instances in their own network namespaces cannot reach the API's loopback
                # listener: they export to the receiver on the bridge's gateway.
                env.update(self.traces.app_env(f"http://{self.otlp_bridge}"))
        return env

    @property
    def alert_sink(self) -> Notifications | None:
        """Where Alertmanager's alerts go to reach the notifiers: GitOps' queue."""
        return self.gitops.notifications if self.gitops is not None else None

    def request_shutdown(self, keep_apps: bool) -> None:
        self.keep_apps = keep_apps
        self.stop_event.set()

    def fence(self, reason: str) -> None:
        """Stop acting at once: apps keep running, the components stop, the process exits."""
        if self.fenced is None:
            self.fenced = reason
            log.error("fencing: %s; stopping the engine, runtime and API", reason)
        self.request_shutdown(True)

    def status(self) -> dict[str, object]:
        """The "control plane" section of ``/api/v1/status``."""
        lease = None
        if self.lease is not None and self.holder is not None:
            lease = {"role": "leader", "since": self.leader_since, **self.holder.to_dict()}
        return {
            "components": self.components.states(),
            "tasks": self.monitor.to_dict(),
            "leader": lease,
            "observe": self.observe.describe() if self.observe is not None else None,
            "network": {
                "consul": self.consul_address,
                "dns": self.dns_address,
                "instances_dns": self.bridge_dns,
                "instances_otlp": self.otlp_bridge,
                "firewall": None
                if self.firewall is None
                else {
                    "enforced": self.firewall.enforcement.enforced,
                    "isolated": self.firewall.enforcement.isolated,
                    "reason": self.firewall.enforcement.reason,
                    "table": f"inet {self.firewall.nft.table_name}",
                    "drift_corrections": self.firewall.drift_corrections,
                },
            },
        }


class AuditComponent:
    """The platform audit log, opened first: every later part's writes are recorded."""

    name = "audit"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane

    async def start(self) -> None:
        self._plane.audit = PlatformAudit(self._plane.settings.platform_audit_dir)

    async def stop(self) -> None:
        audit, self._plane.audit = self._plane.audit, None
        if audit is not None:
            audit.close()


class StoreComponent:
    name = "store"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane

    async def start(self) -> None:
        settings = self._plane.settings
        store = await self._plane.stores.open(settings.store or settings.db_path)
        try:
            # Before anything writes to it: an empty store while this home's apps still
            # run means lost state, and starting would stop every app.
            await check_start_safe(
                store, settings.run_dir, store_name="SOCLE_STORE" if settings.store else "state.db"
            )
        except BaseException:
            await store.close()
            raise
        audit = self._plane.audit
        self._plane.store = AuditedStore(store, audit) if audit is not None else store

    async def stop(self) -> None:
        store, self._plane.store = self._plane.store, None
        if store is not None:
            await store.close()


class LeaseComponent:
    """Leader lease of a shared store (none for SQLite), checked until the process ends.

    With ``standby`` it waits for the lease; otherwise a held lease refuses the start with
    the holder's host, pid and address. Once held, it is checked every
    ``leader_check_seconds``; a lost lease fences the control plane (:meth:`Plane.fence`).
    """

    name = "leader-lease"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane
        self._tasks: TaskGroup = plane.monitor.group("leader-lease")

    async def start(self) -> None:
        plane = self._plane
        settings = plane.settings
        holder = Holder(
            host=os.uname().nodename, pid=os.getpid(), address=plane.url, home=str(settings.home)
        )
        lease = await plane.stores.open_lease(settings.store or settings.db_path, holder)
        if lease is None:
            return
        try:
            await lease.acquire(wait=settings.standby, retry_seconds=settings.leader_check_seconds)
        except BaseException:
            await lease.release()
            raise
        plane.lease = lease
        plane.holder = holder
        plane.leader_since = time.time()
        log.warning("leader lease held: this control plane leads")
        self._tasks.spawn(self._watch(lease), "watch")

    async def _watch(self, lease: LeaderLease) -> None:
        """Check the lease until it is lost; anything unexpected here also fences."""
        interval = self._plane.settings.leader_check_seconds
        reason = "lost the leader lease of the shared state store"
        try:
            while await lease.check():
                await asyncio.sleep(interval)
        except Exception as exc:
            self._plane.monitor.report("leader-lease/watch", exc)
            reason = f"could not check the leader lease ({type(exc).__name__})"
        self._plane.fence(reason)

    async def stop(self) -> None:
        await self._tasks.close()
        lease, self._plane.lease = self._plane.lease, None
        self._plane.holder = self._plane.leader_since = None
        if lease is not None:
            await lease.release()


class SecretsComponent:
    name = "secrets"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane

    async def start(self) -> None:
        plane = self._plane
        store = need(plane.store, "store")
        secrets = SecretsCore(
            store,
            plane.settings.home,
            secrets_registry(),
            dev=plane.settings.dev,
            tasks=plane.monitor,
            audit_dirs=[Path(p) for p in plane.settings.audit_dirs.split(":") if p],
        )
        await secrets.start()
        plane.secrets = secrets
        if plane.metrics is not None:
            lease_gauges(plane.metrics, secrets.lease_summary)

    async def stop(self) -> None:
        if self._plane.metrics is not None:
            lease_gauges(self._plane.metrics, None)
        secrets, self._plane.secrets = self._plane.secrets, None
        if secrets is not None:
            await secrets.stop()


def instance_network(settings: Settings) -> tuple[BridgeNetwork | None, str]:
    """The bridge every instance's namespace is plugged into, or None and why not."""
    if not settings.network_isolation:
        return None, "per-instance network namespaces are turned off (SOCLE_NETWORK_ISOLATION=0)"
    if os.geteuid() != 0:
        return None, "the control plane does not run as root (no per-instance network namespace)"
    missing = missing_tools()
    if missing:
        return None, f"missing {', '.join(missing)} (iproute2, util-linux, nftables, procps)"
    network = BridgeNetwork(
        bridge=settings.network_bridge,
        network=ipaddress.IPv4Network(settings.network_range),
        prefix=home_prefix(settings.home),
        owner=str(settings.home),
    )
    return network, ""


class RuntimeComponent:
    """The local supervisor; on stop, apps keep running unless the shutdown said otherwise."""

    name = "runtime"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane

    async def start(self) -> None:
        settings = self._plane.settings
        network, why = instance_network(settings)
        self._plane.network_isolation = (network is not None, why)
        self._plane.bridge_gateway = str(network.gateway) if network is not None else None
        if network is None:
            log.warning("instances share the host's network: %s", why)
        driver = LocalDriver(
            settings.run_dir,
            settings.logs_dir,
            log_max_bytes=settings.log_max_bytes,
            log_backups=settings.log_backups,
            tasks=self._plane.monitor,
            network=network,
        )
        await driver.start()
        self._plane.driver = driver
        # The port book's later picks (Consul face, Prometheus, Alertmanager) must not take
        # a port an instance was given and has not bound yet.
        self._plane.ports.avoid_also(driver.ports_in_use)
        isolation = driver.isolation()
        if isolation.warning:
            log.warning("isolation: %s", isolation.warning)

    async def stop(self) -> None:
        driver, self._plane.driver = self._plane.driver, None
        if driver is not None:
            await driver.close(stop_instances=not self._plane.keep_apps)


class LogsComponent:
    """The log store: instances' output (tailed from the shims' files) and Socle's own
    records, masked, sealed into chained segments, kept by age and size."""

    name = "logs"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane

    def _instances(self) -> dict[str, InstanceLabels]:
        driver = self._plane.driver
        if driver is None:
            return {}
        return {
            s.id: InstanceLabels(s.app, s.environment, str(s.release)) for s in driver.instances()
        }

    async def start(self) -> None:
        plane = self._plane
        settings = plane.settings
        store = WorkerStore(
            settings.logstore_dir,
            redact=plane.redactor,
            retention_seconds=settings.log_retention_seconds,
            retention_bytes=settings.log_retention_bytes,
            segment_seconds=settings.log_segment_seconds,
            segment_rows=settings.log_segment_rows,
            traces_root=settings.traces_dir,
            traces_retention_seconds=settings.trace_retention_seconds,
            traces_max_spans=settings.trace_max_spans,
        )
        plane.log_worker = store
        service = LogService(
            store,
            settings.logs_dir,
            self._instances,
            plane.monitor.group("logs"),
            loki_url=settings.loki_url,
        )
        plane.logs = service
        try:
            await service.start()
        except BaseException:
            plane.logs = None
            raise

    async def stop(self) -> None:
        service, self._plane.logs = self._plane.logs, None
        self._plane.log_worker = None
        if service is not None:
            await service.stop()


class TracesComponent:
    """Socle's own spans (OpenTelemetry SDK) and the apps' (OTLP receiver) into the trace
    store that the log store's worker serves; exported over OTLP too when configured."""

    name = "traces"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane

    async def start(self) -> None:
        plane = self._plane
        service = TraceService(
            need(plane.log_worker, "logs"),
            plane.settings.traces_dir,
            plane.monitor.group("traces"),
            otlp_endpoint=plane.settings.otlp_endpoint,
        )
        await service.start()
        plane.traces = service

    async def stop(self) -> None:
        service, self._plane.traces = self._plane.traces, None
        if service is not None:
            await service.stop()


class VolumesComponent:
    """The local volume provider: its enforced volumes mounted again after a reboot or a
    crash (before the engine starts apps that mount them). On stop the mounts stay: apps
    that outlive the control plane keep writing to them."""

    name = "volumes"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane

    async def start(self) -> None:
        provider = LocalVolumeProvider(self._plane.settings.volumes_dir)
        await provider.start()
        self._plane.volumes = provider

    async def stop(self) -> None:
        self._plane.volumes = None


class VolumeBackupsComponent:
    """Scheduled backups of the Volumes whose manifests ask for one (``spec.backup``)."""

    name = "volume-backups"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane
        self._scheduler: VolumeBackupScheduler | None = None

    async def plans(self) -> list[VolumeBackupPlan]:
        engine = self._plane.engine
        if engine is None:
            return []
        return [
            VolumeBackupPlan(name, backup["schedule"], int(backup.get("keep", 7)))
            for name, state in sorted(engine.handler("Volume").declared().items())
            if (backup := state.manifest["spec"].get("backup"))
        ]

    async def start(self) -> None:
        plane = self._plane
        scheduler = VolumeBackupScheduler(
            need(plane.volumes, "volumes"), plane.settings.backups_dir, self.plans
        )
        self._scheduler = scheduler
        await scheduler.start()
        if plane.metrics is not None:
            plane.metrics.gauge_source(
                "socle_volume_backup_failing",
                "1 while the last scheduled backup of a volume failed.",
                ("volume",),
                lambda: [((name,), 1.0) for name in sorted(scheduler.failures)],
            )

    async def stop(self) -> None:
        if self._plane.metrics is not None:
            self._plane.metrics.gauge_source("socle_volume_backup_failing", "", (), None)
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            await scheduler.stop()


class EngineComponent:
    name = "engine"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane
        self._releases: ReleaseStore | None = None
        self._templates: TemplateService | None = None

    async def start(self) -> None:
        plane = self._plane
        settings = plane.settings
        reader = RedactingReader(need(plane.secrets, "secrets"), plane.redactor)
        driver = need(plane.driver, "runtime")
        templates = None
        if plane.network is not None:
            templates = TemplateService(
                settings.home / "templates",
                plane.network.registry,
                plane.network.kv,
                driver,
                secrets=reader,
                sandboxed=lambda: driver.isolation().mode.startswith("namespaces"),
                owner=driver.app_uid,
                tasks=plane.monitor,
            )
            await templates.start()
            self._templates = templates
        releases = ReleaseStore(
            settings.releases_dir,
            keep=settings.releases_kept,
            max_parallel=settings.max_parallel_builds,
            sandbox=need(plane.driver, "runtime").build_sandbox(),
        )
        engine = Engine(
            need(plane.store, "store"),
            need(plane.driver, "runtime"),
            releases,
            secrets=reader,
            volumes=need(plane.volumes, "volumes"),
            cache_file=settings.home / "cache" / "plan.pickle",
            secret_check_seconds=settings.secret_check_seconds,
            tasks=plane.monitor,
            instance_env=plane.instance_env() or None,
            externals=plane.network.externals if plane.network is not None else None,
            events=plane.metrics,
            templates=templates,
            firewall=plane.firewall,
            log_query_check=lambda text: check_log_query(
                text, plane.logs.store.check_regexes if plane.logs is not None else None
            ),
        )
        try:
            await engine.start()
        except BaseException:
            await releases.close()
            if templates is not None:
                await templates.stop()
            raise
        self._releases = releases
        plane.engine = engine
        if plane.firewall is not None:
            await plane.firewall.release()

    async def stop(self) -> None:
        engine, self._plane.engine = self._plane.engine, None
        try:
            if engine is not None:
                await engine.stop()
        finally:
            releases, self._releases = self._releases, None
            templates, self._templates = self._templates, None
            if templates is not None:
                await templates.stop()
            if releases is not None:
                await releases.close()


DNS_SETTING = "SOCLE_DNS_LISTEN"


class NetworkComponent:
    """The connect layer: the service registry (fed by the runtime), Consul KV and agent
    services from the store. Starts before the engine, so that instances started by the
    engine are registered from their first ready status."""

    name = "network"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane
        self._dns: DnsServer | None = None
        self._bridge_dns: DnsServer | None = None

    async def start(self) -> None:
        plane = self._plane
        network = NetworkService(
            need(plane.store, "store"), need(plane.driver, "runtime"), tasks=plane.monitor
        )
        await network.start()
        try:
            host, port = parse_listen(plane.settings.dns_listen)
            server = self._dns_server(network, host, port)
            try:
                await server.start()
            except OSError as exc:
                raise ConfigError(
                    f"cannot serve DNS on {plane.settings.dns_listen}: {exc.strerror or exc}",
                    hint="another program uses that port; set SOCLE_DNS_LISTEN=HOST:PORT "
                    "(port 0 picks a free one)",
                ) from exc
        except BaseException:
            await network.stop()
            raise
        bridge_server: DnsServer | None = None
        if plane.bridge_gateway is not None:
            # Isolated instances have their own loopback: they ask the gateway instead.
            # Port 0 picked a port free on the loopback only: when the gateway already has
            # it (another home's bridge DNS), pick again instead of failing the start.
            attempts = 5 if port == 0 else 1
            for attempt in range(attempts):
                bridge_server = DnsServer(network.registry, plane.bridge_gateway, server.address[1])
                try:
                    await bridge_server.start()
                    break
                except OSError as exc:
                    if attempt + 1 < attempts:
                        await server.stop()
                        server = self._dns_server(network, host, port)
                        await server.start()
                        continue
                    await server.stop()
                    await network.stop()
                    raise ConfigError(
                        f"cannot serve DNS to instances on {plane.bridge_gateway}:"
                        f"{server.address[1]}: {exc.strerror or exc}",
                        hint="another program uses that port on the Socle bridge; set "
                        "SOCLE_DNS_LISTEN to another port",
                    ) from exc
            assert bridge_server is not None  # the loop either broke with it or raised
            plane.bridge_dns = host_port(*bridge_server.address)
        self._dns = server
        self._bridge_dns = bridge_server
        plane.network = network
        plane.dns_address = host_port(*server.address)
        log.warning("service-discovery DNS listening on %s (udp and tcp)", plane.dns_address)

    def _dns_server(self, network: NetworkService, host: str, port: int) -> DnsServer:
        """The DNS server on ``host:port``, its TCP port held in the plane's port book (a
        UDP pick must not land on a port another listener of the plane holds)."""
        ports, listen = self._plane.ports, self._plane.settings.dns_listen

        def claim(picked: int) -> None:
            if port:
                ports.hold(listen, setting=DNS_SETTING)
            else:
                ports.claim(host, picked, setting=DNS_SETTING)

        return DnsServer(
            network.registry,
            host,
            port,
            claim=claim,
            release=lambda picked: ports.release(host, picked),
        )

    async def stop(self) -> None:
        network, self._plane.network = self._plane.network, None
        dns_server, self._dns = self._dns, None
        bridge_server, self._bridge_dns = self._bridge_dns, None
        self._plane.dns_address = self._plane.bridge_dns = None
        if dns_server is not None:
            await dns_server.stop()
        if bridge_server is not None:
            await bridge_server.stop()
        if network is not None:
            await network.stop()


def _bridge_services(
    bridge_dns: str | None, otlp_bridge: str | None = None
) -> tuple[tuple[str, str, int], ...]:
    """What instances may always reach on the host: the DNS server and the OTLP receiver
    on the gateway."""
    services: list[tuple[str, str, int]] = []
    if bridge_dns is not None:
        host, port = parse_listen(bridge_dns)
        services += [("udp", host, port), ("tcp", host, port)]
    if otlp_bridge is not None:
        host, port = parse_listen(otlp_bridge)
        services.append(("tcp", host, port))
    return tuple(services)


class Listener:
    """One HTTP listener: a granian server serving ``app`` as a task of ``tasks``.

    Every open connection holds one of ``backpressure`` slots, idle or not: enough slots
    that hundreds of idle clients starve nobody, a deep backlog for bursts, and a header
    timeout that also closes idle keep-alive connections. HTTP/1.1 only: granian's HTTP/2
    connections have no idle timeout (our clients speak 1.1). A listener for untrusted
    senders gets a smaller ``backlog`` and fewer ``max_connections``.
    """

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        settings: Settings,
        tasks: TaskGroup,
        *,
        tls: tuple[Path, Path] | None = None,
        backlog: int = 1024,
        max_connections: int | None = None,
    ) -> None:
        self._server = GranianServer(
            app,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            log_enabled=False,
            http=HTTPModes.http1,
            backlog=backlog,
            backpressure=max_connections or settings.max_connections,
            http1_settings=HTTP1Settings(header_read_timeout=int(settings.header_timeout * 1000)),
            ssl_cert=tls[0] if tls else None,
            ssl_key=tls[1] if tls else None,
        )
        self._serving = tasks.spawn(self._server.serve(), "serve")

    async def stop(self) -> None:
        self._server.stop()  # type: ignore[no-untyped-call]
        with contextlib.suppress(asyncio.CancelledError):
            await self._serving


class OtlpBridgeComponent:
    """The OTLP/HTTP receiver on the Socle bridge's gateway, for instances in their own
    network namespaces (see :mod:`socle.api.otlp`). Starts after the runtime (which sets
    up the bridge) and the traces, before the firewall (which lets instances reach it)
    and the engine (which gives instances its address)."""

    name = "otlp"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane
        self._listener: Listener | None = None

    async def start(self) -> None:
        plane = self._plane
        settings = plane.settings
        gateway = plane.bridge_gateway
        if plane.traces is None or gateway is None:
            return
        driver = need(plane.driver, "runtime")
        host, port = plane.ports.hold(
            host_port(gateway, settings.otlp_bridge_port), setting="SOCLE_OTLP_BRIDGE_PORT"
        )

        def identify(address: str) -> Sender | None:
            for status in driver.instances():
                if status.address == address and not _is_loopback(address):
                    return Sender(status.app, status.environment, status.id)
            return None

        app = create_otlp_app(
            plane.traces,
            identify,
            max_body_bytes=settings.max_trace_push_bytes,
            max_inflated_bytes=4 * settings.max_trace_push_bytes,
            body_timeout=settings.body_timeout,
        )
        self._listener = Listener(
            app,
            host,
            port,
            settings,
            plane.monitor.group("otlp"),
            backlog=256,
            max_connections=min(settings.max_connections, 256),
        )
        plane.otlp_bridge = host_port(host, port)
        log.warning("OTLP/HTTP receiver for instances listening on http://%s", plane.otlp_bridge)

    async def stop(self) -> None:
        self._plane.otlp_bridge = None
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()


class FirewallComponent:
    """NetworkPolicy objects compiled into nftables table ``inet socle`` (see
    :mod:`socle.network.firewall`). Starts before the engine, which hands it the policies;
    at stop the loaded ruleset stays (apps keep running, and keep their rules)."""

    name = "firewall"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane

    async def start(self) -> None:
        plane = self._plane
        settings = plane.settings
        isolated, why = plane.network_isolation
        enforcement = decide_enforcement(settings.firewall, isolated=isolated, why=why)
        firewall = Firewall(
            need(plane.driver, "runtime"),
            FirewallConfig(
                bridge=settings.network_bridge,
                isolate=enforcement.isolated,
                host_services=_bridge_services(plane.bridge_dns, plane.otlp_bridge),
            ),
            enforcement,
            nft=Nft(netns=settings.firewall_netns),
            tasks=plane.monitor,
        )
        await firewall.start()
        plane.firewall = firewall
        if plane.metrics is not None:
            plane.metrics.gauge_source(
                "socle_firewall_drift_corrections",
                "Times since start the live firewall table was found changed outside Socle "
                "and loaded again.",
                (),
                lambda: [((), float(firewall.drift_corrections))],
            )
        if not enforcement.enforced:
            log.warning("firewall NOT enforced: %s", enforcement.reason)

    async def stop(self) -> None:
        firewall, self._plane.firewall = self._plane.firewall, None
        if firewall is not None:
            await firewall.stop()


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ConsulComponent:
    """The Consul-compatible API (catalog, health, agent, KV) on its own listener, so that
    ``/v1/...`` stays the Vault API on the main one. Same tokens as the platform API."""

    name = "consul"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane
        self._listener: Listener | None = None

    async def start(self) -> None:
        plane = self._plane
        settings = plane.settings
        tokens = plane.tokens or TokenStore(need(plane.store, "store"))
        plane.tokens = tokens
        host, port = plane.ports.hold(settings.consul_listen, setting="SOCLE_CONSUL_LISTEN")
        if not _is_loopback(host):
            # This listener speaks plain HTTP (Consul clients' default): tokens would
            # cross the network in clear text.
            raise ConfigError(
                f"refusing to serve the Consul API on {settings.consul_listen}: it has no TLS",
                hint="keep SOCLE_CONSUL_LISTEN on a loopback address (e.g. 127.0.0.1:8500)",
            )
        app = create_consul_app(need(plane.network, "network"), tokens)
        self._listener = Listener(app, host, port, settings, plane.monitor.group("consul"))
        plane.consul_address = host_port(host, port)
        log.warning("Consul-compatible API listening on http://%s", plane.consul_address)

    async def stop(self) -> None:
        self._plane.consul_address = None
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class IngressComponent:
    """nginx as the HTTP entry point: routes and default routes to healthy instances.

    nginx lives under ``home/ingress`` and outlives the control plane like the apps (the
    next start adopts it); ``socle down`` without ``--keep-apps`` stops it. When nginx is
    not installed, or its ports are taken, the control plane still starts and says why.
    """

    name = "ingress"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane
        self._acme: AcmeCertificates | None = None
        self._traffic: IngressTraffic | None = None

    async def start(self) -> None:
        plane = self._plane
        settings = plane.settings
        if not settings.ingress:
            return
        if not settings.nginx.exists():
            log.warning("ingress: %s is not installed; no ingress", settings.nginx)
            return
        engine = need(plane.engine, "engine")
        routes = engine.handler("Route")
        prefix = settings.home / "ingress"
        user = worker_user()
        if user is None:
            temp = prefix / "tmp"
        else:
            # The workers run as an unprivileged user who cannot enter SOCLE_HOME: their
            # scratch folder (request bodies) lives outside, in /run (only root creates
            # entries there: no one can plant a symlink first), owned by them, owner-only.
            digest = hashlib.sha256(str(prefix).encode()).hexdigest()[:16]
            temp = Path("/run") / f"socle-ingress-{digest}"
        listen = Listen(
            http=parse_listen(settings.ingress_http),
            https=parse_listen(settings.ingress_https),
            prefix=prefix,
            temp=temp,
            user=user,
            acme_root=temp / "acme",
            metrics_log=prefix / "logs" / "metrics.log",
        )

        def apps() -> list[AppPorts]:
            return [
                AppPorts(name, t.environment, tuple(p.name for p in t.app.spec.ports))
                for name, t in engine.controller.targets().items()
            ]

        owner = pwd.getpwnam(user.split()[0]).pw_uid if user else None
        acme = AcmeCertificates(
            prefix / "acme",
            prefix / "certs",
            temp / "acme",
            changed=lambda: None,
            verify=str(settings.acme_ca) if settings.acme_ca else True,
            challenge_owner=owner,
        )
        group = pwd.getpwnam(user.split()[0]).pw_gid if user else None
        credentials = RouteCredentials(
            plane.secrets,
            prefix / "certs",
            temp.with_name(f"{temp.name}-auth") if user else temp,
            acme=acme,
            auth_group=group,
        )
        nginx = Nginx(prefix, binary=str(settings.nginx), temp=temp)
        ingress = Ingress(
            nginx,
            listen,
            RegistryEndpoints(plane.network.registry)
            if plane.network is not None
            else RuntimeEndpoints(need(plane.driver, "runtime")),
            routes=routes.routes,
            apps=apps,
            extras=credentials,
            tasks=plane.monitor,
        )
        acme.set_changed(ingress.changed)
        self._acme = acme
        routes.subscribe(ingress.changed)
        routes.set_checker(ingress.check)
        engine.controller.set_drain(ingress.drain)
        # Per-route metrics: nginx's access records, read as they are written.
        traffic = IngressTraffic(
            prefix / "logs" / "metrics.log", ingress.route_labels, reopen=nginx.reopen_logs
        )
        await traffic.start()
        self._traffic = traffic
        if plane.metrics is not None:
            plane.metrics.collector("ingress", traffic)
            ingress_certificate_gauge(plane.metrics, lambda: ingress.view()["routes"])
        await ingress.start()
        plane.ingress = ingress

    async def stop(self) -> None:
        ingress, self._plane.ingress = self._plane.ingress, None
        acme, self._acme = self._acme, None
        if acme is not None:
            await acme.close()
        traffic, self._traffic = self._traffic, None
        if traffic is not None:
            if self._plane.metrics is not None:
                self._plane.metrics.collector("ingress", None)
                ingress_certificate_gauge(self._plane.metrics, None)
            await traffic.close()
        if ingress is None:
            return
        engine = self._plane.engine
        if engine is not None:
            engine.controller.set_drain(None)
            engine.handler("Route").set_checker(None)
        await ingress.stop(stop_nginx=not self._plane.keep_apps)


class LogAlertsComponent:
    """Evaluates AlertRules' ``logQuery`` on the log store at every scrape interval and
    exports the values Prometheus alerts on (:mod:`socle.observe.alerts.logrules`)."""

    name = "log-alerts"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane
        self._tasks: TaskGroup | None = None

    async def start(self) -> None:
        plane = self._plane
        engine = need(plane.engine, "engine")
        logs = need(plane.logs, "logs")
        metrics = need(plane.metrics, "metrics")
        rules = LogQueryRules(log_query_specs(engine.handler("AlertRule").rules), logs.store.metric)
        metrics.collector("log-alerts", rules)
        self._tasks = plane.monitor.group("log-alerts")
        # At the pace Prometheus evaluates rules (never slower than its scrapes).
        settings = plane.settings
        pace = min(settings.alert_interval, settings.scrape_interval)
        self._tasks.spawn(rules.run(pace), "evaluate")

    async def stop(self) -> None:
        if self._plane.metrics is not None:
            self._plane.metrics.collector("log-alerts", None)
        tasks, self._tasks = self._tasks, None
        if tasks is not None:
            await tasks.close()


OUT_OF_SYNC_GAUGE = "socle_gitops_source_out_of_sync"
"""Watched by the built-in rule ``SocleEnvironmentOutOfSync``."""


class GitOpsComponent:
    """Sources, their sync loops (poll, webhook, on demand) and drift checks."""

    name = "gitops"

    def __init__(self, plane: Plane) -> None:
        self._plane = plane

    async def start(self) -> None:
        plane = self._plane
        gitops = GitOps(
            need(plane.store, "store"),
            need(plane.engine, "engine"),
            plane.settings.home,
            secrets=RedactingReader(need(plane.secrets, "secrets"), plane.redactor),
            tasks=plane.monitor,
            drift_seconds=plane.settings.gitops_drift_seconds,
            events=plane.metrics,
        )
        await gitops.start()
        plane.gitops = gitops
        if plane.metrics is not None:
            plane.metrics.gauge_source(
                OUT_OF_SYNC_GAUGE,
                "1 while a GitOps source's environment does not run its branch's commit "
                "(state out_of_sync or failed).",
                ("env", "source", "state"),
                lambda: [(row, 1.0) for row in gitops.not_in_sync()],
            )

    async def stop(self) -> None:
        if self._plane.metrics is not None:
            self._plane.metrics.gauge_source(OUT_OF_SYNC_GAUGE, "", (), None)
        gitops, self._plane.gitops = self._plane.gitops, None
        if gitops is not None:
            await gitops.stop()


class ApiComponent:
    """The HTTP listener: the platform API and the Vault API (see :mod:`.addresses`)."""

    name = "api"

    def __init__(self, plane: Plane, *, status: Callable[[], dict[str, object]]) -> None:
        self._plane = plane
        self._status = status
        self._listener: Listener | None = None

    async def start(self) -> None:
        plane = self._plane
        settings = plane.settings
        tokens = plane.tokens or TokenStore(need(plane.store, "store"))
        await tokens.ensure_admin(settings.token_file)
        plane.tokens = tokens
        ctx = ApiContext(
            engine=need(plane.engine, "engine"),
            driver=need(plane.driver, "runtime"),
            tokens=tokens,
            request_shutdown=plane.request_shutdown,
            control_plane=self._status,
            backups=HomeBackups(settings, plane.volumes),
            redact=plane.redactor,
            ingress=lambda: plane.ingress,
            registry=plane.network.registry if plane.network is not None else None,
            logs=plane.logs,
            observe=plane.observe,
            gitops=plane.gitops,
            firewall=plane.firewall,
            audit=plane.audit,
            traces=plane.traces,
        )
        platform: Any = create_app(ctx)
        vault: Any = need(plane.secrets, "secrets").asgi
        if plane.metrics is not None:
            platform, vault = timed(platform, plane.metrics), counted(vault, plane.metrics)
        app = guard(
            main_listener(platform, vault),
            tokens,
            max_body_bytes=settings.max_body_bytes,
            max_secrets_body_bytes=settings.max_secrets_body_bytes,
            max_log_push_bytes=settings.max_log_push_bytes,
            body_timeout=settings.body_timeout,
            audit=plane.audit,
            max_trace_push_bytes=settings.max_trace_push_bytes,
            traced=plane.traces is not None,
        )
        self._listener = Listener(
            app, plane.host, plane.port, settings, plane.monitor.group("api"), tls=plane.tls
        )
        info: dict[str, object] = {"url": plane.url, "pid": os.getpid()}
        if plane.consul_address:
            info["consul"] = plane.consul_address
        if plane.dns_address:
            info["dns"] = plane.dns_address
        write_private(settings.server_file, json.dumps(info) + "\n")
        log.warning("socle control plane listening on %s (home %s)", plane.url, settings.home)

    async def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._plane.settings.server_file.unlink()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()


def check_not_fenced(plane: Plane) -> None:
    if plane.fenced is not None:
        raise LeaseLost(
            f"this control plane stopped acting: {plane.fenced}",
            hint="another control plane may lead now; apps of this host kept running. "
            "Start it again (with --standby to wait for the lease)",
        )


__all__ = [
    "ApiComponent",
    "AuditComponent",
    "ConsulComponent",
    "EngineComponent",
    "FirewallComponent",
    "IngressComponent",
    "LeaseComponent",
    "LogAlertsComponent",
    "LogsComponent",
    "NetworkComponent",
    "Plane",
    "RuntimeComponent",
    "SecretsComponent",
    "StoreComponent",
    "TracesComponent",
    "check_not_fenced",
]
