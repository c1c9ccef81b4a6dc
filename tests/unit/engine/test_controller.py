"""The rollout controller's decisions, against the in-memory driver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from socle.engine.controller import RECHECK_SECONDS, Controller, template_of
from socle.engine.targets import Rollout, Target, app_state
from socle.errors import RuntimeDriverError, SecretUnavailable, StartRefused
from socle.model.app import App
from socle.runtime.driver import InstanceId, InstanceState
from tests.unit.engine.memdriver import MemDriver


def target(name: str, release: str = "r1", **spec: Any) -> Target:
    body: dict[str, Any] = {"run": {"command": ["python3", "app.py"]}, **spec}
    app = App.model_validate(
        {"apiVersion": "socle/v1", "kind": "App", "metadata": {"name": name}, "spec": body}
    )
    return Target(app_state(app, release), Path("/nonexistent"), Rollout(1, time.time()))


class Harness:
    def __init__(self) -> None:
        self.driver = MemDriver()
        self.events: list[tuple[str, str, str]] = []
        self.controller = Controller(self.driver, lambda *e: self.events.append(e))

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0.01)

    async def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "condition not reached"
            await asyncio.sleep(0.01)

    def ids(self, app: str) -> list[str]:
        return sorted(i.id for i in self.driver.instances() if i.app == app)

    def ready_all(self, app: str) -> None:
        for status in list(self.driver.instances()):
            if status.app == app and not status.ready:
                self.driver.make_ready(status.id)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    harness.controller.start()
    yield harness
    await harness.controller.stop()


async def test_create_starts_replicas_and_completes_when_ready(h: Harness) -> None:
    h.controller.set_target("api", target("api", replicas=2))
    await h.until(lambda: len(h.ids("api")) == 2)
    assert not h.events
    h.ready_all("api")
    await h.until(lambda: ("api", "complete", "") in h.events)


async def test_rolling_update_surges_one_and_keeps_old_until_new_ready(h: Harness) -> None:
    h.controller.set_target("api", target("api", replicas=2))
    await h.until(lambda: len(h.ids("api")) == 2)
    h.ready_all("api")
    await h.until(lambda: len(h.events) == 1)
    old = set(h.ids("api"))

    new_target = target("api", release="r2", replicas=2)
    h.controller.set_target("api", new_target)
    await h.until(lambda: len(h.ids("api")) == 3)
    await h.settle()
    assert old <= set(h.ids("api")), "no old instance may stop before a new one is ready"
    assert len(h.ids("api")) == 3, "maxSurge=1 allows one extra instance only"

    # readiness one at a time drives the rollout to the end
    while set(h.ids("api")) & old or len(h.ids("api")) != 2:
        h.ready_all("api")
        await h.settle()
    assert all(template_of(i) == new_target.state.template[:10] for i in h.ids("api"))  # type: ignore[arg-type]
    await h.until(lambda: h.events.count(("api", "complete", "")) == 2)


async def test_failed_rollout_reports_after_deadline(h: Harness) -> None:
    h.controller.set_target("api", target("api"))
    await h.until(lambda: len(h.ids("api")) == 1)
    h.ready_all("api")
    await h.until(lambda: len(h.events) == 1)
    h.controller.set_target(
        "api", target("api", release="r2", update={"progressDeadlineSeconds": "200ms"})
    )
    await h.until(lambda: any(e[1] == "failed" for e in h.events))
    failed = next(e for e in h.events if e[1] == "failed")
    assert "not ready within 0.2s" in failed[2]
    assert len(h.ids("api")) == 2, "the old instance keeps serving"


async def test_dependents_wait_for_dependencies(h: Harness) -> None:
    h.controller.set_target("db", target("db"))
    h.controller.set_target("web", target("web", dependsOn=["db"]))
    await h.until(lambda: len(h.ids("db")) == 1)
    await h.settle()
    assert h.ids("web") == []
    h.ready_all("db")
    await h.until(lambda: len(h.ids("web")) == 1)


async def test_scale_down_stops_highest_ordinals(h: Harness) -> None:
    h.controller.set_target("api", target("api", replicas=3))
    await h.until(lambda: len(h.ids("api")) == 3)
    h.controller.set_target("api", target("api", replicas=1))
    await h.until(lambda: len(h.ids("api")) == 1)
    assert h.ids("api")[0].endswith("-0")


async def test_recreate_stops_old_before_starting_new(h: Harness) -> None:
    h.controller.set_target("api", target("api", replicas=2, update={"strategy": "recreate"}))
    await h.until(lambda: len(h.ids("api")) == 2)
    h.ready_all("api")
    old = set(h.ids("api"))
    h.controller.set_target(
        "api", target("api", release="r2", replicas=2, update={"strategy": "recreate"})
    )
    await h.until(lambda: len(h.ids("api")) == 2 and not (set(h.ids("api")) & old))
    journal = h.driver.journal
    first_new_start = min(journal.index(("start", i)) for i in h.ids("api"))  # type: ignore[arg-type]
    last_old_stop = max(journal.index(("stop", i)) for i in old)  # type: ignore[arg-type]
    assert last_old_stop < first_new_start


async def test_delete_stops_everything(h: Harness) -> None:
    h.controller.set_target("api", target("api", replicas=2))
    await h.until(lambda: len(h.ids("api")) == 2)
    h.controller.set_target("api", None)
    await h.until(lambda: ("api", "deleted", "all instances stopped") in h.events)
    assert h.ids("api") == []


async def test_lost_instance_is_recreated(h: Harness) -> None:
    h.controller.set_target("api", target("api", replicas=2))
    await h.until(lambda: len(h.ids("api")) == 2)
    victim = h.ids("api")[0]
    await h.driver.stop(victim)  # e.g. removed behind the controller's back
    await h.until(lambda: victim in h.ids("api"))


async def _rolled_to_r2(h: Harness, **update: Any) -> str:
    """api at r1 (complete), then a target for r2; returns the new instance's id."""
    h.controller.set_target("api", target("api"))
    await h.until(lambda: len(h.ids("api")) == 1)
    h.ready_all("api")
    await h.until(lambda: len(h.events) == 1)
    old = h.ids("api")[0]
    h.controller.set_target("api", target("api", release="r2", update=update))
    await h.until(lambda: len(h.ids("api")) == 2)
    return next(i for i in h.ids("api") if i != old)


def failures(h: Harness) -> list[str]:
    return [e[2] for e in h.events if e[1] == "failed"]


@pytest.mark.parametrize(
    ("state", "words"),
    [
        (InstanceState.FAILED, "cannot start"),
        (InstanceState.CRASHLOOP, "is in a crash loop"),
    ],
)
async def test_hopeless_instance_fails_the_rollout_at_once(
    h: Harness, state: InstanceState, words: str
) -> None:
    new = await _rolled_to_r2(h, progressDeadlineSeconds="1h")
    await h.settle()
    assert not failures(h)
    h.driver.set_state(InstanceId(new), state, "could not start: program 'x' not found")
    await h.until(lambda: bool(failures(h)))
    message = failures(h)[0]
    assert words in message and new in message and "program 'x' not found" in message
    assert "not ready within" not in message, "no waiting for the deadline"
    assert len(failures(h)) == 1


async def test_spec_refused_by_the_driver_fails_at_once(h: Harness) -> None:
    h.driver.errors["api"] = StartRefused("invalid instance id 'api\\n-x-0'")
    h.controller.set_target("api", target("api", update={"progressDeadlineSeconds": "1h"}))
    await h.until(lambda: bool(failures(h)))
    assert "was refused: invalid instance id" in failures(h)[0]


@pytest.mark.parametrize(
    "error",
    [
        SecretUnavailable("the secrets engine is sealed"),
        RuntimeDriverError("the local runtime driver is not started"),  # e.g. shutting down
    ],
    ids=["sealed", "driver-closed"],
)
async def test_transient_start_error_counts_against_the_deadline(
    h: Harness, error: Exception
) -> None:
    h.driver.errors["api"] = error
    h.controller.set_target("api", target("api", update={"progressDeadlineSeconds": "300ms"}))
    await h.until(lambda: bool(failures(h)))
    message = failures(h)[0]
    assert "not ready within 0.3s (0/1 ready)" in message, "retried until the deadline"
    assert str(error) in message


async def test_deadline_fires_when_reconcile_itself_keeps_failing() -> None:
    async def broken(_: Target) -> dict[str, str]:
        raise RuntimeError("resolver bug")

    harness = Harness()
    harness.controller = Controller(
        harness.driver, lambda *e: harness.events.append(e), resolve_secrets=broken
    )
    harness.controller.start()
    try:
        harness.controller.set_target(
            "api", target("api", update={"progressDeadlineSeconds": "200ms"})
        )
        await harness.until(lambda: bool(failures(harness)), timeout=10)
        assert "resolver bug" in failures(harness)[0]
    finally:
        await harness.controller.stop()


async def test_deadline_fires_when_no_instance_reports_anything(h: Harness) -> None:
    await _rolled_to_r2(h, progressDeadlineSeconds="200ms")
    await h.until(lambda: bool(failures(h)))
    assert "not ready within 0.2s" in failures(h)[0]
    assert "is starting" in failures(h)[0]


async def _draining_rollout(h: Harness, **update: str) -> tuple[str, asyncio.Event]:
    """api at r1 (complete), then r2 ready while r1's instance drains until the event is
    set; returns r1's instance id and that event."""
    released = asyncio.Event()

    async def slow_drain(_: InstanceId) -> None:
        await released.wait()

    h.controller.set_target("api", target("api"))
    await h.until(lambda: len(h.ids("api")) == 1)
    h.ready_all("api")
    await h.until(lambda: len(h.events) == 1)
    old = h.ids("api")[0]
    h.controller.set_drain(slow_drain)
    h.controller.set_target("api", target("api", release="r2", update=update))
    await h.until(lambda: len(h.ids("api")) == 2)
    h.ready_all("api")
    await asyncio.sleep(RECHECK_SECONDS * 3)  # several reconciles while it drains
    return old, released


async def test_rollout_completes_only_once_old_instances_have_stopped(h: Harness) -> None:
    """An apply that returns leaves only the new release running (CI saw a third, draining,
    instance in the status right after ``socle apply`` returned)."""
    old, released = await _draining_rollout(h)
    assert old in h.ids("api"), "the old instance is draining"
    assert h.events.count(("api", "complete", "")) == 1, "not complete while it drains"
    released.set()
    await h.until(lambda: h.events.count(("api", "complete", "")) == 2)
    assert old not in h.ids("api")


async def test_a_long_drain_never_fails_a_release_whose_replicas_are_ready(h: Harness) -> None:
    _, released = await _draining_rollout(h, progressDeadlineSeconds="200ms")
    assert not any(e[1] == "failed" for e in h.events), h.events
    released.set()
    await h.until(lambda: h.events.count(("api", "complete", "")) == 2)
