"""AlertRule compiled to rules; the webhook's remediation decisions; silence matchers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from socle.api.routes.alerts import parse_matcher
from socle.errors import ConfigError, NotFoundError
from socle.model.alertrule import AlertRule, prometheus_duration, to_rule_group
from socle.observe.alerts.service import Alerts, Remediation
from socle.observe.metrics.registry import ControlPlaneMetrics
from socle.runtime.driver import InstanceState, InstanceStatus
from socle.tasks import TaskGroup


def rule(**spec: Any) -> AlertRule:
    return AlertRule.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "AlertRule",
            "metadata": {"name": "api-memory"},
            "spec": {"expr": "socle_instance_memory_bytes > 1e8", **spec},
        }
    )


def test_rule_group_from_a_manifest() -> None:
    obj = rule(
        **{"for": "1m30s"},
        severity="critical",
        labels={"team": "web"},
        annotations={"summary": "big"},
        actions=["restart"],
    )
    spec = obj.model_dump(mode="json", by_alias=True)["spec"]
    assert to_rule_group(obj.name, spec) == {
        "name": "socle-api-memory",
        "rules": [
            {
                "alert": "api-memory",
                "expr": "socle_instance_memory_bytes > 1e8",
                "labels": {"team": "web", "severity": "critical", "socle_rule": "api-memory"},
                "for": "90s",
                "annotations": {"summary": "big"},
            }
        ],
    }
    assert (
        "for"
        not in to_rule_group("x", rule().model_dump(mode="json", by_alias=True)["spec"])["rules"][0]
    )
    assert prometheus_duration(1.5) == "1500ms"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"expr": ""}, "at least 1 character"),
        ({"labels": {"socle_rule": "x"}}, "set by Socle"),
        ({"labels": {"bad-name": "x"}}, "must match"),
        ({"annotations": {"__x": "y"}}, "must match"),
        ({"severity": "page"}, "'info', 'warning' or 'critical'"),
        ({"actions": ["reboot"]}, "'restart'"),
        ({"actions": ["restart", "restart"]}, "listed twice"),
        ({"actions": [{"run": {"command": []}}]}, "at least 1 item"),
        ({"actions": [{"run": {"command": ["x"]}}, {"run": {"command": ["y"]}}]}, "twice"),
        ({"actions": [{"run": {"command": ["a\x1b"]}}]}, "printable"),
        ({"actions": [{"scale": {"by": 0}}]}, "must not be 0"),
        ({"for": "-1s"}, "duration"),
        ({"expr": "up\x1b[2J"}, "control characters"),
        # Every label and annotation is copied into each alert and notification: bounded.
        ({"labels": {f"l{i}": "v" for i in range(33)}}, "at most 32 labels"),
        ({"annotations": {f"a{i}": "v" for i in range(33)}}, "at most 32 annotations"),
        ({"labels": {"team": "x" * 1025}}, "longer than 1024"),
        ({"annotations": {"summary": "x" * 4097}}, "longer than 4096"),
    ],
)
def test_bad_rules_are_refused(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        rule(**spec)


@dataclass
class Rules:
    actions: list[Any]


class Handler:
    def __init__(self, rules: dict[str, Rules]) -> None:
        self._rules = rules

    def rules(self) -> dict[str, Rules]:
        return self._rules


@dataclass
class Revision:
    number: int
    rollback_of: int


@dataclass
class Engine:
    handlers: Handler
    rolled_back: list[tuple[str, str, str]] = field(default_factory=list)
    previous: dict[str, int] = field(default_factory=dict)
    """App → the revision holding its previous healthy state (missing: none)."""

    def handler(self, kind: str) -> Handler:
        assert kind in ("AlertRule", "SLO")
        return self.handlers if kind == "AlertRule" else Handler({})

    async def rollback_object(self, kind: str, name: str, who: str) -> tuple[Any, Any]:
        if name not in self.previous:
            raise NotFoundError(f"no earlier healthy revision of {kind}/{name} to roll back to")
        self.rolled_back.append((kind, name, who))
        return None, Revision(10 + len(self.rolled_back), self.previous[name])


@dataclass
class Driver:
    running: list[InstanceStatus]
    replaced: list[tuple[str, str]] = field(default_factory=list)
    ran: list[tuple[str, list[str], float]] = field(default_factory=list)

    def instances(self) -> list[InstanceStatus]:
        return self.running

    def replace(self, instance_id: str, reason: str) -> bool:
        if not any(s.id == instance_id and s.pid for s in self.running):
            return False
        self.replaced.append((instance_id, reason))
        return True

    async def run_in(self, instance_id: str, argv: list[str], timeout: float) -> str | None:
        self.ran.append((instance_id, argv, timeout))
        return None if argv[0] == "true" else f"{argv[0]} exited with code 1"


def instance(iid: str, app: str = "api", pid: int | None = 10) -> InstanceStatus:
    return InstanceStatus(
        iid,
        app,
        "r1",
        0,
        InstanceState.RUNNING,
        True,
        pid,
        "127.0.0.1",
        {},
        0,
        None,
        None,
        None,
        "none",
    )


def firing(labels: dict[str, str], status: str = "firing") -> dict[str, Any]:
    return {"alerts": [{"status": status, "labels": labels}]}


async def act(alerts: Alerts, payload: dict[str, Any]) -> list[Remediation]:
    """The webhook called while Prometheus has every alert of ``payload`` firing."""
    items = payload.get("alerts")
    seen = [
        {"state": "firing", "labels": a["labels"]}
        for a in (items if isinstance(items, list) else [])
        if isinstance(a, dict) and isinstance(a.get("labels"), dict)
    ]
    return await alerts.webhook(payload, seen)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(rules: dict[str, Rules], running: list[InstanceStatus]) -> tuple[Alerts, Driver, Clock]:
    driver = Driver(running)
    clock = Clock()
    alerts = Alerts(
        engine=Engine(Handler(rules)),
        driver=driver,
        metrics=ControlPlaneMetrics(),
        min_interval=300,
        clock=clock,
    )
    return alerts, driver, clock


async def test_restart_runs_once_then_is_rate_limited() -> None:
    alerts, driver, clock = make(
        {"mem": Rules(["restart"])}, [instance("api-0"), instance("api-1")]
    )
    labels = {"alertname": "mem", "socle_rule": "mem", "app": "api", "instance": "api-1"}
    done = await act(alerts, firing(labels))
    assert [(r.instance, r.result) for r in done] == [("api-1", "done")]
    assert driver.replaced == [("api-1", "alert mem")]
    clock.now += 60
    assert [r.result for r in await act(alerts, firing(labels))] == ["rate-limited"]
    clock.now += 300
    assert [r.result for r in await act(alerts, firing(labels))] == ["done"]
    assert len(driver.replaced) == 2
    assert [r["result"] for r in alerts.history()] == ["done", "rate-limited", "done"]


async def test_app_wide_alert_restarts_running_instances_of_that_app_only() -> None:
    alerts, driver, _ = make(
        {"crash": Rules(["restart"])},
        [instance("api-0"), instance("api-1", pid=None), instance("web-0", app="web")],
    )
    done = await act(alerts, firing({"socle_rule": "crash", "app": "api"}))
    assert [(r.instance, r.result) for r in done] == [("api-0", "done")]
    assert driver.replaced == [("api-0", "alert crash")]


async def test_actions_come_from_the_applied_rule_never_from_the_alert() -> None:
    alerts, driver, _ = make(
        {"watch": Rules([]), "mem": Rules(["restart"])}, [instance("api-0"), instance("x-0", "x")]
    )
    assert await act(alerts, firing({"socle_rule": "watch", "app": "api"})) == []
    assert await act(alerts, firing({"socle_rule": "unknown", "app": "api"})) == []
    assert await act(alerts, firing({"socle_rule": "", "alertname": "SocleDown"})) == []
    assert await act(alerts, firing({"socle_rule": "mem", "app": "api"}, status="resolved")) == []
    # An instance label naming another app's instance does not cross apps.
    mismatch = await act(alerts, firing({"socle_rule": "mem", "app": "nope", "instance": "x-0"}))
    assert [r.result for r in mismatch] == ["no-target"]
    assert driver.replaced == []


async def test_forged_alert_prometheus_does_not_have_firing_restarts_nothing() -> None:
    """Alertmanager's API is open on loopback: an alert posted there is relayed with its
    token. Only what Prometheus itself has firing, with the same targets, is acted on."""
    alerts, driver, _ = make(
        {"mem": Rules(["restart"])}, [instance("api-0"), instance("db-0", "db")]
    )
    labels = {"alertname": "mem", "socle_rule": "mem", "app": "db", "instance": "db-0"}
    real = {"alertname": "mem", "socle_rule": "mem", "app": "api", "instance": "api-0"}
    for seen in (
        [],  # nothing firing at all
        [{"state": "firing", "labels": real}],  # the rule fires, but for another app
        [{"state": "pending", "labels": labels}],  # not firing yet
        [{"state": "firing", "labels": {**labels, "socle_rule": "other"}}],
        [{"state": "firing", "labels": {**labels, "instance": ""}}],
    ):
        done = await alerts.webhook(firing(labels), seen)
        assert [(r.instance, r.result) for r in done] == [("db-0", "unconfirmed")]
    assert driver.replaced == []
    done = await alerts.webhook(
        firing(labels), [{"state": "firing", "labels": {**labels, "x": "1"}}]
    )
    assert [(r.instance, r.result) for r in done] == [("db-0", "done")]
    assert driver.replaced == [("db-0", "alert mem")]


async def test_bad_webhook_payload_is_refused() -> None:
    alerts, _, _ = make({}, [])
    with pytest.raises(ConfigError, match="alerts"):
        await act(alerts, {"status": "firing"})
    assert await act(alerts, {"alerts": ["junk", {"status": "firing", "labels": "x"}]}) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alertname=Mem", ("alertname", "Mem", False, True)),
        ("app!=api", ("app", "api", False, False)),
        ("instance=~api-.*", ("instance", "api-.*", True, True)),
        ("env!~prod|stage", ("env", "prod|stage", True, False)),
        ("note=a=b", ("note", "a=b", False, True)),
    ],
)
def test_matchers(text: str, expected: tuple[str, str, bool, bool]) -> None:
    m = parse_matcher(text)
    assert (m["name"], m["value"], m["isRegex"], m["isEqual"]) == expected


@pytest.mark.parametrize("text", ["", "=x", "no operator", "1abc=x"])
async def test_bad_matchers(text: str) -> None:
    with pytest.raises(ConfigError, match="name=value"):
        parse_matcher(text)


async def test_decisions_are_recorded_across_restarts(tmp_path: Path) -> None:
    record = tmp_path / "remediations.jsonl"
    driver = Driver([instance("api-0")])
    args: dict[str, Any] = {
        "engine": Engine(Handler({"mem": Rules(["restart"])})),
        "driver": driver,
        "metrics": ControlPlaneMetrics(),
        "record_file": record,
    }
    first = Alerts(**args)
    done = await act(first, firing({"socle_rule": "mem", "instance": "api-0"}))
    await first.persist(done)
    assert record.stat().st_mode & 0o777 == 0o600
    with record.open("a") as out:
        out.write('{"cut by a cra')  # a crash in the middle of a line
    again = Alerts(**args)
    again.load()
    assert [(r["rule"], r["result"]) for r in again.history()] == [("mem", "done")]
    # The rate limit survives the restart: the same alert right after does not act again.
    later = await act(again, firing({"socle_rule": "mem", "instance": "api-0"}))
    assert [r.result for r in later] == ["rate-limited"]
    assert len(driver.replaced) == 1


async def test_rollback_is_app_wide_recorded_and_rate_limited() -> None:
    alerts, _, clock = make({"errors": Rules(["rollback"])}, [instance("api-0")])
    engine = alerts._engine
    assert isinstance(engine, Engine)
    engine.previous["api"] = 4
    labels = {"socle_rule": "errors", "app": "api", "instance": "api-0"}
    (first,) = await act(alerts, firing(labels))
    assert (first.action, first.app, first.result) == ("rollback", "api", "done")
    assert "back to its state in revision 4" in first.message
    assert engine.rolled_back == [("App", "api", "socle (alert errors)")]
    clock.now += 30  # the alert still fires on the bad release's last samples: no storm
    (again,) = await act(alerts, firing(labels))
    assert again.result == "rate-limited" and len(engine.rolled_back) == 1
    (other,) = await act(alerts, firing({"socle_rule": "errors", "app": "web"}))
    assert other.result == "no-target" and "no earlier healthy revision" in other.message
    (none,) = await act(alerts, firing({"socle_rule": "errors"}))
    assert none.result == "no-target"


async def test_run_action_runs_in_each_alerting_instance() -> None:
    run = {"run": {"command": ["true", "--flush"], "timeout": 5.0}}
    fail = {"run": {"command": ["false"], "timeout": 5.0}}
    alerts, driver, _ = make(
        {"cache": Rules([run]), "bad": Rules([fail])},
        [instance("api-0"), instance("api-1"), instance("web-0", app="web")],
    )
    done = await act(alerts, firing({"socle_rule": "cache", "app": "api"}))
    assert [(r.action, r.instance, r.result) for r in done] == [
        ("run", "api-0", "done"),
        ("run", "api-1", "done"),
    ]
    assert driver.ran[0] == ("api-0", ["true", "--flush"], 5.0)
    again = await act(alerts, firing({"socle_rule": "cache", "app": "api"}))
    assert [r.result for r in again] == ["rate-limited", "rate-limited"]
    (failed,) = await act(alerts, firing({"socle_rule": "bad", "instance": "web-0"}))
    assert failed.result == "failed" and "exited with code 1" in failed.message


def test_run_action_in_a_manifest() -> None:
    parsed = rule(
        actions=["rollback", {"run": {"command": ["kill", "-HUP", "1"], "timeout": "5s"}}]
    )
    dumped = parsed.model_dump(mode="json", by_alias=True)["spec"]["actions"]
    assert dumped == ["rollback", {"run": {"command": ["kill", "-HUP", "1"], "timeout": "5s"}}]


async def test_unconfirmed_alerts_roll_back_and_run_nothing() -> None:
    run = {"run": {"command": ["true"]}}
    alerts, driver, _ = make({"errors": Rules(["rollback", run])}, [instance("api-0")])
    engine = alerts._engine
    assert isinstance(engine, Engine)
    engine.previous["api"] = 4
    done = await alerts.webhook(firing({"socle_rule": "errors", "app": "api"}), [])
    assert [(r.action, r.result) for r in done] == [
        ("rollback", "unconfirmed"),
        ("run", "unconfirmed"),
    ]
    assert engine.rolled_back == [] and driver.ran == []


class RollingDriver(Driver):
    """A driver whose restarted instances stay not ready until the test says so."""

    def replace(self, instance_id: str, reason: str) -> bool:
        if not super().replace(instance_id, reason):
            return False
        self.set_ready(instance_id, False)
        return True

    def set_ready(self, instance_id: str, ready: bool) -> None:
        self.running = [
            dataclasses.replace(s, ready=ready) if s.id == instance_id else s for s in self.running
        ]


async def _until(check: Any, what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _rolling(roll_timeout: float) -> tuple[Alerts, RollingDriver, TaskGroup]:
    driver = RollingDriver([instance("api-0"), instance("api-1"), instance("api-2")])
    tasks = TaskGroup("test")
    alerts = Alerts(
        engine=Engine(Handler({"crash": Rules(["restart"])})),
        driver=driver,
        metrics=ControlPlaneMetrics(),
        tasks=tasks,
        roll_timeout=roll_timeout,
        roll_poll=0.01,
    )
    return alerts, driver, tasks


async def test_app_wide_restart_rolls_one_instance_at_a_time() -> None:
    alerts, driver, tasks = _rolling(roll_timeout=30)
    done = await act(alerts, firing({"socle_rule": "crash", "app": "api"}))
    assert [(r.instance, r.result) for r in done] == [
        ("api-0", "done"),
        ("api-1", "queued"),
        ("api-2", "queued"),
    ]
    await asyncio.sleep(0.1)
    assert [i for i, _ in driver.replaced] == ["api-0"]  # api-0 is not ready again yet
    # A second alert meanwhile starts no second roll.
    again = await act(alerts, firing({"socle_rule": "crash", "app": "api"}))
    assert {r.result for r in again} == {"rate-limited"}
    driver.set_ready("api-0", True)
    await _until(lambda: len(driver.replaced) == 2, "api-1's restart")
    await asyncio.sleep(0.1)
    assert [i for i, _ in driver.replaced] == ["api-0", "api-1"]
    driver.set_ready("api-1", True)
    await _until(lambda: len(driver.replaced) == 3, "api-2's restart")
    await tasks.wait()
    history = [(r["instance"], r["result"]) for r in alerts.history()]
    assert history[-2:] == [("api-1", "done"), ("api-2", "done")]


async def test_a_roll_stops_when_a_restarted_instance_does_not_come_back() -> None:
    alerts, driver, tasks = _rolling(roll_timeout=0.2)
    await act(alerts, firing({"socle_rule": "crash", "app": "api"}))
    await tasks.wait()
    assert [i for i, _ in driver.replaced] == ["api-0"]  # the others keep serving
    failed = [r for r in alerts.history() if r["result"] == "failed"]
    assert [r["instance"] for r in failed] == ["api-1", "api-2"]
    assert "api-0 was not ready again" in str(failed[0]["message"])


async def test_the_record_file_is_rotated_and_both_parts_are_read(tmp_path: Path) -> None:
    record = tmp_path / "remediations.jsonl"
    driver = Driver([instance(f"api-{i}") for i in range(40)])
    args: dict[str, Any] = {
        "engine": Engine(Handler({"mem": Rules(["restart"])})),
        "driver": driver,
        "metrics": ControlPlaneMetrics(),
        "record_file": record,
        "max_record_bytes": 2048,
    }
    alerts = Alerts(**args)
    for i in range(40):
        await alerts.persist(
            await act(alerts, firing({"socle_rule": "mem", "instance": f"api-{i}"}))
        )
    rotated = tmp_path / "remediations.jsonl.1"
    assert rotated.exists() and rotated.stat().st_mode & 0o777 == 0o600
    assert record.stat().st_size <= 2048 + 512 and rotated.stat().st_size <= 2048 + 512
    again = Alerts(**args)
    again.load()
    kept = [r["instance"] for r in again.history()]
    assert kept and kept[-1] == "api-39" and kept == sorted(kept, key=lambda i: int(i[4:]))
    # Only what the two files hold is kept: the oldest decisions are gone.
    assert "api-0" not in kept


async def test_a_roll_cut_short_by_a_stop_resumes_at_the_next_start(tmp_path: Path) -> None:
    """The control plane stops while a rolling restart waits for api-1: the next run
    waits for api-1 to be ready again, then restarts api-2 (and only api-2)."""
    record = tmp_path / "remediations.jsonl"
    driver = RollingDriver([instance("api-0"), instance("api-1"), instance("api-2")])

    def alerts_on(tasks: TaskGroup, clock: Callable[[], float] = time.time) -> Alerts:
        return Alerts(
            engine=Engine(Handler({"crash": Rules(["restart"])})), driver=driver,
            metrics=ControlPlaneMetrics(), tasks=tasks, roll_poll=0.01, record_file=record,
            clock=clock,
        )  # fmt: skip

    first_tasks = TaskGroup("first run")
    first = alerts_on(first_tasks)
    await first.persist(await act(first, firing({"socle_rule": "crash", "app": "api"})))
    driver.set_ready("api-0", True)
    await _until(lambda: len(driver.replaced) == 2, "api-1's restart")
    lines = lambda: [json.loads(line) for line in record.read_text().splitlines()]  # noqa: E731
    await _until(
        lambda: {"instance": "api-1", "result": "done"}.items() <= lines()[-1].items(),
        "api-1's restart recorded",
    )
    await first_tasks.close()  # the control plane stops: api-2 is still queued

    second_tasks = TaskGroup("second run")
    second = alerts_on(second_tasks)
    await asyncio.to_thread(second.load)
    assert await second.resume_rolls() == []
    await asyncio.sleep(0.1)
    assert [i for i, _ in driver.replaced] == ["api-0", "api-1"]  # api-1 not ready yet
    again = await act(second, firing({"socle_rule": "crash", "app": "api"}))
    assert {r.result for r in again} == {"rate-limited"}, "the resumed roll holds the limit"
    driver.set_ready("api-1", True)
    await _until(lambda: len(driver.replaced) == 3, "api-2's restart")
    await second_tasks.wait()
    assert [i for i, _ in driver.replaced] == ["api-0", "api-1", "api-2"]
    last = second.history()[-1]
    assert (last["instance"], last["result"]) == ("api-2", "done")
    assert last["message"] == "restart requested (rolling, 3 of 3)"

    third = alerts_on(TaskGroup("third run"))  # nothing left to resume
    await asyncio.to_thread(third.load)
    assert await third.resume_rolls() == [] and len(driver.replaced) == 3


async def test_an_old_or_gone_roll_is_closed_not_resumed(tmp_path: Path) -> None:
    record = tmp_path / "remediations.jsonl"
    driver = RollingDriver([instance("api-0"), instance("api-1"), instance("api-2")])
    clock = Clock()
    args: dict[str, Any] = {
        "engine": Engine(Handler({"crash": Rules(["restart"])})),
        "driver": driver,
        "metrics": ControlPlaneMetrics(),
        "record_file": record,
        "clock": clock,
    }
    first = Alerts(**args, tasks=TaskGroup("first"))
    await first.persist(await act(first, firing({"socle_rule": "crash", "app": "api"})))
    await first._tasks.close()
    clock.now += 2 * 3600  # the control plane was down for two hours
    later = Alerts(**args, tasks=TaskGroup("later"))
    later.load()
    closed = await later.resume_rolls()
    assert [(r.instance, r.result) for r in closed] == [
        ("api-1", "no-target"),
        ("api-2", "no-target"),
    ]
    assert "stopped for too long" in closed[0].message and driver.replaced[1:] == []
    reread = Alerts(**args, tasks=TaskGroup("reread"))
    reread.load()
    assert await reread.resume_rolls() == []  # closed for good
