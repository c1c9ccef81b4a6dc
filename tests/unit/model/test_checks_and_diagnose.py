"""Cross-object checks and the translation of pydantic errors, as pure functions."""

from __future__ import annotations

import pytest

from socle.model import checks
from socle.model.app import App, app_references
from socle.model.diagnose import describe, format_path, known_fields
from socle.model.kinds import ObjectRef, Reference


def apps(graph: dict[str, list[str]]) -> dict[str, App]:
    return {
        name: App.model_validate(
            {
                "apiVersion": "socle/v1",
                "kind": "App",
                "metadata": {"name": name},
                "spec": {"run": {"command": ["x"]}, "dependsOn": deps},
            }
        )
        for name, deps in graph.items()
    }


def refs(graph: dict[str, list[str]]) -> dict[ObjectRef, list[Reference]]:
    return {("App", name): app_references(app) for name, app in apps(graph).items()}


@pytest.mark.parametrize(
    ("graph", "cycles"),
    [
        ({"a": [], "b": ["a"]}, []),
        ({"a": ["a"]}, ["a -> a"]),
        ({"a": ["b"], "b": ["a"]}, ["a -> b -> a"]),
        ({"c": ["a"], "a": ["b"], "b": ["c"], "d": ["a"]}, ["a -> b -> c -> a"]),
        ({"a": ["b"], "b": ["a"], "x": ["y"], "y": ["x"]}, ["a -> b -> a", "x -> y -> x"]),
        ({"a": ["b", "c"], "b": ["c"], "c": ["a"]}, ["a -> c -> a"]),
        ({"a": ["missing"]}, []),
    ],
)
def test_dependency_cycles(graph: dict[str, list[str]], cycles: list[str]) -> None:
    found = checks.app_dependency_cycles(apps(graph))
    assert [reason.removeprefix("dependency cycle: ") for _, _, reason in found] == cycles


def test_long_chains_do_not_recurse() -> None:
    graph = {f"a{i}": [f"a{i + 1}"] for i in range(5000)}
    graph["a5000"] = ["a0"]
    (finding,) = checks.dependency_cycles(refs(graph))
    assert finding[0] == ("App", "a0") and finding[2].count("->") == 5001


def test_missing_dependencies() -> None:
    found = checks.missing_references(refs({"a": ["b", "c"]}), known=[("App", "a"), ("App", "b")])
    assert [(ref, path) for ref, path, _ in found] == [(("App", "a"), ("spec", "dependsOn", 1))]


def test_references_across_kinds() -> None:
    """``Volume/data`` and a mounted volume are references to a Volume; a bare name to an App."""
    (app,) = apps({"a": ["b", "Volume/data"]}).values()
    app = app.model_copy(update={"spec": app.spec.model_copy(update={"volumes": []})})
    found = {(r.kind, r.name, r.path) for r in app_references(app)}
    assert found == {
        ("App", "b", ("spec", "dependsOn", 0)),
        ("Volume", "data", ("spec", "dependsOn", 1)),
    }
    graph = {("App", "a"): app_references(app)}
    missing = checks.missing_references(graph, known=[("App", "a"), ("App", "b"), ("Volume", "x")])
    assert [reason for _, _, reason in missing] == [
        "dependsOn names 'Volume/data', which is not a Volume in these manifests (volumes: x)"
    ]


def test_cycle_through_another_kind_is_named_with_kinds() -> None:
    graph: dict[ObjectRef, list[Reference]] = {
        ("App", "a"): [Reference(("spec", "dependsOn", 0), "Widget", "w")],
        ("Widget", "w"): [Reference(("spec", "needs", 0), "App", "a")],
    }
    (finding,) = checks.dependency_cycles(graph)
    cycle = "dependency cycle: Widget/w -> a -> Widget/w"
    assert finding == (("Widget", "w"), ("spec", "needs", 0), cycle)


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        (("spec", "ports", 1, "name"), "spec.ports[1].name"),
        (
            ("metadata", "labels", "app.kubernetes.io/name"),
            'metadata.labels["app.kubernetes.io/name"]',
        ),
        ((), ""),
        ((0,), "[0]"),
    ],
)
def test_format_path(parts: tuple[str | int, ...], text: str) -> None:
    assert format_path(parts) == text


def test_known_fields_follow_lists_dicts_and_optionals() -> None:
    assert known_fields(App, ("spec", "build", 0))[:2] == ["command", "env"]
    assert known_fields(App, ("spec", "health", "http")) == ["path", "port"]
    assert known_fields(App, ("spec", "env", "DB")) == ["secret"]
    assert known_fields(App, ("spec", "nope")) == []


def test_describe_never_dumps_big_values() -> None:
    assert describe({"a": 1}) == "a mapping"
    assert describe(None) == "null"
    assert len(describe("x" * 1000)) == 60
