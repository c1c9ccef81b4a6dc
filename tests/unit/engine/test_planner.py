"""Table-driven tests of the pure planner."""

from __future__ import annotations

from typing import Any

import pytest

from socle.engine.diff import diff
from socle.engine.kinds.volume import VolumeState
from socle.engine.planner import Action, dependency_order, plan
from socle.engine.targets import app_state
from socle.errors import DeleteAllRefused
from socle.model.app import App
from socle.model.volume import Volume


def make(name: str, release: str = "r1", **spec: Any) -> Any:
    body: dict[str, Any] = {"run": {"command": ["python3", "app.py"]}, **spec}
    app = App.model_validate(
        {"apiVersion": "socle/v1", "kind": "App", "metadata": {"name": name}, "spec": body}
    )
    return app_state(app, release)


def states(*items: Any) -> dict[tuple[str, str], Any]:
    return {(s.kind, s.name): s for s in items}


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
    gone = plan({}, desired, allow_delete_all=True)
    assert [(c.action, c.name) for c in gone.changes] == [
        (Action.DELETE, "web"),
        (Action.DELETE, "api"),
        (Action.DELETE, "db"),
    ]


def test_order_is_stable_and_total() -> None:
    apps = states(*(make(f"app{i:02d}") for i in range(20)), make("zz", dependsOn=["app05"]))
    order = dependency_order(apps)
    assert order.index(("App", "zz")) > order.index(("App", "app05"))
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


def vol(name: str, size: str = "1Gi", **spec: Any) -> VolumeState:
    volume = Volume.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "Volume",
            "metadata": {"name": name},
            "spec": {"size": size, **spec},
        }
    )
    return VolumeState.of(volume)


def mounted(name: str, *volumes: str, **spec: Any) -> Any:
    mounts = [{"name": v, "mountPath": f"/{v}"} for v in volumes]
    return make(name, volumes=mounts, **spec)


def labels(result: Any) -> list[tuple[str, str]]:
    return [(c.action.value, f"{c.kind}/{c.name}") for c in result.changes]


# (id, current, desired, expected (action, Kind/name) in order)
TWO_KINDS: list[tuple[str, list[Any], list[Any], list[tuple[str, str]]]] = [
    (
        "volumes before the apps that mount them, whatever the names",
        [],
        [mounted("alpha", "zdata"), vol("zdata"), make("solo")],
        [("create", "App/solo"), ("create", "Volume/zdata"), ("create", "App/alpha")],
    ),
    (
        "dependsOn Volume/x orders like a mount",
        [],
        [make("api", dependsOn=["Volume/a", "db"]), make("db"), vol("a")],
        [("create", "App/db"), ("create", "Volume/a"), ("create", "App/api")],
    ),
    (
        "deletes come last, the app before its volume",
        [mounted("db", "data"), vol("data"), make("web")],
        [make("web")],
        [("delete", "App/db"), ("delete", "Volume/data")],
    ),
    (
        "an app and a volume of the same name are two objects",
        [make("data")],
        [make("data"), vol("data")],
        [("create", "Volume/data")],
    ),
    (
        "resizing a volume is an update of the volume only",
        [mounted("db", "data"), vol("data")],
        [mounted("db", "data"), vol("data", "2Gi")],
        [("update", "Volume/data")],
    ),
    (
        "a new mount changes the app's template (rolling update)",
        [make("db"), vol("data")],
        [mounted("db", "data"), vol("data")],
        [("update", "App/db")],
    ),
    (
        "unchanged objects of both kinds",
        [mounted("db", "data"), vol("data")],
        [mounted("db", "data"), vol("data")],
        [],
    ),
]


@pytest.mark.parametrize(
    ("current", "desired", "expected"),
    [c[1:] for c in TWO_KINDS],
    ids=[c[0] for c in TWO_KINDS],
)
def test_two_kinds(current: list[Any], desired: list[Any], expected: list[tuple[str, str]]) -> None:
    assert labels(plan(states(*desired), states(*current))) == expected


def test_volume_change_keeps_the_app_template_and_says_why() -> None:
    result = plan(states(vol("data", "2Gi")), states(vol("data")))
    (change,) = result.changes
    assert change.reason.startswith("resize") and change.label == "Volume/data"
    assert [(f.path, f.old, f.new) for f in change.fields] == [("spec.size", 1024**3, 2 * 1024**3)]
    assert mounted("db", "data").template == mounted("db", "data").template
    assert mounted("db", "data").template != make("db").template
    assert make("db").template == app_state(App.model_validate(make("db").manifest), "r1").template


def test_deleting_everything_is_refused_unless_allowed() -> None:
    current = states(make("a"), vol("v"))
    with pytest.raises(DeleteAllRefused, match="delete every object") as info:
        plan({}, current)
    assert info.value.hint is not None and "--allow-delete-all" in info.value.hint
    assert labels(plan({}, current, allow_delete_all=True)) == [
        ("delete", "Volume/v"),
        ("delete", "App/a"),
    ]
    assert plan({}, {}).empty
    assert labels(plan(states(make("a")), current)) == [("delete", "Volume/v")]
