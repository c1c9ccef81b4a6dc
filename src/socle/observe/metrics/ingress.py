"""Per-route ingress metrics from nginx's own access records, with no change to apps.

nginx writes one short line per request (:data:`socle.network.ingress.render.METRICS_FORMAT`)
to a file of its prefix (``SOCLE_HOME/ingress/logs/metrics.log``, owner-only), buffered (one
write per 64 KiB or per second); Socle reads what was appended every second, and rotates the
file when it grows (rename, SIGUSR1 to nginx, read the old one to its end, remove it).
A file rather than nginx's syslog client over a Unix datagram socket: the kernel queues only
``net.unix.max_dgram_qlen`` (10 here) datagrams, and under load about a fifth of the records
were dropped (measured with ``bench/ingress_metrics.py``); a file loses none, costs nginx one
write per buffer, and needs no socket the workers (or apps) could write to. Socle parses each
line and aggregates it into:

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

Counters start at zero with each control plane (Prometheus handles resets); what nginx
wrote while no control plane ran is skipped, not counted late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from socle.network.ingress.render import METRICS_TAG
from socle.observe.metrics.registry import status_class

log = logging.getLogger("socle.observe.ingress")

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Latency buckets (seconds) for both histograms."""

MAX_RECORD = 2048
"""Longer lines are not records of ours (ours are under 200 bytes)."""

POLL_SECONDS = 1.0
ROTATE_BYTES = 16 << 20
"""The file is rotated past this size (Socle reads it as it grows: nothing is lost)."""
READ_BYTES = 8 << 20
"""At most this much is read per poll (the rest at the next one)."""

CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")

_RECORD = re.compile(
    re.escape(METRICS_TAG.encode()) + rb" ([a-z0-9][a-z0-9.-]{0,252}|-) "
    rb"(\d{3}) (\d{1,9}\.\d{3}) (\d{1,19}) ([-0-9., :]{1,400})"
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
    """Reads nginx's access records as they are written and exports them as metrics."""

    def __init__(
        self,
        path: Path,
        routes: RouteLabels,
        *,
        reopen: Callable[[], object] = lambda: None,
        poll: float = POLL_SECONDS,
        rotate_bytes: int = ROTATE_BYTES,
    ) -> None:
        self.path = path
        self._routes = routes
        self._reopen = reopen
        self._poll = poll
        self._rotate_bytes = rotate_bytes
        self._stats: dict[str, _RouteStats] = {}
        self.dropped: dict[str, int] = {"malformed": 0, "no_route": 0, "unknown_route": 0}
        self._file: BinaryIO | None = None
        self._partial = b""
        self._old: BinaryIO | None = None
        self._old_idle = 0
        self._task: asyncio.Task[None] | None = None

    # -- the file ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading at the end of the file (records from before are not counted)."""
        await asyncio.to_thread(self._open, True)
        self._task = asyncio.create_task(self._loop(), name="ingress-metrics")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for handle in (self._file, self._old):
            if handle is not None:
                handle.close()
        self._file = self._old = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            try:
                lines = await asyncio.to_thread(self.read)
            except OSError as exc:
                log.warning("ingress metrics: %s", exc)
                continue
            for line in lines:
                self.feed(line)

    def _open(self, at_end: bool) -> None:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 (kept open between polls)
        except FileNotFoundError:
            self._file = None
            return
        if at_end:
            handle.seek(0, os.SEEK_END)
        self._file = handle
        self._partial = b""

    def read(self) -> list[bytes]:
        """Lines appended since the last call (blocking: called in a thread)."""
        lines: list[bytes] = []
        if self._old is not None:
            # After a rotation: nginx may still flush into the old file for a moment.
            chunk = self._old.read(READ_BYTES)
            lines += self._split(chunk, old=True)
            self._old_idle = 0 if chunk else self._old_idle + 1
            if self._old_idle >= 3:
                self._old.close()
                self._old = None
                with contextlib.suppress(OSError):
                    os.unlink(self.path.with_name(self.path.name + ".old"))
        if self._file is None:
            self._open(False)
            if self._file is None:
                return lines
        elif self._replaced():
            self._file.close()
            self._open(False)
            assert self._file is not None
        lines += self._split(self._file.read(READ_BYTES), old=False)
        if self._old is None and self._file.tell() > self._rotate_bytes:
            self._rotate()
        return lines

    def _replaced(self) -> bool:
        """Whether the path now names another file (rotated or removed by someone else)."""
        assert self._file is not None
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self._file.fileno())
        return (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev)

    def _rotate(self) -> None:
        """Rename the file, have nginx reopen it, keep reading the old one to its end."""
        assert self._file is not None
        os.replace(self.path, self.path.with_name(self.path.name + ".old"))
        self._old, self._old_idle = self._file, 0
        self._old_partial, self._partial = self._partial, b""
        self._file = None
        self._reopen()

    _old_partial = b""

    def _split(self, chunk: bytes, *, old: bool) -> list[bytes]:
        data = (self._old_partial if old else self._partial) + chunk
        lines = data.split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_RECORD:  # not ours: skip it to its end
            self.dropped["malformed"] += 1
            rest = b""
        if old:
            self._old_partial = rest
        else:
            self._partial = rest
        return lines

    # -- records -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Count one record (a line ``socle1 ROUTE STATUS TIME BYTES UPSTREAM_TIMES``)."""
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
