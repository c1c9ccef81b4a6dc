"""Table-driven tests of the pure planner."""

from __future__ import annotations

from typing import Any

import pytest

from socle.engine.diff import diff
from socle.engine.planner import Action, dependency_order, plan
from socle.engine.targets import app_state
from socle.model.app import App


def make(name: str, release: str = "r1", **spec: Any) -> Any:
    body: dict[str, Any] = {"run": {"command": ["python3", "app.py"]}, **spec}
    app = App.model_validate(
        {"apiVersion": "socle/v1", "kind": "App", "metadata": {"name": name}, "spec": body}
    )
    return app_state(app, release)


def states(*items: Any) -> dict[str, Any]:
    return {s.name: s for s in items}


def test_nothing_to_do() -> None:
    current = states(make("a"), make("b"))
    result = plan(states(make("a"), make("b")), current)
    assert result.empty and result.unchanged == 2


@pytest.mark.parametrize(
    ("before", "after", "action", "paths"),
    [
        ({}, {"replicas": 3}, Action.UPDATE, ["spec.replicas"]),
        ({}, {"env": {"A": "1"}}, Action.UPDATE, ["spec.env.A"]),
        (
            {"update": {"strategy": "recreate"}},
            {"update": {"strategy": "recreate"}, "env": {"A": "1"}},
            Action.REPLACE,
            ["spec.env.A"],
        ),
        (
            {"update": {"strategy": "recreate"}},
            {"update": {"strategy": "recreate"}, "replicas": 2},
            Action.UPDATE,
            ["spec.replicas"],
        ),
    ],
)
def test_field_level_changes(
    before: dict[str, Any], after: dict[str, Any], action: Action, paths: list[str]
) -> None:
    result = plan(states(make("a", **after)), states(make("a", **before)))
    assert [c.action for c in result.changes] == [action]
    assert [f.path for f in result.changes[0].fields] == paths


def test_release_change_is_a_rolling_update() -> None:
    result = plan(states(make("a", release="r2")), states(make("a", release="r1")))
    (change,) = result.changes
    assert change.action == Action.UPDATE
    assert change.reason.startswith("rolling")
    assert [(f.path, f.old, f.new) for f in change.fields] == [("release", "r1", "r2")]


def test_scale_only_keeps_instances() -> None:
    a1, a2 = make("a"), make("a", replicas=4)
    assert a1.template == a2.template
    assert plan(states(a2), states(a1)).changes[0].reason.startswith("in place")


def test_create_in_dependency_order_delete_reversed() -> None:
    desired = states(make("web", dependsOn=["api"]), make("api", dependsOn=["db"]), make("db"))
    result = plan(desired, {})
    assert [c.name for c in result.changes] == ["db", "api", "web"]
    gone = plan({}, desired)
    assert [(c.action, c.name) for c in gone.changes] == [
        (Action.DELETE, "web"),
        (Action.DELETE, "api"),
        (Action.DELETE, "db"),
    ]


def test_order_is_stable_and_total() -> None:
    apps = states(*(make(f"app{i:02d}") for i in range(20)), make("zz", dependsOn=["app05"]))
    order = dependency_order(apps)
    assert order.index("zz") > order.index("app05")
    assert sorted(order) == sorted(apps)
    assert dependency_order(dict(reversed(list(apps.items())))) == order


def test_diff_shapes() -> None:
    assert diff({"a": [1, 2]}, {"a": [1, 3]})[0].path == "a[1]"
    assert diff({"a": [1]}, {"a": [1, 2]})[0].path == "a"
    assert diff({"a": 1}, {})[0].new is None
    assert diff({"x": {"y": 1}}, {"x": {"y": 1}}) == []


def test_secret_versions_change_the_template() -> None:
    app = App.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "App",
            "metadata": {"name": "a"},
            "spec": {
                "run": {"command": ["x"]},
                "env": {"DB": {"secret": "secret/data/db#password"}},
            },
        }
    )
    v1 = app_state(app, "r1", {"secret/data/db#password": 1})
    v2 = app_state(app, "r1", {"secret/data/db#password": 2})
    assert v1.template != v2.template
    assert v1.manifest["spec"]["env"]["DB"] == {"secret": "secret/data/db#password"}
