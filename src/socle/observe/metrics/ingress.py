"""Per-route ingress metrics from nginx's own access records, with no change to apps.

nginx sends one short record per request (:data:`socle.network.ingress.render.METRICS_FORMAT`)
to a Unix datagram socket Socle owns, through its syslog client (non-blocking: a record the
socket cannot take is dropped, nginx never waits for Socle). Socle parses each record and
aggregates it into:

- ``socle_ingress_requests_total{route,app,env,code_class}``
- ``socle_ingress_request_duration_seconds{route,app,env}`` (histogram, nginx's
  ``$request_time``: first byte read to last byte sent)
- ``socle_ingress_upstream_response_duration_seconds{route,app,env}`` (histogram, the sum of
  the upstream tries' ``$upstream_response_time``; requests that reached no upstream are not
  observed)
- ``socle_ingress_response_bytes_total{route,app,env}``
- ``socle_ingress_records_dropped_total{reason}``: ``no_route`` (requests no route matched:
  unknown hosts, bad requests), ``unknown_route`` (a route removed since), ``malformed``

Cardinality is bounded by the manifests: the route label is the name a Route's location set
(never a host or path from the request) and is kept only if the ingress knows that route
now; app and env come from Socle's own view of the route. A record holds nothing the client
chose, so hostile requests cannot inject labels; the parser still treats every datagram as
hostile (bounded size, strict grammar).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import socket
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from socle.network.ingress.render import METRICS_TAG
from socle.observe.metrics.registry import status_class

log = logging.getLogger("socle.observe.ingress")

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Latency buckets (seconds) for both histograms."""

MAX_RECORD = 2048
"""Longer datagrams are not records of ours (ours are under 200 bytes)."""

CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")

_RECORD = re.compile(
    # nginx's syslog header with ``nohostname``: ``<PRI>Mmm dd hh:mm:ss TAG: ``
    rb"<\d{1,3}>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d socle: "
    + re.escape(METRICS_TAG.encode())
    + rb" ([a-z0-9][a-z0-9.-]{0,252}|-) "
    rb"(\d{3}) (\d{1,9}\.\d{3}) (\d{1,19}) ([-0-9., :]{1,400})\n?"
)
_TIME = re.compile(rb"\d{1,9}\.\d{3}")

RouteLabels = Callable[[], Mapping[str, tuple[str, str]]]
"""The routes the ingress serves now: name -> (app, env)."""


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*BUCKETS, math.inf), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == math.inf else repr(bound), float(running)))
        return out


@dataclass
class _RouteStats:
    app: str
    env: str
    codes: dict[str, int] = field(default_factory=dict)
    duration: _Histogram = field(default_factory=_Histogram)
    upstream: _Histogram = field(default_factory=_Histogram)
    bytes: int = 0


class IngressTraffic(Collector):
    """Receives nginx's access records and exports them as Prometheus metrics."""

    def __init__(self, path: Path, routes: RouteLabels, *, owner_uid: int | None = None) -> None:
        self.path = path
        self._routes = routes
        self._owner_uid = owner_uid
        self._stats: dict[str, _RouteStats] = {}
        self.dropped: dict[str, int] = {"malformed": 0, "no_route": 0, "unknown_route": 0}
        self._transport: asyncio.DatagramTransport | None = None

    # -- socket --------------------------------------------------------------------------

    async def start(self) -> None:
        sock = await asyncio.to_thread(self._bind)
        loop = asyncio.get_running_loop()
        traffic = self

        class _Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                traffic.feed(data)

            def error_received(self, exc: Exception) -> None:
                log.debug("ingress metrics socket: %s", exc)

        transport, _ = await loop.create_datagram_endpoint(_Protocol, sock=sock)
        self._transport = transport

    def _bind(self) -> socket.socket:
        """Bind the socket (a stale one from a previous control plane is replaced), writable
        by nginx's workers only (owner-only, owned by their user)."""
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            old = os.umask(0o177)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old)
            if self._owner_uid is not None:
                os.chown(self.path, self._owner_uid, -1, follow_symlinks=False)
            # Bursts wait in the kernel while the loop is busy: a large receive buffer.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        with contextlib.suppress(OSError):
            await asyncio.to_thread(os.unlink, self.path)

    # -- records -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Count one datagram (a syslog line ``<PRI>TIME socle: socle1 ...``)."""
        match = _RECORD.fullmatch(data) if len(data) <= MAX_RECORD else None
        if match is None:
            self.dropped["malformed"] += 1
            return
        name = match[1].decode()
        if name == "-":  # a request no route matched (unknown host, bad request line)
            self.dropped["no_route"] += 1
            return
        labels = self._routes().get(name)
        if labels is None:
            self.dropped["unknown_route"] += 1
            return
        stats = self._stats.get(name)
        if stats is None or (stats.app, stats.env) != labels:
            stats = self._stats[name] = _RouteStats(*labels)
        code = status_class(int(match[2]))
        stats.codes[code] = stats.codes.get(code, 0) + 1
        stats.duration.observe(float(match[3]))
        stats.bytes += int(match[4])
        tries = _TIME.findall(match[5])
        if tries:
            stats.upstream.observe(sum(float(t) for t in tries))

    # -- exposition ------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        current = self._routes()
        for name in [n for n in self._stats if n not in current]:
            del self._stats[name]  # a removed route stops being exported
        labels = ["route", "app", "env"]
        requests = CounterMetricFamily(
            "socle_ingress_requests",
            "Requests answered by the ingress, by route and status class.",
            labels=[*labels, "code_class"],
        )
        duration = HistogramMetricFamily(
            "socle_ingress_request_duration_seconds",
            "Time nginx spent on a request (first byte read to last byte sent), by route.",
            labels=labels,
        )
        upstream = HistogramMetricFamily(
            "socle_ingress_upstream_response_duration_seconds",
            "Time spent waiting on the route's instances (all tries), by route.",
            labels=labels,
        )
        sent = CounterMetricFamily(
            "socle_ingress_response_bytes",
            "Response body bytes sent by the ingress, by route.",
            labels=labels,
        )
        for name, stats in sorted(self._stats.items()):
            values = [name, stats.app, stats.env]
            for code, count in sorted(stats.codes.items()):
                requests.add_metric([*values, code], float(count))
            duration.add_metric(values, stats.duration.buckets(), stats.duration.total)
            upstream.add_metric(values, stats.upstream.buckets(), stats.upstream.total)
            sent.add_metric(values, float(stats.bytes))
        dropped = CounterMetricFamily(
            "socle_ingress_records_dropped",
            "Ingress access records not counted: malformed, or naming no current route.",
            labels=["reason"],
        )
        for reason, count in sorted(self.dropped.items()):
            dropped.add_metric([reason], float(count))
        yield from (requests, duration, upstream, sent, dropped)


__all__ = ["BUCKETS", "CODE_CLASSES", "IngressTraffic"]
