"""The shared base of the record-only kinds (:mod:`socle.engine.kinds.record`), through
the ExternalService and NetworkPolicy handlers and small in-memory sinks: what a sink is
told on activate, delete and restore; records that survive a restart; planning states
reused while the model object is the same; a cache from an older version ignored."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from socle.engine.kinds import HandlerDeps
from socle.engine.kinds.external import ExternalServiceHandler, ExternalState
from socle.engine.kinds.networkpolicy import NetworkPolicyHandler, PolicyState
from socle.errors import ManifestError
from socle.model.app import App
from socle.model.external import ExternalService
from socle.model.loader import LoadedManifests
from socle.model.networkpolicy import NetworkPolicy


class Registry:
    """An ExternalSink that remembers what it holds."""

    def __init__(self) -> None:
        self.entries: dict[str, Mapping[str, Any]] = {}

    def set(self, name: str, environment: str, spec: Mapping[str, Any] | None) -> None:
        if spec is None:
            self.entries.pop(name, None)
        else:
            self.entries[name] = spec

    def health(self, name: str, environment: str) -> tuple[int, int]:
        return (1, 2) if name in self.entries else (0, 0)


class Firewall:
    """A FirewallSink that remembers its policies."""

    def __init__(self) -> None:
        self.policies: dict[str, Mapping[str, Any]] = {}

    def set(self, name: str, spec: Mapping[str, Any] | None) -> None:
        if spec is None:
            self.policies.pop(name, None)
        else:
            self.policies[name] = spec

    def policy_status(self, name: str) -> tuple[bool, str]:
        return name in self.policies, "loaded"


Reports = list[tuple[int, str, str, str, str]]


def deps(reports: Reports, **parts: Any) -> HandlerDeps:
    return cast(
        HandlerDeps,
        SimpleNamespace(
            **{
                "report": lambda *args: reports.append(args),
                "externals": None,
                "firewall": None,
                "environment": None,
                **parts,
            }
        ),
    )


def external(name: str, address: str = "10.0.0.5") -> ExternalService:
    return ExternalService.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "ExternalService",
            "metadata": {"name": name, "labels": {"team": "data"}},
            "spec": {"addresses": [address], "ports": [{"name": "pg", "port": 5432}]},
        }
    )


def loaded(*objects: Any, origins: dict[str, str] | None = None) -> LoadedManifests:
    return LoadedManifests(Path("."), None, {(o.kind, o.name): o for o in objects}, origins or {})


async def test_an_external_service_is_registered_kept_while_declared_and_removed() -> None:
    reports: Reports = []
    registry = Registry()
    handler = ExternalServiceHandler(deps(reports, externals=registry))
    db = ExternalState.of(external("db"))

    assert await handler.activate({"db": db}, 1) == set()
    assert registry.entries["db"]["addresses"] == ["10.0.0.5"]
    assert registry.entries["db"]["labels"] == {"team": "data"}
    (row,) = await handler.status()
    assert (row["name"], row["revision"], row["message"]) == ("db", 1, "1/2 addresses passing")
    assert row["ports"] == {"pg": 5432}

    # Deleted: still registered until its dependents settled (`delete`), then removed.
    assert await handler.activate({"db": None}, 2) == {"db"}
    assert "db" in registry.entries and handler.current() == {}
    await handler.delete("db", 2)
    assert "db" not in registry.entries
    assert reports[-1] == (2, "ExternalService", "db", "deleted", "deregistered")

    # Deleted, then declared again before the delete ran: it stays.
    await handler.activate({"db": db}, 3)
    await handler.activate({"db": None}, 4)
    await handler.activate({"db": db}, 5)
    await handler.delete("db", 4)
    assert "db" in registry.entries
    assert reports[-1] == (4, "ExternalService", "db", "deleted", "declared again; kept")


async def test_records_survive_a_restart_and_restore_tells_the_sink() -> None:
    reports: Reports = []
    first = ExternalServiceHandler(deps(reports))
    db, cache = ExternalState.of(external("db")), ExternalState.of(external("cache", "c1"))
    records = {"db": first.record("db", db, 3), "cache": first.record("cache", cache, 4)}
    assert first.decode(first.encode("db", db)) == db

    registry = Registry()
    again = ExternalServiceHandler(deps(reports, externals=registry))
    assert await again.restore(records) == {}
    assert again.current() == {"db": db, "cache": cache}
    assert sorted(registry.entries) == ["cache", "db"]
    # Another writer won a race and deleted `cache`: restoring again removes it.
    await again.restore({"db": records["db"]})
    assert sorted(registry.entries) == ["db"]
    assert [r["revision"] for r in await again.status()] == [3]


async def test_planning_states_are_reused_while_the_model_is_the_same() -> None:
    handler = ExternalServiceHandler(deps([]))
    db = external("db")
    first = await handler.desired(loaded(db))
    assert (await handler.desired(loaded(db)))["db"] is first["db"]
    assert (await handler.desired(loaded(external("db"))))["db"] == first["db"]

    restarted = ExternalServiceHandler(deps([]))
    restarted.adopt_cache(handler.export_cache())
    restarted.adopt_cache(None)  # a plan cache saved by an older version: ignored
    assert (await restarted.desired(loaded(db)))["db"] == first["db"]


async def test_a_network_policy_check_refuses_the_plan_and_keeps_the_cache() -> None:
    reports: Reports = []
    firewall = Firewall()
    handler = NetworkPolicyHandler(deps(reports, firewall=firewall, environment=lambda ref: "dev"))
    api = App.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "App",
            "metadata": {"name": "api"},
            "spec": {"run": {"command": ["./run"]}, "ports": [{"name": "http"}]},
        }
    )

    def policy(port: str) -> NetworkPolicy:
        return NetworkPolicy.model_validate(
            {
                "apiVersion": "socle/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "api-in"},
                "spec": {"app": "api", "ingress": [{"ports": [port]}]},
            }
        )

    with pytest.raises(ManifestError) as refused:
        await handler.desired(
            loaded(api, policy("htp"), origins={"NetworkPolicy/api-in": "p.yaml:4"})
        )
    (problem,) = refused.value.problems
    assert (problem.file, problem.line, problem.path) == ("p.yaml", 4, "spec.ingress[0].ports[0]")
    assert handler.export_cache() == []

    states = await handler.desired(loaded(api, policy("http")))
    await handler.activate(states, 1)
    assert firewall.policies["api-in"]["environment"] == "dev"
    (row,) = await handler.status()
    assert row["enforced"] and row["rules"] == list(cast(PolicyState, states["api-in"]).rules)
    await handler.activate({"api-in": None}, 2)
    await handler.delete("api-in", 2)
    assert firewall.policies == {}
    assert reports[-1][3:] == ("deleted", "rules removed")
