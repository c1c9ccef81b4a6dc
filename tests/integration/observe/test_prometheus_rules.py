"""The embedded Prometheus' rule files follow the applied AlertRules and SLOs (issue 11).

A real engine (SQLite store, in-memory runtime) applies the manifests; the real
:class:`PrometheusComponent` starts a real Prometheus and writes its rule files:

- an SLO or AlertRule applied while Prometheus is still starting is written (it was lost: the
  component computed its rule files, then started Prometheus, and only then listened for
  changes, so an apply in between never reached the rules folder);
- rapid changes coalesce into few writes and the last state always wins;
- a rule file Prometheus refuses is logged, shown in the component's status and in the task
  failures, retried, and cleared by the next good change.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from socle.engine.kinds.alertrule import AlertRuleHandler, AlertRuleState
from socle.engine.releases import ReleaseStore
from socle.engine.service import Engine
from socle.model.alertrule import AlertRule
from socle.observe.components import PrometheusComponent
from socle.observe.metrics.registry import ControlPlaneMetrics
from socle.observe.service import Observe
from socle.ports import PortBook
from socle.settings import Settings
from socle.state.sqlite import SqliteStore
from socle.tasks import TaskMonitor
from tests.unit.engine.memdriver import MemDriver

pytestmark = pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus")


@dataclass
class Plane:
    """The parts of the plane the Prometheus component reads (fits ``PlaneView``)."""

    settings: Settings
    engine: Engine
    monitor: TaskMonitor = field(default_factory=TaskMonitor)
    host: str = "127.0.0.1"
    port: int = 1
    url: str = "http://127.0.0.1:1"  # nothing there: scrape targets are simply down
    tls: tuple[Path, Path] | None = None
    ports: PortBook = field(default_factory=PortBook)
    driver: None = None
    metrics: ControlPlaneMetrics | None = None
    observe: Observe | None = None

    async def service_token(self, name: str) -> str:
        return f"token-of-{name}"


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    store = await SqliteStore.open(tmp_path / "state.db")
    engine = Engine(store, MemDriver(), ReleaseStore(tmp_path / "releases"))
    await engine.start()
    settings = Settings(
        home=tmp_path / "home",
        prometheus="embedded",
        prometheus_bin=shutil.which("prometheus") or "prometheus",
        prometheus_listen="127.0.0.1:0",
        scrape_interval=1,
    )
    plane = Plane(settings=settings, engine=engine)
    plane.metrics = ControlPlaneMetrics(plane.monitor)
    plane.observe = Observe(
        plane.metrics,
        address="127.0.0.1:1",
        instances=list,
        resources=list,
        app_metrics=dict,
    )
    try:
        yield plane
    finally:
        plane.ports.close()
        await engine.stop()
        await store.close()


@pytest.fixture
async def component(plane: Plane) -> AsyncIterator[PrometheusComponent]:
    component = PrometheusComponent(plane)  # type: ignore[arg-type]
    try:
        yield component
    finally:
        await component.stop()


def slo(name: str, objective: float = 99.9) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "socle/v1",
            "kind": "SLO",
            "metadata": {"name": name},
            "spec": {
                "objective": objective,
                "total": f'req_total{{app="{name}"}}',
                "errors": f'req_total{{app="{name}",code="500"}}',
            },
        },
        sort_keys=False,
    )


def rules_dir(plane: Plane) -> Path:
    return plane.settings.observe_dir / "prometheus" / "rules"


def rule_files(plane: Plane) -> list[str]:
    return sorted(p.name for p in rules_dir(plane).glob("*.yml"))


async def until(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def rules_status(plane: Plane) -> dict[str, Any]:
    assert plane.observe is not None and plane.observe.prometheus is not None
    rules: dict[str, Any] = plane.observe.prometheus()["rules"]  # type: ignore[assignment]
    return rules


def settled(plane: Plane) -> bool:
    observe = plane.observe
    return bool(observe and observe.prometheus and not rules_status(plane)["pending"])


async def loaded_rule_groups(plane: Plane) -> list[str]:
    """The rule groups the running Prometheus evaluates (what a reload made live)."""
    assert plane.observe is not None and plane.observe.query is not None
    data = await plane.observe.query.get("rules", {})
    return sorted(g["name"] for g in data["groups"])


def alert_rule(name: str) -> str:
    doc = {
        "apiVersion": "socle/v1",
        "kind": "AlertRule",
        "metadata": {"name": name},
        "spec": {"expr": f'up{{app="{name}"}} == 0'},
    }
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.mark.parametrize(
    ("manifest", "file", "group"),
    [
        (slo("shop"), "slo-shop.yml", "socle-slo-shop-alerts"),
        (alert_rule("shop-down"), "alertrule-shop-down.yml", "socle-shop-down"),
    ],
    ids=["SLO", "AlertRule"],
)
async def test_a_rule_applied_while_prometheus_starts_is_written(
    plane: Plane,
    component: PrometheusComponent,
    tmp_path: Path,
    manifest: str,
    file: str,
    group: str,
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "rule.yaml").write_text(manifest)
    starting = asyncio.create_task(component.start())
    # The built-in rules are written before Prometheus is started: apply now, while the
    # component is still starting it (the window the old code lost changes in).
    await until(
        lambda: (rules_dir(plane) / "socle-builtin.yml").exists() or starting.done(), "rules"
    )
    assert not starting.done(), "Prometheus started too fast to apply during its start"
    _, revision = await plane.engine.apply(repo, None, "test")
    assert revision is not None
    await starting

    await until(lambda: file in rule_files(plane), f"{file} to be written")
    await until(lambda: settled(plane), "the rule writer to settle")
    assert rule_files(plane) == sorted([file, "socle-builtin.yml"])
    await until_loaded(plane, group)  # and Prometheus reloaded it
    assert rules_status(plane)["error"] is None


async def until_loaded(plane: Plane, group: str) -> list[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        groups = await loaded_rule_groups(plane)
        if group in groups:
            return groups
        await asyncio.sleep(0.2)
    raise AssertionError(f"Prometheus never loaded {group}")


async def test_rapid_changes_coalesce_and_the_last_state_wins(
    plane: Plane, component: PrometheusComponent
) -> None:
    await component.start()
    await until(lambda: settled(plane), "the first rule files")
    writes_before = rules_status(plane)["writes"]
    handler = plane.engine.handler("SLO")
    states = {name: _slo_state(name) for name in ("a", "b", "c")}
    # Five changes in one go, without yielding to the loop: a, b, c, then c updated, a gone.
    await handler.activate({"a": states["a"]}, 1)
    await handler.activate({"b": states["b"]}, 2)
    await handler.activate({"c": states["c"]}, 3)
    await handler.activate({"c": _slo_state("c", 99.0)}, 4)
    await handler.activate({"a": None}, 5)

    await until(lambda: settled(plane), "the rule writer to settle")
    assert rule_files(plane) == ["slo-b.yml", "slo-c.yml", "socle-builtin.yml"]
    c = yaml.safe_load((rules_dir(plane) / "slo-c.yml").read_text())
    budget = next(
        r for g in c["groups"] for r in g["rules"] if r.get("record") == "socle_slo:error_budget"
    )
    assert budget["expr"] == "vector(0.01)"  # the update (99.0 %), not the first state
    status = rules_status(plane)
    assert status["files"] == ["slo-b.yml", "slo-c.yml", "socle-builtin.yml"]
    # Five notifications, at most two writes: the one they woke, and one more for the
    # changes that arrived while it ran.
    assert 1 <= status["writes"] - writes_before <= 2
    groups = await until_loaded(plane, "socle-slo-c-alerts")
    assert "socle-slo-a-alerts" not in groups


def _slo_state(name: str, objective: float = 99.9) -> AlertRuleState:
    from socle.model.slo import SLO

    return AlertRuleState.of(SLO.model_validate(yaml.safe_load(slo(name, objective))), "SLO")


def _rule_state(name: str, expr: str) -> AlertRuleState:
    obj = AlertRule.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "AlertRule",
            "metadata": {"name": name},
            "spec": {"expr": expr},
        }
    )
    return AlertRuleState.of(obj)


async def test_a_refused_rule_file_is_loud_visible_and_cleared_by_the_next_change(
    plane: Plane, component: PrometheusComponent, caplog: pytest.LogCaptureFixture
) -> None:
    await component.start()
    await until(lambda: settled(plane), "the first rule files")
    handler = plane.engine.handler("AlertRule")
    assert isinstance(handler, AlertRuleHandler)
    await handler.activate({"ok": _rule_state("ok", "up == 0")}, 1)
    await until(lambda: "alertrule-ok.yml" in rule_files(plane), "the good rule")
    # Plan-time checks normally stop this; here the written file itself is refused.
    with caplog.at_level(logging.ERROR):
        await handler.activate({"bad": _rule_state("bad", "sum((")}, 2)
        status = await until(lambda: rules_status(plane)["error"], "the failure in status")
    assert "refuses the rules in alertrule-bad.yml" in status
    assert rules_status(plane)["failed_at"] is not None
    assert any("prometheus/rules" in r.getMessage() for r in caplog.records)
    assert plane.monitor.failures >= 1
    last = plane.monitor.last_failure
    assert last is not None and last.task == "prometheus/rules"
    # Nothing half-written: the live folder still holds the last good set.
    assert rule_files(plane) == ["alertrule-ok.yml", "socle-builtin.yml"]

    await handler.activate({"bad": None}, 3)
    await until(lambda: rules_status(plane)["error"] is None, "the error to clear")
    await until(lambda: settled(plane), "the rule writer to settle")
    assert rule_files(plane) == ["alertrule-ok.yml", "socle-builtin.yml"]
