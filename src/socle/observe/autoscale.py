"""Auto-scaling: each App with ``spec.autoscale`` runs as many instances as its load asks
for, within ``min``..``max``, with stabilisation windows; every decision is recorded.

Every ``interval`` seconds, per App, one Prometheus query gives the load and the count it
asks for (``ceil(load / per-instance target)``, like a Kubernetes HPA with an average
target):

- ``{cpu: 70%}``: cores used by all instances (``socle_instance_cpu_seconds_total``, from
  cgroups and /proc) over 70 % of one instance's CPU limit (``resources.cpu``, one core
  without one);
- ``{rps: 100}``: requests per second of the app (``http_requests_total``, the Prometheus
  convention, from the app's own ``spec.metrics``) over 100 per instance;
- ``{query: PROMQL, value: N}``: the query's value over ``N``.

Stabilisation (the HPA's behaviour): a recommendation above the current count scales out to
the *lowest* recommendation of the last ``stabilization.up`` seconds (0: at once); one below
scales in only to the *highest* recommendation of the last ``stabilization.down`` seconds
(default 5 minutes), so a short dip does not remove instances the next minute needs. No data
(Prometheus starting, no samples yet) changes nothing.

The count is set on the rollout controller (:meth:`socle.engine.controller.Controller.scale`),
not written into a revision: the manifest keeps saying what Git says. Decisions go to the
remediation record (``socle alerts``: action ``scale``, rule ``autoscale/APP``, message
``2 -> 3 instances (load ...)``) and to the log.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from socle.errors import SocleError
from socle.observe.alerts.service import Alerts, EngineLike, Remediation
from socle.observe.metrics.prometheus import PrometheusQuery
from socle.units import parse_cpu, parse_duration

log = logging.getLogger("socle.observe.autoscale")
RULE_PREFIX = "autoscale/"


def load_query(
    app: str, autoscale: Mapping[str, Any], spec: Mapping[str, Any]
) -> tuple[str, float]:
    """The PromQL of the app's load and the load one instance should carry."""
    target = autoscale["target"]
    if target.get("cpu") is not None:
        fraction = float(str(target["cpu"]).strip().removesuffix("%")) / 100
        cpu = (spec.get("resources") or {}).get("cpu")
        cores = parse_cpu(cpu) if cpu is not None else 1.0
        return f'sum(rate(socle_instance_cpu_seconds_total{{app="{app}"}}[1m]))', fraction * cores
    if target.get("rps") is not None:
        return f'sum(rate(http_requests_total{{app="{app}"}}[1m]))', float(target["rps"])
    return str(target["query"]), float(target["value"])


def recommend(load: float, per_instance: float, low: int, high: int) -> int:
    return max(low, min(high, math.ceil(load / per_instance - 1e-9)))


class Autoscaler:
    def __init__(
        self,
        engine: EngineLike,
        alerts: Alerts,
        query: Callable[[], PrometheusQuery | None],
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._alerts = alerts
        self._query = query
        self._interval = interval
        self._clock = clock
        self._seen: dict[str, deque[tuple[float, int]]] = {}
        """Recommendations per app, newest last (as long as the longer window)."""

    async def _load(self, query: PrometheusQuery, promql: str) -> float | None:
        data = await query.get("query", {"query": promql})
        result = data.get("result") or []
        if isinstance(result, list):
            if not result:
                return None
            value = float(result[0]["value"][1])
        else:  # a scalar
            value = float(data["result"][1])
        return None if value != value or math.isinf(value) else value

    async def step(self) -> list[Remediation]:
        """One pass over every App; returns the scaling decisions taken."""
        controller = self._engine.handler("App").controller
        targets: Mapping[str, Any] = controller.targets()
        query = self._query()
        taken: list[Remediation] = []
        for name, target in sorted(targets.items()):
            autoscale = target.state.manifest["spec"].get("autoscale")
            if not autoscale:
                self._seen.pop(name, None)
                continue
            if query is None:
                continue
            promql, per_instance = load_query(name, autoscale, target.state.manifest["spec"])
            load = await self._load(query, promql)
            if load is None:
                continue
            low, high = int(autoscale.get("min", 1)), int(autoscale["max"])
            current = int(controller.replicas_of(target))
            wanted = recommend(load, per_instance, low, high)
            now = self._clock()
            stabilization = autoscale.get("stabilization") or {}
            up = parse_duration(stabilization.get("up", 0))
            down = parse_duration(stabilization.get("down", 300))
            seen = self._seen.setdefault(name, deque())
            seen.append((now, wanted))
            while seen and seen[0][0] < now - max(up, down):
                seen.popleft()
            desired = current
            if wanted > current:
                desired = max(current, min(n for t, n in seen if t >= now - up))
            elif wanted < current:
                desired = min(current, max(n for t, n in seen if t >= now - down))
            desired = max(low, min(high, desired))
            if desired == current:
                continue
            controller.scale(name, desired)
            item = Remediation(
                time.time(),
                RULE_PREFIX + name,
                "scale",
                name,
                None,
                "done",
                f"{current} -> {desired} instances (load {load:.3g}, "
                f"{per_instance:.3g} per instance; bounds {low}..{high})",
            )
            taken.append(self._alerts.record(item))
        return taken

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                done = await self.step()
                await self._alerts.persist(done)
            except SocleError as exc:  # Prometheus restarting: the next pass tries again
                log.info("autoscale pass skipped: %s", exc.message)


__all__ = ["Autoscaler", "load_query", "recommend"]
