"""The control plane's own metrics, owned by one object (no global registry).

``prometheus_client`` keeps a process-wide default registry; two control planes in one
process (tests do that) would share and double-count it. :class:`ControlPlaneMetrics`
therefore owns a :class:`~prometheus_client.CollectorRegistry` and every metric is made
against it; the server builds one per :class:`socle.server.parts.Plane` and hands it to the
parts that count (engine events, runtime listener, API middleware).

Names are stable and carry their unit (``_seconds``, ``_bytes``, ``_total``): dashboards
and alert rules depend on them. Label values are bounded: API routes are their templates
(``/api/v1/apps/{name}``), never raw paths, and status codes are classes (``2xx``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from socle import __version__
from socle.runtime.driver import InstanceStatus
from socle.tasks import TaskMonitor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Plans take milliseconds, applies with builds take minutes: one set of buckets for both."""

API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


def status_class(status: int) -> str:
    """``200`` -> ``2xx``: a bounded label."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


class _TaskFailures(Collector):
    """``socle_background_task_failures_total`` read from the task monitor at scrape time."""

    def __init__(self, monitor: TaskMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "socle_background_task_failures",
            "Background tasks of the control plane that failed (logged with a traceback).",
        )
        family.add_metric([], float(self._monitor.failures))
        yield family


GaugeSource = Callable[[], Iterable[tuple[tuple[str, ...], float]]]
"""Label values and value of each sample of a gauge, read at scrape time."""


class _GaugeFromSource(Collector):
    def __init__(self, name: str, doc: str, labels: tuple[str, ...], source: GaugeSource) -> None:
        self._name, self._doc, self._labels, self._source = name, doc, labels, source

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self._name, self._doc, labels=self._labels)
        for values, value in self._source():
            family.add_metric(list(values), value)
        yield family


class ControlPlaneMetrics:
    """Every metric Socle exports about itself, on a registry of its own."""

    def __init__(self, monitor: TaskMonitor | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Gauge(
            "socle_build_info", "Version of the running control plane.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self.plan_seconds = Histogram(
            "socle_plan_duration_seconds",
            "Time to compute a plan (load, validate, diff).",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.apply_seconds = Histogram(
            "socle_apply_duration_seconds",
            "Time from the start of an apply to its final status (builds and rollouts).",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.applies = Counter(
            "socle_applies", "Applies that finished, by final status.", ["status"], registry=r
        )
        self.syncs = Counter("socle_syncs", "GitOps syncs, by result.", ["result"], registry=r)
        self.sync_seconds = Histogram(
            "socle_sync_duration_seconds",
            "Time of one GitOps sync of a source (fetch, verify, apply, rollout).",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.restarts = Counter(
            "socle_runtime_restarts",
            "Instance restarts seen by the runtime.",
            ["app", "env"],
            registry=r,
        )
        self.health_transitions = Counter(
            "socle_health_transitions",
            "Instances becoming ready or not ready.",
            ["app", "env", "to"],
            registry=r,
        )
        self.secrets_requests = Counter(
            "socle_secrets_requests",
            "Requests to the Vault-compatible secrets API, by method and status class.",
            ["method", "code"],
            registry=r,
        )
        self.api_seconds = Histogram(
            "socle_api_request_duration_seconds",
            "Platform API latency, by route template, method and status class.",
            ["route", "method", "code"],
            buckets=API_BUCKETS,
            registry=r,
        )
        self.remediations = Counter(
            "socle_remediations",
            "Remediation actions asked by alerts, by action and result.",
            ["action", "result"],
            registry=r,
        )
        if monitor is not None:
            r.register(_TaskFailures(monitor))
        self._seen: dict[str, tuple[int, bool]] = {}
        self._sources: dict[str, Collector] = {}

    def gauge_source(
        self, name: str, doc: str, labels: tuple[str, ...], source: GaugeSource | None
    ) -> None:
        """Export gauge ``name`` read from ``source`` at scrape time (None: stop exporting
        it). A part that starts again replaces its own source."""
        old = self._sources.pop(name, None)
        if old is not None:
            self.registry.unregister(old)
        if source is not None:
            collector = _GaugeFromSource(name, doc, labels, source)
            self.registry.register(collector)
            self._sources[name] = collector

    def collector(self, name: str, collector: Collector | None) -> None:
        """Export ``collector`` under ``name`` (None: stop). A part that starts again
        replaces its own collector."""
        old = self._sources.pop(name, None)
        if old is not None:
            self.registry.unregister(old)
        if collector is not None:
            self.registry.register(collector)
            self._sources[name] = collector

    # -- engine events (socle.engine.service.EngineEvents) -------------------------------

    def planned(self, seconds: float) -> None:
        self.plan_seconds.observe(seconds)

    def applied(self, status: str, seconds: float) -> None:
        self.applies.labels(status).inc()
        self.apply_seconds.observe(seconds)

    def synced(self, result: str, seconds: float) -> None:
        """A GitOps sync ended with state ``result`` (synced, failed, pinned, ...)."""
        self.syncs.labels(result).inc()
        self.sync_seconds.observe(seconds)

    # -- runtime listener ---------------------------------------------------------------

    def instance_changed(self, status: InstanceStatus) -> None:
        """Count restarts and readiness changes from the runtime's status stream."""
        before = self._seen.get(status.id)
        self._seen[status.id] = (status.restarts, status.ready)
        if before is None:
            if status.ready:
                self.health_transitions.labels(status.app, status.environment, "ready").inc()
            return
        restarts, ready = before
        if status.restarts > restarts:
            self.restarts.labels(status.app, status.environment).inc(status.restarts - restarts)
        if status.ready != ready:
            to = "ready" if status.ready else "not_ready"
            self.health_transitions.labels(status.app, status.environment, to).inc()

    def forget_instances(self, keep: Callable[[str], bool]) -> None:
        """Drop what is remembered about instances that are gone (bounded memory)."""
        for iid in [i for i in self._seen if not keep(i)]:
            del self._seen[iid]

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "ControlPlaneMetrics", "status_class"]
