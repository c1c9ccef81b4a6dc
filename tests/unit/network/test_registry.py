"""The service registry: fed by runtime statuses, an index, blocking queries, callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from socle.network.registry import (
    Health,
    ServiceInstance,
    ServiceRegistry,
    Source,
)
from socle.runtime.driver import InstanceId, InstanceState, InstanceStatus, ReleaseId


class Feed:
    """A minimal instance source: statuses a test sets, pushed to the listeners."""

    def __init__(self) -> None:
        self.live: dict[str, InstanceStatus] = {}
        self.listeners: list[Callable[[InstanceStatus], None]] = []

    def instances(self) -> list[InstanceStatus]:
        return list(self.live.values())

    def subscribe(self, listener: Callable[[InstanceStatus], None]) -> None:
        self.listeners.append(listener)

    def set(self, status: InstanceStatus) -> None:
        self.live[status.id] = status
        for listener in self.listeners:
            listener(status)


def status(
    iid: str,
    *,
    app: str = "web",
    ready: bool = True,
    state: InstanceState = InstanceState.RUNNING,
    env: str = "default",
    ports: dict[str, int] | None = None,
) -> InstanceStatus:
    return InstanceStatus(
        id=InstanceId(iid),
        app=app,
        release=ReleaseId("r1"),
        ordinal=0,
        state=state,
        ready=ready,
        pid=42,
        address="127.0.0.1",
        ports={"http": 8001} if ports is None else ports,
        restarts=0,
        started_at=1.0,
        ready_since=2.0 if ready else None,
        last_exit_code=None,
        isolation="none",
        environment=env,
        labels={"tier": "front"},
    )


def test_only_ready_running_instances_are_registered() -> None:
    feed = Feed()
    feed.live["a"] = status("a")
    feed.live["b"] = status("b", ready=False, state=InstanceState.STARTING)
    reg = ServiceRegistry()
    reg.attach(feed)
    assert [e.id for e in reg.instances()] == ["a"]
    entry = reg.instances()[0]
    assert entry.service == "web" and entry.environment == "default"
    assert dict(entry.labels) == {"tier": "front"} and entry.health is Health.PASSING


def test_failing_instance_leaves_and_index_grows() -> None:
    feed = Feed()
    reg = ServiceRegistry()
    reg.attach(feed)
    i0 = reg.index
    feed.set(status("a"))
    i1 = reg.index
    assert i1 > i0
    feed.set(status("a"))  # same thing again: no change
    assert reg.index == i1
    feed.set(status("a", ready=False, state=InstanceState.UNHEALTHY))
    assert reg.instances() == [] and reg.index > i1


def test_sync_drops_forgotten_instances() -> None:
    feed = Feed()
    reg = ServiceRegistry()
    reg.attach(feed)
    feed.set(status("a"))
    feed.set(status("b"))
    del feed.live["a"]  # stopped without a last status
    assert reg.sync(feed)
    assert [e.id for e in reg.instances()] == ["b"]
    assert not reg.sync(feed)


def test_endpoints_filter_service_env_port_and_health() -> None:
    reg = ServiceRegistry()
    reg.upsert(
        ServiceInstance(
            "web", "prod", "w1", "127.0.0.1", {"http": 1, "admin": 2}, source=Source.RUNTIME
        )
    )
    reg.upsert(ServiceInstance("web", "prod", "w2", "127.0.0.2", {"http": 3}))
    reg.upsert(ServiceInstance("web", "dev", "w3", "127.0.0.3", {"http": 4}))
    reg.upsert(
        ServiceInstance(
            "web",
            "prod",
            "x1",
            "10.0.0.9",
            {"http": 5},
            health=Health.CRITICAL,
            source=Source.EXTERNAL,
        )
    )
    eps = reg.endpoints("web", "prod", "http")
    assert [(e.instance, e.address, e.port) for e in eps] == [
        ("w1", "127.0.0.1", 1),
        ("w2", "127.0.0.2", 3),
    ]
    assert [e.port for e in reg.endpoints("web", "prod", "admin")] == [2]
    assert reg.endpoints("web", "prod", "nope") == []
    assert set(reg.services()) == {("web", "prod"), ("web", "dev")}


def test_replace_touches_only_its_source() -> None:
    reg = ServiceRegistry()
    reg.upsert(ServiceInstance("web", "default", "w1", "127.0.0.1", {}))
    reg.replace(
        Source.EXTERNAL,
        [
            ServiceInstance(
                "db", "default", "db-0", "10.0.0.1", {"pg": 5432}, source=Source.EXTERNAL
            )
        ],
    )
    assert {e.id for e in reg.instances()} == {"w1", "db-0"}
    reg.replace(Source.EXTERNAL, [])
    assert {e.id for e in reg.instances()} == {"w1"}


async def test_wait_returns_on_change_or_timeout() -> None:
    reg = ServiceRegistry()
    start = reg.index
    assert await reg.wait(start - 1, 5) == start  # already past: at once
    assert await reg.wait(start, 0.05) == start  # nothing changed: the timeout

    async def later() -> None:
        await asyncio.sleep(0.05)
        reg.upsert(ServiceInstance("web", "default", "w1", "127.0.0.1", {}))

    task = asyncio.create_task(later())
    new = await reg.wait(start, 60)
    await task
    assert new > start


def test_subscribe_and_unsubscribe() -> None:
    reg = ServiceRegistry()
    seen: list[int] = []
    unsubscribe = reg.subscribe(seen.append)
    reg.upsert(ServiceInstance("web", "default", "w1", "127.0.0.1", {}))
    unsubscribe()
    reg.remove("w1")
    assert seen == [reg.index - 1]


def test_index_never_goes_back_across_restarts() -> None:
    first = ServiceRegistry(clock=lambda: 1000.0)
    for i in range(5):
        first.upsert(ServiceInstance("web", "default", f"w{i}", "127.0.0.1", {}))
    second = ServiceRegistry(clock=lambda: 1001.0)
    assert second.index > first.index
