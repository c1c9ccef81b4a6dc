"""The control plane process: the composition root, one asyncio loop.

:func:`build_components` lists the components in start order (store, leader lease, secrets,
runtime, volumes, engine, backups, observe, API, Alertmanager, Prometheus); :func:`serve` starts them, waits for a shutdown request (SIGTERM,
SIGINT, ``POST /api/v1/shutdown``) or a fence (the leader lease was lost), then stops them in
reverse. Stopping the control plane (even ``kill -9``) leaves app instances running; the next
start re-adopts them. ``socle down`` stops the apps first.

One control plane per SOCLE_HOME (an flock); on a shared PostgreSQL store, one leader per
database (the leader lease: the second one refuses, or waits with ``--standby``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import ipaddress
import logging
import os
import resource
import signal
import sys
import threading
from pathlib import Path

from socle.errors import ConfigError
from socle.fs import UMASK, private_dir, tighten, try_lock
from socle.observe.components import (
    AlertmanagerComponent,
    ObserveComponent,
    PrometheusComponent,
)
from socle.observe.metrics.registry import ControlPlaneMetrics
from socle.ports import PortBook
from socle.redact import Redactor
from socle.redact import install as install_redactor
from socle.server.components import Component, Components
from socle.server.parts import (
    ApiComponent,
    AuditComponent,
    ConsulComponent,
    EngineComponent,
    FirewallComponent,
    GitOpsComponent,
    IngressComponent,
    LeaseComponent,
    LogAlertsComponent,
    LogsComponent,
    NetworkComponent,
    OtlpBridgeComponent,
    Plane,
    RuntimeComponent,
    SecretsComponent,
    StoreComponent,
    TracesComponent,
    VolumeBackupsComponent,
    VolumesComponent,
    check_not_fenced,
)
from socle.settings import LISTEN_SETTINGS, Settings, parse_listen
from socle.state.registry import StoreRegistry, default_registry
from socle.tasks import TaskMonitor

log = logging.getLogger("socle.server")

__all__ = ["Component", "Components", "build_components", "run", "serve"]


def _url(host: str, port: int, *, tls: bool) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """The API's certificate and key; refuse to serve plain HTTP beyond loopback."""
    host, _ = parse_listen(settings.listen)
    if settings.tls_cert is None and settings.tls_key is None:
        if not _loopback(host):
            raise ConfigError(
                f"refusing to listen on {settings.listen} without TLS",
                hint="set SOCLE_TLS_CERT and SOCLE_TLS_KEY (PEM files; the secrets engine's "
                "PKI can issue them), or listen on 127.0.0.1",
            )
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ConfigError("TLS needs both SOCLE_TLS_CERT and SOCLE_TLS_KEY")
    for path in (settings.tls_cert, settings.tls_key):
        if not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist or is not a file")
    return settings.tls_cert, settings.tls_key


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _raise_nofile() -> None:
    """Open-file soft limit up to the hard limit: every client connection is a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _HomeLock:
    """One control plane per SOCLE_HOME: an flock held for the life of the process."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = try_lock(self._path)
        if fd is None:
            raise ConfigError(
                f"another Socle control plane is running with {self._path.parent}",
                hint="use `socle status`, or `socle down` to stop it",
            )
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def build_components(plane: Plane) -> Components:
    """The control plane, in start order. A new subsystem is one more line here."""
    components = plane.components
    components.add(AuditComponent(plane))
    components.add(StoreComponent(plane))
    components.add(LeaseComponent(plane))
    components.add(SecretsComponent(plane))
    components.add(RuntimeComponent(plane))
    components.add(LogsComponent(plane))
    components.add(TracesComponent(plane))
    components.add(VolumesComponent(plane))
    components.add(NetworkComponent(plane))
    components.add(OtlpBridgeComponent(plane))
    components.add(FirewallComponent(plane))
    components.add(EngineComponent(plane))
    components.add(VolumeBackupsComponent(plane))
    components.add(IngressComponent(plane))
    components.add(ConsulComponent(plane))
    components.add(ObserveComponent(plane))
    components.add(LogAlertsComponent(plane))
    components.add(GitOpsComponent(plane))
    components.add(ApiComponent(plane, status=plane.status))
    components.add(AlertmanagerComponent(plane))
    components.add(PrometheusComponent(plane))
    return components


async def serve(settings: Settings, *, stores: StoreRegistry | None = None) -> None:
    tls = _tls_files(settings)
    redactor = Redactor()  # fed with every secret value the engine resolves
    install_redactor(redactor)
    os.umask(UMASK)  # nothing the control plane creates is readable by others
    private_dir(settings.home)
    home_lock = _HomeLock(settings.home / "server.lock")
    home_lock.acquire()
    ports = PortBook()
    try:
        tightened = await asyncio.to_thread(tighten, settings.home)
        if tightened.folders or tightened.files:
            log.warning(
                "tightened %s: %d folder(s) and %d file(s) were readable by others",
                settings.home,
                tightened.folders,
                tightened.files,
            )
        _raise_nofile()
        # Explicit ports that children bind later must never come back from a port-0 pick.
        ports.avoid(getattr(settings, name) for name in LISTEN_SETTINGS)
        host, port = ports.hold(settings.listen, setting="--listen / SOCLE_LISTEN")
        monitor = TaskMonitor()
        plane = Plane(
            redactor=redactor,
            settings=settings,
            stores=stores if stores is not None else default_registry(),
            monitor=monitor,
            metrics=ControlPlaneMetrics(monitor),
            components=Components(),
            host=host,
            port=port,
            url=_url(host, port, tls=tls is not None),
            tls=tls,
            ports=ports,
        )
        components = build_components(plane)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, plane.request_shutdown, True)
        await _run(plane, components)
    finally:
        ports.close()
        home_lock.release()
    check_not_fenced(plane)


async def _run(plane: Plane, components: Components) -> None:
    """Start (interruptible by a shutdown request, e.g. a standby told to stop), wait, stop."""
    starting = asyncio.ensure_future(components.start())
    stopping = asyncio.ensure_future(plane.stop_event.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        log.warning("stop requested while starting; stopping what started")
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        stopping.cancel()
        return
    try:
        starting.result()  # a failed start already stopped what started: re-raise
    except BaseException:
        stopping.cancel()
        raise
    # What the start built lives as long as the process: move it out of the cyclic GC's
    # reach, so that full collections under load scan only what requests allocate
    # (measured: p99 of KV v2 writes at 64 connections 280-290 ms -> 80-135 ms).
    gc.collect()
    gc.freeze()
    try:
        await stopping
    finally:
        log.warning(
            "socle control plane stopping (apps %s)", "kept" if plane.keep_apps else "stopped"
        )
        await components.stop()


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO: the control plane's own calls to Prometheus and
    # Alertmanager (readiness polls, proxied queries) would drown the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(serve(settings))
    log.warning("socle control plane stopped")
    _exit_now()


def _exit_now() -> None:
    """End the process at once after a clean stop, skipping the interpreter's teardown.

    Every component has stopped and the event loop has closed (its executor threads joined):
    what is left is freeing the tens of thousands of objects the imports built (schemas,
    routes, models), which costs more CPU than starting takes on a loaded host (measured:
    0.3-0.5 s of CPU, 0.8 s between the last component stopped and the exit on 2 busy
    cores) and makes ``socle down`` and every restart wait for nothing. Threads that would
    keep the interpreter alive are still waited for (as the interpreter does first), exit
    hooks still run and logs are flushed; only a failed start or stop (an exception) takes
    the ordinary way out.
    """
    wait_for_threads = getattr(threading, "_shutdown", None)
    if wait_for_threads is None:
        return  # not the CPython this was measured on: the ordinary way out
    wait_for_threads()  # as the interpreter's own exit: executors' workers, non-daemon threads
    atexit._run_exitfuncs()  # logging.shutdown among them: every handler flushed and closed
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)
