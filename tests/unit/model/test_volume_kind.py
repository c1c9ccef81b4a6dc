"""The Volume kind and App volume mounts: loading, references across kinds, bad input."""

from __future__ import annotations

import pytest

from socle.model.kinds import KindRegistry, build_default_kinds, default_kinds
from socle.model.loader import load
from socle.model.volume import Volume, check_cron
from tests.unit.model._repo import Files, app
from tests.unit.model.conftest import Problems, WriteRepo


def volume(name: str, extra: str = "") -> str:
    return (
        f"apiVersion: socle/v1\nkind: Volume\nmetadata:\n  name: {name}\nspec:\n  size: 1Gi\n"
        + extra
    )


def test_two_kinds_load_by_kind_and_name(write_repo: WriteRepo) -> None:
    root = write_repo(
        {
            "a.yaml": app("db", "volumes:\n- {name: data, mountPath: /data}\n")
            + "---\n"
            + app("api", "dependsOn: [db, Volume/cache]\n"),
            "v.yaml": volume("data", "  backup: {schedule: '0 3 * * *', keep: 7}\n")
            + "---\n"
            + volume("cache", "  retain: false\n"),
        }
    )
    loaded = load(root)
    assert list(loaded.objects) == [
        ("App", "api"),
        ("App", "db"),
        ("Volume", "cache"),
        ("Volume", "data"),
    ]
    assert list(loaded.apps) == ["api", "db"]
    data = loaded.objects[("Volume", "data")]
    assert isinstance(data, Volume)
    assert data.spec.size == 1024**3 and data.spec.retain is True
    assert data.spec.backup is not None and data.spec.backup.keep == 7
    assert loaded.origins["Volume/cache"] == "v.yaml:9"
    mount = loaded.apps["db"].spec.volumes[0]
    assert (mount.name, mount.mount_path, mount.read_only) == ("data", "/data", False)
    assert [d["kind"] for d in loaded.rendered()] == ["App", "App", "Volume", "Volume"]


CASES: list[tuple[str, Files, list[tuple[str, int, str, str]]]] = [
    (
        "mounted volume missing",
        {"a.yaml": app("db", "volumes:\n- {name: data, mountPath: /data}\n")},
        [("a.yaml", 9, "spec.volumes[0].name", "volumes names 'data', which is not a Volume")],
    ),
    (
        "dependsOn a missing volume",
        {"a.yaml": app("db", "dependsOn: [Volume/data]\n")},
        [("a.yaml", 8, "spec.dependsOn[0]", "dependsOn names 'Volume/data', which is not a")],
    ),
    (
        "dependsOn of an unknown kind",
        {"a.yaml": app("db", "dependsOn: [Widget/x]\n")},
        [("a.yaml", 8, "spec.dependsOn[0]", "not a Widget")],
    ),
    (
        "dependsOn written badly",
        {"a.yaml": app("db", "dependsOn: [volume/Data]\n")},
        [("a.yaml", 8, "spec.dependsOn[0]", "invalid dependsOn entry 'volume/Data'")],
    ),
    (
        "relative mountPath",
        {"a.yaml": app("db", "volumes:\n- {name: d, mountPath: data}\n") + "---\n" + volume("d")},
        [("a.yaml", 9, "spec.volumes[0].mountPath", "must be an absolute path")],
    ),
    (
        "mountPath not normalised",
        {
            "a.yaml": app("db", "volumes:\n- {name: d, mountPath: /a/../b/}\n")
            + "---\n"
            + volume("d")
        },
        [("a.yaml", 9, "spec.volumes[0].mountPath", "write '/b'")],
    ),
    (
        "mountPath under a system folder",
        {"a.yaml": app("db", "volumes:\n- {name: d, mountPath: /etc/x}\n") + "---\n" + volume("d")},
        [("a.yaml", 9, "spec.volumes[0].mountPath", "under the system folder /etc")],
    ),
    (
        "mountPath is the root",
        {"a.yaml": app("db", "volumes:\n- {name: d, mountPath: /}\n") + "---\n" + volume("d")},
        [("a.yaml", 9, "spec.volumes[0].mountPath", "cannot be /")],
    ),
    (
        "mountPath twice in one app",
        {
            "a.yaml": app(
                "db",
                "volumes:\n- {name: d, mountPath: /data}\n- {name: e, mountPath: /data}\n",
            )
            + "---\n"
            + volume("d")
            + "---\n"
            + volume("e")
        },
        [("a.yaml", 10, "spec.volumes[1].mountPath", "used twice")],
    ),
    (
        "mountPath on the scratch folder",
        {
            "a.yaml": app("db", "volumes:\n- {name: d, mountPath: /scratch}\n")
            + "---\n"
            + volume("d")
        },
        [("a.yaml", 9, "spec.volumes[0].mountPath", "under the system folder /scratch")],
    ),
    (
        "mountPath inside another volume of the app",
        {
            "a.yaml": app(
                "db",
                "volumes:\n- {name: d, mountPath: /data}\n- {name: e, mountPath: /data/sub}\n",
            )
            + "---\n"
            + volume("d")
            + "---\n"
            + volume("e")
        },
        [("a.yaml", 10, "spec.volumes[1].mountPath", "lies inside the volume mounted at '/data'")],
    ),
    (
        "cron with four fields",
        {"v.yaml": volume("d", "  backup: {schedule: '0 3 * *'}\n")},
        [("v.yaml", 7, "spec.backup.schedule", "a schedule has 5 fields")],
    ),
    (
        "cron hour out of range",
        {"v.yaml": volume("d", "  backup: {schedule: '0 24 * * *'}\n")},
        [("v.yaml", 7, "spec.backup.schedule", "hour: 24 is out of range 0-23")],
    ),
    (
        "keep below one",
        {"v.yaml": volume("d", "  backup: {schedule: '0 3 * * *', keep: 0}\n")},
        [("v.yaml", 7, "spec.backup.keep", "greater than or equal to 1")],
    ),
    (
        "size missing",
        {"v.yaml": volume("d").replace("  size: 1Gi\n", "  retain: true\n")},
        [("v.yaml", 5, "spec.size", "required")],
    ),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_volumes_are_located(
    problems: Problems, files: Files, expected: list[tuple[str, int, str, str]]
) -> None:
    found = problems(files)
    assert [(p.file, p.line, p.path) for p in found] == [e[:3] for e in expected], found
    for problem, (*_, reason) in zip(found, expected, strict=True):
        assert reason in problem.reason, problem


@pytest.mark.parametrize(
    "expression", ["0 3 * * *", "*/15 0-6,22 1,15 jan-jun mon-fri", "0 0 * * 7", "5 4 * * sun"]
)
def test_good_cron(expression: str) -> None:
    assert check_cron(expression) == expression


@pytest.mark.parametrize(
    "expression", ["", "* * * * * *", "60 * * * *", "* * 0 * *", "* * * 13 *", "*/0 * * * *",
                   "5-1 * * * *", "a * * * *", "1--2 * * * *"]
)  # fmt: skip
def test_bad_cron(expression: str) -> None:
    with pytest.raises(ValueError, match="schedule"):
        check_cron(expression)


def test_registry_refuses_duplicates_and_is_not_global() -> None:
    registry = KindRegistry()
    registry.register("Volume", Volume)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("Volume", Volume)
    with pytest.raises(ValueError, match="CamelCase"):
        registry.register("volume", Volume)
    assert list(build_default_kinds())[:3] == ["App", "Volume", "ExternalService"]
    assert "Route" in build_default_kinds()
    assert build_default_kinds() is not build_default_kinds()
    assert default_kinds() is not default_kinds(), "no shared registry to mutate"


def test_a_registry_without_volume_refuses_the_kind(write_repo: WriteRepo) -> None:
    from socle.errors import ManifestError
    from socle.model.app import App

    registry = KindRegistry()
    registry.register("App", App)
    root = write_repo({"v.yaml": volume("d")})
    with pytest.raises(ManifestError) as info:
        load(root, kinds=registry)
    assert "unknown kind 'Volume' (known kinds: App)" in info.value.problems[0].reason
