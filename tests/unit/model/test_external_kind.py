"""The ExternalService kind: loading, and bad input located at file, line and field."""

from __future__ import annotations

import pytest

from socle.model.external import ExternalService
from socle.model.loader import load
from tests.unit.model._repo import Files
from tests.unit.model.conftest import Problems, WriteRepo


def external(name: str, spec: str) -> str:
    return f"apiVersion: socle/v1\nkind: ExternalService\nmetadata:\n  name: {name}\nspec:\n{spec}"


GOOD = (
    "  addresses: [10.0.0.5, 'fd00::5', db1.example.com]\n"
    "  ports: [{name: pg, port: 5432}, {name: http, port: 8080}]\n"
    "  health: {http: {port: http, path: /health, scheme: https}, interval: 5s, timeout: 1s}\n"
)


def test_an_external_service_loads(write_repo: WriteRepo) -> None:
    loaded = load(write_repo({"e.yaml": external("legacy-db", GOOD)}))
    service = loaded.objects[("ExternalService", "legacy-db")]
    assert isinstance(service, ExternalService)
    assert service.spec.addresses == ["10.0.0.5", "fd00::5", "db1.example.com"]
    assert [(p.name, p.port) for p in service.spec.ports] == [("pg", 5432), ("http", 8080)]
    assert service.spec.health is not None and service.spec.health.interval == 5.0
    assert service.spec.health.http is not None and service.spec.health.http.scheme == "https"


CASES: list[tuple[str, Files, list[tuple[str, int, str, str]]]] = [
    (
        "no address",
        {"e.yaml": external("x", "  addresses: []\n")},
        [("e.yaml", 6, "spec.addresses", "must not be empty")],
    ),
    (
        "bad address",
        {"e.yaml": external("x", "  addresses: [10.0.0.1, 'not a host!']\n")},
        [("e.yaml", 6, "spec.addresses[1]", "invalid address 'not a host!'")],
    ),
    (
        "address twice",
        {"e.yaml": external("x", "  addresses: [a.example, A.example]\n")},
        [("e.yaml", 6, "spec.addresses[1]", "listed twice")],
    ),
    (
        "port out of range",
        {"e.yaml": external("x", "  addresses: [a.example]\n  ports: [{name: pg, port: 70000}]\n")},
        [("e.yaml", 7, "spec.ports[0].port", "less than or equal to 65535")],
    ),
    (
        "duplicate port name",
        {
            "e.yaml": external(
                "x",
                "  addresses: [a.example]\n  ports:\n  - {name: pg, port: 1}\n  - {name: pg, port: 2}\n",
            )
        },
        [("e.yaml", 9, "spec.ports[1].name", "duplicate port name 'pg'")],
    ),
    (
        "health on an unknown port",
        {
            "e.yaml": external(
                "x",
                "  addresses: [a.example]\n  ports: [{name: pg, port: 1}]\n  health: {tcp: {port: web}}\n",
            )
        },
        [("e.yaml", 8, "spec.health.tcp.port", "'web' is not one of spec.ports (pg)")],
    ),
    (
        "health with two probes",
        {
            "e.yaml": external(
                "x",
                "  addresses: [a.example]\n  ports: [{name: pg, port: 1}]\n"
                "  health: {tcp: {port: pg}, http: {port: pg}}\n",
            )
        },
        [("e.yaml", 8, "spec.health", "exactly one of http or tcp")],
    ),
    (
        "unknown field",
        {"e.yaml": external("x", "  addresses: [a.example]\n  command: [rm]\n")},
        [("e.yaml", 7, "spec.command", "unknown field 'command'")],
    ),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_external_services_are_located(
    problems: Problems, files: Files, expected: list[tuple[str, int, str, str]]
) -> None:
    found = problems(files)
    assert [(p.file, p.line, p.path) for p in found] == [e[:3] for e in expected], found
    for problem, (*_, reason) in zip(found, expected, strict=True):
        assert reason in problem.reason, problem
