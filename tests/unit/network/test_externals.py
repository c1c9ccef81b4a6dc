"""ExternalService objects as registry entries (the engine's sink), without probes."""

from __future__ import annotations

from socle.network.checks import CheckLoops
from socle.network.externals import ExternalFeeder
from socle.network.registry import Health, ServiceRegistry, Source

SPEC = {
    "addresses": ["10.0.0.5", "db1.example.com"],
    "ports": [{"name": "pg", "port": 5432}],
    "labels": {"tier": "data"},
}


async def test_addresses_become_entries_and_updates_replace_them() -> None:
    reg = ServiceRegistry()
    checks = CheckLoops()
    feeder = ExternalFeeder(reg, checks)
    feeder.set("legacy-db", "default", SPEC)
    rows = reg.instances("legacy-db", "default")
    assert [(r.id, r.address, dict(r.ports), r.source, r.health) for r in rows] == [
        ("legacy-db-ext-0", "10.0.0.5", {"pg": 5432}, Source.EXTERNAL, Health.PASSING),
        ("legacy-db-ext-1", "db1.example.com", {"pg": 5432}, Source.EXTERNAL, Health.PASSING),
    ]
    assert dict(rows[0].labels) == {"tier": "data"}
    assert feeder.health("legacy-db", "default") == (2, 2)
    index = reg.index
    feeder.set("legacy-db", "default", SPEC)  # the same again: no change
    assert reg.index == index
    feeder.set("legacy-db", "default", {**SPEC, "addresses": ["10.0.0.6"]})
    assert [(r.id, r.address) for r in reg.instances("legacy-db")] == [
        ("legacy-db-ext-0", "10.0.0.6")
    ]
    feeder.set("legacy-db", "default", None)
    assert reg.instances() == [] and feeder.health("legacy-db", "default") == (0, 0)
    await checks.close()


async def test_checked_addresses_start_critical_until_probed() -> None:
    reg = ServiceRegistry()
    checks = CheckLoops()
    feeder = ExternalFeeder(reg, checks)
    spec = {
        **SPEC,
        "addresses": ["127.0.0.1"],
        "health": {"tcp": {"port": "pg"}, "interval": "1h", "timeout": "1s"},
    }
    feeder.set("legacy-db", "default", spec)
    (entry,) = reg.instances("legacy-db")
    assert entry.health is Health.CRITICAL and entry.output == "not checked yet"
    assert reg.endpoints("legacy-db", "default", "pg") == []
    assert checks.running() == frozenset({"external/legacy-db-ext-0"})
    feeder.set("legacy-db", "default", None)
    assert checks.running() == frozenset()
    await checks.close()
