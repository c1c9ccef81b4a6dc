"""Consul KV semantics and agent registrations over the in-memory state store."""

from __future__ import annotations

import asyncio

import pytest

from socle.errors import ConfigError, NotFoundError
from socle.network.agent import AgentServices, parse_registration
from socle.network.checks import CheckLoops
from socle.network.consul import catalog_services, consul_services, local_node
from socle.network.kv import ConsulKV
from socle.network.registry import Health, ServiceInstance, ServiceRegistry, Source
from socle.state.memory import MemoryData, MemoryStore


def store() -> MemoryStore:
    return MemoryStore(MemoryData())


async def test_put_get_flags_and_indexes() -> None:
    kv = ConsulKV(store())
    start = kv.index
    assert await kv.put("a/b", b"one", flags=7)
    entry = await kv.get("a/b")
    assert entry is not None and entry.value == b"one" and entry.flags == 7
    assert entry.create_index == entry.modify_index > start and kv.index >= entry.modify_index
    assert await kv.put("a/b", b"two")
    again = await kv.get("a/b")
    assert again is not None and again.create_index == entry.create_index
    assert again.modify_index > entry.modify_index
    assert await kv.put("dir/", None)
    folder = await kv.get("dir/")
    assert folder is not None and folder.value is None and folder.to_consul()["Value"] is None


async def test_cas_rules() -> None:
    kv = ConsulKV(store())
    assert await kv.put("k", b"1", cas=0)
    assert not await kv.put("k", b"2", cas=0)  # exists
    entry = await kv.get("k")
    assert entry is not None
    assert not await kv.put("k", b"2", cas=entry.modify_index + 1)
    assert await kv.put("k", b"2", cas=entry.modify_index)
    assert not await kv.delete("k", cas=entry.modify_index)  # stale now
    current = await kv.get("k")
    assert current is not None and await kv.delete("k", cas=current.modify_index)
    assert await kv.get("k") is None
    assert not await kv.put("missing", b"x", cas=5)


async def test_recurse_keys_separator_and_recursive_delete() -> None:
    kv = ConsulKV(store())
    for key in ("app/a", "app/b/c", "app/b/d", "apple", "other"):
        await kv.put(key, key.encode())
    assert [e.key for e in await kv.entries("app/")] == ["app/a", "app/b/c", "app/b/d"]
    assert await kv.keys("app") == ["app/a", "app/b/c", "app/b/d", "apple"]
    assert await kv.keys("app/", "/") == ["app/a", "app/b/"]
    assert await kv.keys("", "/") == ["app/", "apple", "other"]
    assert await kv.delete("app/", recurse=True)
    assert await kv.keys("") == ["apple", "other"]


@pytest.mark.parametrize("key", ["", "a\x00b", "x" * 600, "tab\there"])
async def test_bad_keys_and_values_are_refused(key: str) -> None:
    kv = ConsulKV(store())
    with pytest.raises(ConfigError):
        await kv.put(key, b"v")
    assert await kv.keys("") == []


async def test_large_values_and_flags_are_refused() -> None:
    kv = ConsulKV(store())
    with pytest.raises(ConfigError, match="larger than"):
        await kv.put("k", b"x" * (512 * 1024 + 1))
    with pytest.raises(ConfigError, match="flags"):
        await kv.put("k", b"x", flags=2**64)


async def test_kv_wait_wakes_on_a_write() -> None:
    kv = ConsulKV(store())
    index = kv.index

    async def later() -> None:
        await asyncio.sleep(0.02)
        await kv.put("k", b"v")

    task = asyncio.create_task(later())
    assert await kv.wait(index, 60) > index
    await task


def test_registration_bodies() -> None:
    service = parse_registration(
        {"name": "db", "ID": "db-1", "port": 5432, "tags": ["a"], "meta": {"environment": "prod"},
         "check": {"tcp": "127.0.0.1:5432", "interval": "3s"}}
    )  # fmt: skip
    assert (service.id, service.name, service.port, service.environment) == (
        "db-1",
        "db",
        5432,
        "prod",
    )
    assert service.check is not None and service.check.tcp == "127.0.0.1:5432"
    assert service.check.interval == 3.0
    assert parse_registration({"Name": "x"}).id == "x"
    for bad in (None, [], {"Name": "bad name"}, {"Name": "x", "Port": -1}, {"Name": "x", "Port": True},
                {"Name": "x", "Tags": "a"}, {"Name": "x", "Meta": {"a": 1}},
                {"Name": "x", "Check": {"HTTP": "ftp://x"}}, {"Name": "x", "Check": {"Interval": "soon", "TCP": "a:1"}}):  # fmt: skip
        with pytest.raises(ConfigError):
            parse_registration(bad)


async def test_agent_services_persist_and_never_shadow_apps() -> None:
    memory = MemoryData()
    reg = ServiceRegistry()
    checks = CheckLoops()
    agent = AgentServices(MemoryStore(memory), reg, checks)
    await agent.register(parse_registration({"Name": "db", "ID": "db-1", "Port": 5432}))
    assert [(e.id, e.source, e.health) for e in reg.instances()] == [
        ("db-1", Source.AGENT, Health.PASSING)
    ]
    reg.upsert(ServiceInstance("web", "default", "web-x-0", "127.0.0.1", {}))
    with pytest.raises(ConfigError, match="taken"):
        await agent.register(parse_registration({"Name": "web", "ID": "web-x-0"}))

    fresh = ServiceRegistry()
    again = AgentServices(MemoryStore(memory), fresh, CheckLoops())
    await again.load()
    assert [e.id for e in fresh.instances()] == ["db-1"]
    await again.deregister("db-1")
    assert fresh.instances() == []
    with pytest.raises(NotFoundError):
        await again.deregister("db-1")
    await checks.close()


def test_consul_shapes_one_entry_per_port() -> None:
    entry = ServiceInstance(
        "web", "prod", "web-x-0", "127.0.0.1", {"http": 80, "admin": 81}, labels={"tier": "front"}
    )
    services = consul_services([entry])
    assert [(s.id, s.port) for s in services] == [("web-x-0-admin", 81), ("web-x-0-http", 80)]
    row = services[1].catalog_json(local_node(), 7)
    assert (
        row["ServiceName"] == "web"
        and row["ServicePort"] == 80
        and row["ServiceAddress"] == "127.0.0.1"
    )
    assert (
        "env=prod" in row["ServiceTags"]
        and "port=http" in row["ServiceTags"]
        and "tier=front" in row["ServiceTags"]
    )
    assert row["ServiceMeta"]["environment"] == "prod" and row["ModifyIndex"] == 7
    health = services[1].health_json(local_node(), 7)
    assert set(health) == {"Node", "Service", "Checks"}
    assert [c["Status"] for c in health["Checks"]] == ["passing", "passing"]
    assert catalog_services([entry])["web"] == sorted(
        {"env=prod", "port=http", "port=admin", "tier=front"}
    )


class _CapturingChecks(CheckLoops):
    """Real CheckLoops bookkeeping, but the test delivers the check results itself."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: dict[str, object] = {}

    def run(self, key: str, spec: object, on_result: object) -> None:  # type: ignore[override]
        self.listeners[key] = on_result


async def test_an_agent_check_result_never_replaces_an_app_instance_with_its_id() -> None:
    reg = ServiceRegistry()
    checks = _CapturingChecks()
    agent = AgentServices(MemoryStore(MemoryData()), reg, checks)
    body = {"Name": "web", "ID": "web-x-0", "Address": "203.0.113.9", "Port": 80,
            "Check": {"TCP": "203.0.113.9:80", "Interval": "10s"}}  # fmt: skip
    await agent.register(parse_registration(body))
    # The app's instance with that (predictable) id becomes ready afterwards.
    app = ServiceInstance("web", "default", "web-x-0", "127.0.0.1", {"http": 8080})
    reg.upsert(app)
    deliver = checks.listeners["network/agent/web-x-0"]
    assert callable(deliver)
    deliver(Health.PASSING, "TCP connect: Success")
    entry = reg.get("web-x-0")
    assert entry is not None and entry.source is Source.RUNTIME and entry.address == "127.0.0.1"


def test_agent_check_intervals_have_consuls_minimum() -> None:
    for interval in ("0s", "1ms", 0):
        service = parse_registration(
            {"Name": "x", "Check": {"TCP": "127.0.0.1:1", "Interval": interval, "Timeout": "0s"}}
        )
        assert service.check is not None
        assert service.check.interval >= 1.0 and service.check.timeout > 0


def test_an_agent_registration_cannot_claim_to_be_an_app_socle_runs() -> None:
    body = {"Name": "web", "ID": "fake", "Port": 80,
            "Meta": {"source": "runtime", "instance": "web-x-0", "environment": "prod"}}  # fmt: skip
    service = parse_registration(body)
    (consul,) = consul_services([service.entry()])
    assert consul.meta["source"] == "agent" and consul.meta["instance"] == "fake"
    assert consul.meta["environment"] == "prod"  # the environment it registered in
