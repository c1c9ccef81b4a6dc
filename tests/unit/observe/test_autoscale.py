"""The autoscaler as tables: the load query per target, recommendations, stabilisation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from socle.observe.alerts.service import Alerts
from socle.observe.autoscale import Autoscaler, load_query, recommend
from socle.observe.metrics.registry import ControlPlaneMetrics


@pytest.mark.parametrize(
    ("target", "resources", "promql", "per_instance"),
    [
        (
            {"cpu": "70%"},
            {"cpu": "500m"},
            'sum(rate(socle_instance_cpu_seconds_total{app="web"}[1m]))',
            0.35,
        ),
        ({"cpu": 50}, {}, 'sum(rate(socle_instance_cpu_seconds_total{app="web"}[1m]))', 0.5),
        ({"rps": 100}, {}, 'sum(rate(http_requests_total{app="web"}[1m]))', 100.0),
        ({"query": "sum(queue)", "value": 20}, {}, "sum(queue)", 20.0),
    ],
)
def test_load_query(
    target: dict[str, Any], resources: dict[str, Any], promql: str, per_instance: float
) -> None:
    spec = {"resources": resources}
    assert load_query("web", {"target": target}, spec) == (promql, pytest.approx(per_instance))


@pytest.mark.parametrize(
    ("load", "per", "expected"), [(0, 10, 1), (10, 10, 1), (10.5, 10, 2), (95, 10, 5)]
)
def test_recommend_is_bounded(load: float, per: float, expected: int) -> None:
    assert recommend(load, per, 1, 5) == expected


@dataclass
class State:
    manifest: dict[str, Any]


@dataclass
class Target:
    state: State


@dataclass
class Controller:
    counts: dict[str, int]
    targets_: dict[str, Target]
    calls: list[tuple[str, int | None]] = field(default_factory=list)

    def targets(self) -> dict[str, Target]:
        return self.targets_

    def replicas_of(self, target: Target) -> int:
        name = next(n for n, t in self.targets_.items() if t is target)
        return self.counts[name]

    def scale(self, name: str, replicas: int | None) -> None:
        self.calls.append((name, replicas))
        if replicas is not None:
            self.counts[name] = replicas


@dataclass
class Handler:
    controller: Controller

    def rules(self) -> dict[str, Any]:
        return {}


@dataclass
class Engine:
    apps: Handler

    def handler(self, kind: str) -> Handler:
        return self.apps

    async def rollback_object(self, kind: str, name: str, who: str) -> tuple[Any, Any]:
        raise AssertionError("not used")


class Query:
    def __init__(self) -> None:
        self.load: float | None = 0.0
        self.url = "http://prometheus"

    async def get(self, endpoint: str, params: dict[str, str]) -> dict[str, Any]:
        return {"result": [] if self.load is None else [{"value": [0, str(self.load)]}]}


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_scale_out_at_once_scale_in_after_the_window() -> None:
    autoscale = {
        "min": 1,
        "max": 4,
        "target": {"query": "q", "value": 10},
        "stabilization": {"up": "0s", "down": "60s"},
    }
    targets = {
        "web": Target(State({"spec": {"autoscale": autoscale}})),
        "fixed": Target(State({"spec": {}})),
    }
    controller = Controller({"web": 1, "fixed": 2}, targets)
    engine = Engine(Handler(controller))
    alerts = Alerts(engine=engine, driver=None, metrics=ControlPlaneMetrics())  # type: ignore[arg-type]
    query, clock = Query(), Clock()
    scaler = Autoscaler(engine, alerts, lambda: query, clock=clock)  # type: ignore[arg-type,return-value]

    query.load = 35
    (out,) = await scaler.step()
    assert (out.action, out.app, out.rule) == ("scale", "web", "autoscale/web")
    assert out.message.startswith("1 -> 4 instances")
    assert controller.calls == [("web", 4)]

    query.load = 5  # the load is gone: scale in only once the window has passed
    for _ in range(6):
        clock.now += 10
        assert await scaler.step() == []
    clock.now += 11
    (back,) = await scaler.step()
    assert back.message.startswith("4 -> 1 instances") and controller.counts["web"] == 1

    query.load = None  # no data: nothing changes
    clock.now += 100
    assert await scaler.step() == []
    assert [r["action"] for r in alerts.history()] == ["scale", "scale"]


@dataclass
class ScaleEngine(Engine):
    def handler(self, kind: str) -> Any:
        if kind == "App":
            return self.apps
        return RulesHandler(
            {"busy": ScaleRule([{"scale": {"by": 2}}]), "idle": ScaleRule([{"scale": {"by": -5}}])}
        )


@dataclass
class ScaleRule:
    actions: list[Any]


@dataclass
class RulesHandler:
    found: dict[str, ScaleRule]

    def rules(self) -> dict[str, ScaleRule]:
        return self.found


def _target_of(controller: Controller) -> Any:
    def target(name: str) -> Target | None:
        return controller.targets_.get(name)

    return target


async def test_scale_action_stays_within_the_autoscale_bounds() -> None:
    bounds = {"min": 2, "max": 5, "target": {"rps": 10}}
    targets = {
        "web": Target(State({"spec": {"autoscale": bounds}})),
        "fixed": Target(State({"spec": {}})),
    }
    controller = Controller({"web": 2, "fixed": 1}, targets)
    controller.target = _target_of(controller)  # type: ignore[attr-defined]
    engine = ScaleEngine(Handler(controller))
    alerts = Alerts(engine=engine, driver=None, metrics=ControlPlaneMetrics(), min_interval=60)  # type: ignore[arg-type]

    async def fire(rule: str, app: str, *, confirmed: bool = True) -> Any:
        labels = {"socle_rule": rule, "app": app}
        seen = [{"state": "firing", "labels": labels}] if confirmed else []
        return await alerts.webhook({"alerts": [{"status": "firing", "labels": labels}]}, seen)

    (forged,) = await fire("busy", "web", confirmed=False)
    assert forged.result == "unconfirmed" and controller.counts["web"] == 2
    (up,) = await fire("busy", "web")
    assert (up.action, up.result, up.message) == ("scale", "done", "2 -> 4 instances")
    (limited,) = await fire("busy", "web")
    assert limited.result == "rate-limited" and controller.counts["web"] == 4
    (down,) = await fire("idle", "web")
    assert down.message == "4 -> 2 instances"  # not below min
    (refused,) = await fire("busy", "fixed")
    assert refused.result == "no-target" and "no spec.autoscale" in refused.message
    assert controller.counts["fixed"] == 1
