"""Cross-object checks and the translation of pydantic errors, as pure functions."""

from __future__ import annotations

import pytest

from socle.model import checks
from socle.model.app import App
from socle.model.diagnose import describe, format_path, known_fields


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
    found = checks.dependency_cycles(apps(graph))
    assert [reason.removeprefix("dependency cycle: ") for _, _, reason in found] == cycles


def test_long_chains_do_not_recurse() -> None:
    graph = {f"a{i}": [f"a{i + 1}"] for i in range(5000)}
    graph["a5000"] = ["a0"]
    (finding,) = checks.dependency_cycles(apps(graph))
    assert finding[0] == "a0" and finding[2].count("->") == 5001


def test_missing_dependencies() -> None:
    found = checks.missing_dependencies(apps({"a": ["b", "c"]}), known=["a", "b"])
    assert [(name, path) for name, path, _ in found] == [("a", ("spec", "dependsOn", 1))]


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
