"""Early detection as tables: the PromQL asked, when a new release departs, what it does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from socle.observe.alerts.releases import ReleaseWatch, departs, ratio_query
from socle.observe.alerts.service import Alerts
from socle.observe.metrics.registry import ControlPlaneMetrics

CHECK = {"total": "req_total", "errors": 'req_total{code=~"5.."}', "window": "2m"}


def test_ratio_query_scopes_app_and_template() -> None:
    new = ratio_query(CHECK, "shop", "abcdef0123456789", same=True)
    assert new == (
        'sum(rate(req_total{code=~"5..",app="shop",instance=~"shop-abcdef0123-[0-9]+"}[120s]))'
        ' / sum(rate(req_total{app="shop",instance=~"shop-abcdef0123-[0-9]+"}[120s]))'
    )
    old = ratio_query(CHECK, "my-app", "abcdef0123456789", same=False)
    assert 'instance!~"my\\\\-app-abcdef0123-[0-9]+"' in old


@pytest.mark.parametrize(
    ("new", "old", "bad"),
    [
        (0.5, 0.0, True),
        (0.5, 0.2, True),
        (0.3, 0.2, False),  # worse, but not twice as bad
        (0.01, 0.0, False),  # below the floor: noise
        (0.0, 0.5, False),  # better
    ],
)
def test_departs(new: float, old: float, bad: bool) -> None:
    assert departs(new, old, {"factor": 2, "minRatio": 0.05}) is bad


@dataclass
class State:
    template: str
    manifest: dict[str, Any]


@dataclass
class Handler:
    states: dict[str, State]

    def current(self) -> dict[str, State]:
        return self.states

    def rules(self) -> dict[str, Any]:
        return {}


@dataclass
class Revision:
    number: int
    rollback_of: int


@dataclass
class Engine:
    apps: Handler
    rolled_back: list[str] = field(default_factory=list)

    def handler(self, kind: str) -> Handler:
        return self.apps if kind == "App" else Handler({})

    async def rollback_object(self, kind: str, name: str, who: str) -> tuple[Any, Any]:
        self.rolled_back.append(f"{kind}/{name} by {who}")
        return None, Revision(9, 7)


class Query:
    def __init__(self, ratios: dict[tuple[str, bool], float | None]) -> None:
        self.ratios = ratios
        self.url = "http://prometheus"

    async def get(self, endpoint: str, params: dict[str, str]) -> dict[str, Any]:
        promql = params["query"]
        app = promql.split('app="')[1].split('"')[0]
        value = self.ratios.get((app, "instance=~" in promql))
        return {"result": [] if value is None else [{"value": [0, str(value)]}]}


class Driver:
    def instances(self) -> list[Any]:
        return []

    def replace(self, instance_id: str, reason: str) -> bool:
        return False

    async def run_in(self, instance_id: str, argv: list[str], timeout: float) -> str | None:
        return None


async def test_only_a_departing_new_release_is_rolled_back_once() -> None:
    check = {**CHECK, "factor": 2, "minRatio": 0.1}
    metrics = {"metrics": {"port": "http", "releaseCheck": check}}
    engine = Engine(
        Handler(
            {
                "shop": State("a" * 40, {"spec": metrics}),
                "calm": State("b" * 40, {"spec": metrics}),
                "alone": State("c" * 40, {"spec": metrics}),
                "plain": State("d" * 40, {"spec": {}}),
            }
        )
    )
    alerts = Alerts(engine=engine, driver=Driver(), metrics=ControlPlaneMetrics())
    query = Query(
        {
            ("shop", True): 0.5,
            ("shop", False): 0.01,
            ("calm", True): 0.2,
            ("calm", False): 0.15,
            ("alone", True): 0.9,  # nothing to compare with: the previous release is gone
            ("plain", True): 0.9,
            ("plain", False): 0.0,
        }
    )
    watch = ReleaseWatch(engine, alerts, lambda: query)  # type: ignore[arg-type,return-value]
    taken = await watch.check_once()
    assert [(t["rule"], t["action"], t["result"]) for t in taken] == [
        ("release-check/shop", "rollback", "done")
    ]
    assert engine.rolled_back == ["App/shop by socle (alert release-check/shop)"]
    assert await watch.check_once() == []  # judged once, not at every pass meanwhile
    other = ReleaseWatch(engine, alerts, lambda: query)  # type: ignore[arg-type,return-value]
    assert [t["result"] for t in await other.check_once()] == ["rate-limited"]
    assert len(engine.rolled_back) == 1
    assert await ReleaseWatch(engine, alerts, lambda: None).check_once() == []


async def test_a_release_whose_predecessor_left_the_window_is_judged_against_memory() -> None:
    """r1 measured at 1 %; r2 replaced before Prometheus scraped it twice (no ratio); r3
    fails half its requests while neither r1 nor r2 has samples left in the window: r3 is
    still compared, with r1's last measured ratio, and rolled back."""
    check = {**CHECK, "factor": 2, "minRatio": 0.1}
    metrics = {"metrics": {"port": "http", "releaseCheck": check}}
    apps = Handler({"shop": State("1" * 40, {"spec": metrics})})
    engine = Engine(apps)
    alerts = Alerts(engine=engine, driver=Driver(), metrics=ControlPlaneMetrics())
    query = Query({("shop", True): 0.01})
    watch = ReleaseWatch(engine, alerts, lambda: query)  # type: ignore[arg-type,return-value]
    assert await watch.check_once() == []  # r1 alone: measured, nothing to compare with
    apps.states["shop"] = State("2" * 40, {"spec": metrics})
    query.ratios = {("shop", False): 0.01}  # r2 never scraped; r1 still in the window
    assert await watch.check_once() == []
    apps.states["shop"] = State("3" * 40, {"spec": metrics})
    query.ratios = {("shop", True): 0.5}  # nothing of r1 or r2 left in the window
    taken = await watch.check_once()
    assert [(t["rule"], t["result"]) for t in taken] == [("release-check/shop", "done")]

    calm = ReleaseWatch(engine, alerts, lambda: query)  # type: ignore[arg-type,return-value]
    assert await calm.check_once() == []  # no memory (a restart) and no samples: quiet
