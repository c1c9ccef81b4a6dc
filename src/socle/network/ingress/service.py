"""The ingress: routes + healthy endpoints -> nginx configuration, kept true as both change.

Inputs are three callables and one :class:`EndpointSource`, so the ingress knows nothing of
the engine: ``routes()`` (the applied Route objects), ``apps()`` (each applied app, its
environment and its ports: apps with a port and no Route get the default route
``http://APP.ENV.localhost:PORT/``) and the endpoints. Any change calls :meth:`changed`,
which renders again after a short debounce (many instance changes of one rollout become one
reload) and hands the text to nginx in a thread. Rendering is cheap and deterministic, so an
unchanged text is never reloaded.

Draining (:meth:`drain`): before the rollout controller stops an instance it asks the
ingress to take it out of every upstream; the ingress reloads nginx at once and waits until
the new workers took over, so no new request reaches the instance it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from socle.model.kinds import declared_name
from socle.model.route import ACME_CHALLENGE_PATH, Route
from socle.network.ingress.endpoints import Endpoint, EndpointSource
from socle.network.ingress.nginx import IngressError, Nginx
from socle.network.ingress.render import (
    Listen,
    RenderError,
    RouteConf,
    Server,
    TlsFiles,
    render,
)
from socle.tasks import TaskMonitor, within

log = logging.getLogger("socle.ingress")

DEBOUNCE_SECONDS = 0.05
RESYNC_SECONDS = 5.0


@dataclass(frozen=True)
class AppPorts:
    """An applied app as the default routes need it."""

    name: str
    environment: str
    ports: tuple[str, ...]


@dataclass
class Extras:
    """What a route needs from the secrets engine (TLS files, an htpasswd file), or why not."""

    tls: TlsFiles | None = None
    htpasswd: Path | None = None
    error: str | None = None
    certificate: dict[str, Any] | None = None


ExtrasResolver = Callable[[Route], Awaitable[Extras]]


async def _no_extras(route: Route) -> Extras:
    if route.spec.tls is not None or route.spec.basic_auth is not None:
        return Extras(error="this control plane has no secrets engine for TLS or basic auth")
    return Extras()


@dataclass
class _Row:
    name: str
    kind: str
    host: str
    path: str
    target: str
    port: str
    conf: RouteConf | None
    error: str | None = None
    certificate: dict[str, Any] | None = None
    upstreams: list[dict[str, Any]] = field(default_factory=list)
    pending: bool = False
    """The error is an ACME certificate not issued yet (retried until it is)."""


class Ingress:
    """Keeps one nginx in line with the routes and the healthy endpoints."""

    def __init__(
        self,
        nginx: Nginx,
        listen: Listen,
        endpoints: EndpointSource,
        *,
        routes: Callable[[], Mapping[str, Route]],
        apps: Callable[[], list[AppPorts]],
        extras: ExtrasResolver = _no_extras,
        tasks: TaskMonitor | None = None,
    ) -> None:
        self.nginx = nginx
        self.listen = listen
        self._endpoints = endpoints
        self._routes = routes
        self._apps = apps
        self._extras = extras
        self._tasks = (tasks if tasks is not None else TaskMonitor()).group("ingress")
        self._monitor = self._tasks.monitor
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._draining: set[str] = set()
        self._rows: list[_Row] = []
        self._labels: dict[str, tuple[str, str]] = {}
        self.error: str | None = None
        """Why the last configuration was not applied (None: it was)."""
        self.reloads = 0
        self.generation = 0
        """Bumped after each successful apply (tests and drains wait on it)."""
        self._applied = asyncio.Condition()
        self._running = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.nginx.prepare_dirs)
        self._endpoints.subscribe(self.changed)
        self._running = True
        try:
            await self.sync()
        except IngressError as exc:
            # A bad render or a busy port must not keep the control plane down: the API
            # shows the error and every later change (or the resync) tries again.
            log.warning("ingress: %s", exc.message)
        self._tasks.spawn(self._loop(), "sync")
        self._tasks.spawn(self._watch(), "watch")

    async def stop(self, *, stop_nginx: bool) -> None:
        self._running = False
        await self._tasks.close()
        if stop_nginx:
            await asyncio.to_thread(self.nginx.stop)

    def changed(self) -> None:
        """Something the configuration depends on changed: render again soon."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), RESYNC_SECONDS)
            await asyncio.sleep(DEBOUNCE_SECONDS)
            self._wake.clear()
            try:
                await self.sync()
            except IngressError as exc:
                if exc.message != self.error:
                    self._monitor.report("ingress/sync", exc)
            except Exception as exc:
                self._monitor.report("ingress/sync", exc)

    async def _watch(self) -> None:
        """Start nginx again if its master died (checked through the pid file; an
        adopted master is not our child, so there is no wait() to use)."""
        while True:
            await asyncio.sleep(1.0)
            if self.nginx.applied is not None and await asyncio.to_thread(self.nginx.pid) is None:
                log.warning("ingress: nginx is gone; starting it again")
                self.nginx.applied = None
                self.changed()

    # -- rendering ---------------------------------------------------------------------

    async def _build(
        self, routes: Mapping[str, Route] | None = None, *, plan: bool = False
    ) -> list[_Row]:
        """Rows for ``routes`` (default: the applied ones). ``plan``: for a check only, with
        no secrets read and no certificate asked for (TLS and basic auth left out)."""
        every = self._endpoints.endpoints()
        self._draining &= {e.instance for e in every}  # stopped ones need no more care
        endpoints = [e for e in every if e.instance not in self._draining]
        by_app: dict[str, list[Endpoint]] = {}
        for endpoint in endpoints:
            by_app.setdefault(endpoint.app, []).append(endpoint)
        rows: list[_Row] = []
        routed: set[str] = set()
        apps = sorted(self._apps(), key=lambda a: a.name)
        defaults = {
            default_host(declared_name(a.name, a.environment), a.environment): a.name
            for a in apps
            if a.ports
        }
        claims: dict[tuple[str, str], str] = {}
        # The first claim wins: ``routes()`` lists the routes applied first first, so a
        # Route applied later (maybe by another team) never takes a host and path that
        # already answer, and never makes the whole configuration fail nginx's check.
        for name, route in (self._routes() if routes is None else routes).items():
            spec = route.spec
            target = spec.target
            app = target.name if target is not None else ""
            port = target.port if target is not None else ""
            if target is not None and target.app is not None:
                routed.add(target.app)
            servers = tuple(
                Server(e.address, e.ports[port]) for e in by_app.get(app, []) if port in e.ports
            )
            conflict = _conflict(name, route, claims, defaults)
            if conflict:
                extras = Extras(error=conflict)
            else:
                extras = Extras() if plan else await self._extras(route)
            row = _Row(name, "Route", spec.host, spec.path, app, port, None, extras.error)
            row.certificate = extras.certificate
            row.pending = (
                extras.error is not None and spec.tls is not None and spec.tls.acme is not None
            )
            row.upstreams = _upstreams(by_app.get(app, []), port)
            if extras.error is None:
                row.conf = RouteConf(
                    name=name,
                    host=spec.host,
                    path=spec.path,
                    servers=servers,
                    redirect=(spec.redirect.code, spec.redirect.to) if spec.redirect else None,
                    rewrite=spec.rewrite,
                    tls=extras.tls,
                    https_redirect=spec.https_redirect,
                    security_headers=spec.security_headers,
                    compression=spec.compression,
                    headers=tuple(sorted(spec.headers.items())),
                    max_body_size=spec.max_body_size,
                    rate_limit=(
                        (spec.rate_limit.requests_per_second, spec.rate_limit.burst)
                        if spec.rate_limit
                        else None
                    ),
                    htpasswd=extras.htpasswd,
                    connect_timeout=spec.timeouts.connect,
                    read_timeout=spec.timeouts.read,
                    send_timeout=spec.timeouts.send,
                    load_balancing=spec.load_balancing,
                )
            rows.append(row)
        rows.sort(key=lambda r: r.name)
        for entry in apps:
            if entry.name in routed or not entry.ports:
                continue
            port = entry.ports[0]
            host = default_host(declared_name(entry.name, entry.environment), entry.environment)
            mine = by_app.get(entry.name, [])
            servers = tuple(Server(e.address, e.ports[port]) for e in mine if port in e.ports)
            conf = RouteConf(name=f"default-{entry.name}", host=host, servers=servers)
            row = _Row(f"default-{entry.name}", "default", host, "/", entry.name, port, conf)
            row.upstreams = _upstreams(mine, port)
            rows.append(row)
        return rows

    async def sync(self) -> bool:
        """Render and apply now; True if nginx got a new configuration."""
        async with self._lock:
            rows = await self._build()
            text = render([r.conf for r in rows if r.conf is not None], self.listen)
            self._rows = rows
            envs = {a.name: a.environment for a in self._apps()}
            self._labels = {r.name: (r.target, envs.get(r.target, "")) for r in rows}
            try:
                changed = await asyncio.to_thread(self.nginx.apply, text)
            except IngressError as exc:
                self.error = exc.message
                raise
            self.error = None
            if changed:
                self.reloads += 1
                self.generation += 1
                log.info("ingress: configuration applied (%d routes)", len(rows))
            return changed

    async def check(self, routes: Mapping[str, Route]) -> dict[str, str]:
        """What nginx would say of ``routes`` (a plan's candidates): Route name -> nginx's
        refusal, empty if it accepts them. The candidate configuration is rendered and
        checked with ``nginx -t`` in a scratch prefix; the running one is not touched. TLS
        and basic auth are left out (their files come from the secrets engine at apply)."""
        rows = await self._build(routes, plan=True)
        confs = [r.conf for r in rows if r.conf is not None]
        message = await asyncio.to_thread(self._test, confs)
        if message is None:
            return {}
        # Which routes? Each one alone first; if every one passes alone, they clash together.
        refused: dict[str, str] = {}
        for conf in confs:
            if conf.name in routes:
                alone = await asyncio.to_thread(self._test, [conf])
                if alone is not None:
                    refused[conf.name] = alone
        return refused or {name: message for name in routes}

    def _test(self, confs: list[RouteConf]) -> str | None:
        with tempfile.TemporaryDirectory(prefix="socle-ingress-check-") as scratch:
            folder = Path(scratch)
            listen = dataclasses.replace(
                self.listen, prefix=folder, temp=folder, acme_root=None, metrics_log=None
            )
            try:
                text = render(confs, listen)
            except RenderError as exc:
                return str(exc)
            (folder / "logs").mkdir()
            try:
                Nginx(folder, binary=self.nginx.binary, temp=folder).test(text)
            except IngressError as exc:
                said = exc.message.removeprefix("nginx refused the rendered configuration: ")
                lines = [x for x in said.splitlines() if not x.startswith("nginx: configuration")]
                return "; ".join(lines) or said
        return None

    async def drain(self, instance: str, timeout: float = 10.0) -> None:
        """Take ``instance`` out of every upstream before it stops (see the module doc).

        Returns once every nginx worker that ran the old configuration is gone: they stop
        accepting at the reload and exit when their requests in flight are answered, so
        nothing can reach ``instance`` afterwards. Best effort within ``timeout``: a drain
        never blocks a rollout for long."""
        if not self._running:
            return
        self._draining.add(instance)
        try:
            master = await asyncio.to_thread(self.nginx.pid)
            before = await asyncio.to_thread(self.nginx.workers, master) if master else set()
            if not await within(self.sync(), timeout) or master is None:
                return
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                now = await asyncio.to_thread(self.nginx.workers, master)
                if not now & before:
                    return
                await asyncio.sleep(0.02)
            log.warning("ingress: old nginx workers still busy after %.0fs", timeout)
        except (IngressError, TimeoutError) as exc:
            log.warning("ingress: drain of %s incomplete: %s", instance, exc)

    # -- views -------------------------------------------------------------------------

    def route_labels(self) -> Mapping[str, tuple[str, str]]:
        """Each route nginx knows of now: name -> (app, environment); the only values
        per-route metrics may carry (bounded by the manifests)."""
        return self._labels

    def route_state(self, name: str) -> tuple[str, str]:
        """A Route's real state for ``socle status``: ``serving``, ``no_healthy_upstream``,
        ``certificate_pending``, ``error`` (nginx refused the configuration, or the route's
        TLS or basic-auth files could not be made) or ``pending`` (not rendered yet); and
        why, in words."""
        row = next((r for r in self._rows if r.name == name and r.kind == "Route"), None)
        if row is None:
            return "pending", "not in the ingress configuration yet"
        if row.error is not None:
            return ("certificate_pending" if row.pending else "error"), row.error
        if self.error is not None:
            return "error", f"nginx refused the configuration: {self.error}"
        conf = row.conf
        if conf is not None and conf.redirect is not None:
            return "serving", f"redirects to {conf.redirect[1]}"
        healthy = sum(1 for u in row.upstreams if u["healthy"])
        if conf is None or not conf.servers or not healthy:
            return "no_healthy_upstream", f"no ready instance of {row.target} on port {row.port}"
        return "serving", f"{healthy} healthy upstream(s)"

    def url(self, host: str, path: str = "/", *, tls: bool = False) -> str:
        addr, port = self.listen.https if tls else self.listen.http
        del addr
        scheme = "https" if tls else "http"
        default = 443 if tls else 80
        return f"{scheme}://{host}{'' if port == default else f':{port}'}{path}"

    def urls(self) -> dict[str, str]:
        """Each app's stable URL through the ingress (its first Route, else its default)."""
        found: dict[str, str] = {}
        for row in self._rows:
            conf = row.conf
            if row.target and row.target not in found and conf and conf.redirect is None:
                found[row.target] = self.url(row.host, row.path, tls=conf.tls is not None)
        return found

    def view(self) -> dict[str, Any]:
        return {
            "listen": {
                "http": f"{self.listen.http[0]}:{self.listen.http[1]}",
                "https": f"{self.listen.https[0]}:{self.listen.https[1]}",
            },
            "nginx": {"pid": self.nginx.pid(), "reloads": self.reloads, "error": self.error},
            "routes": [
                {
                    "name": row.name,
                    "kind": row.kind,
                    "host": row.host,
                    "path": row.path,
                    "url": self.url(
                        row.host, row.path, tls=row.conf is not None and row.conf.tls is not None
                    ),
                    "target": row.target,
                    "port": row.port,
                    "upstreams": row.upstreams,
                    "healthy": sum(1 for u in row.upstreams if u["healthy"]),
                    "certificate": row.certificate,
                    "error": row.error,
                }
                for row in self._rows
            ],
        }


def default_host(app: str, environment: str) -> str:
    """The default route's host of ``app`` (its declared name) in ``environment``."""
    return f"{app}.{environment}.localhost"


def _conflict(
    name: str, route: Route, claims: dict[tuple[str, str], str], defaults: Mapping[str, str]
) -> str | None:
    """Why ``route`` may not answer (its host and path already do), or None after claiming
    them. An app's default host belongs to that app: only a Route to it may use it."""
    spec = route.spec
    owner = defaults.get(spec.host)
    target = spec.target.app if spec.target is not None else None
    if owner is not None and target != owner:
        return f"host {spec.host} is the default host of app {owner}; not routed"
    if (spec.path.rstrip("/") + "/").startswith(ACME_CHALLENGE_PATH):
        return f"path {spec.path} is answered by the ingress (ACME challenges); not routed"
    key = (spec.host, spec.path.rstrip("/") or "/")
    first = claims.setdefault(key, name)
    if first != name:
        return f"host {spec.host} path {spec.path} is already routed by Route/{first}; not routed"
    return None


def _upstreams(endpoints: list[Endpoint], port: str) -> list[dict[str, Any]]:
    return [
        {
            "instance": e.instance,
            "address": e.address,
            "port": e.ports[port],
            "healthy": True,
        }
        for e in sorted(endpoints, key=lambda e: e.instance)
        if port in e.ports
    ]
