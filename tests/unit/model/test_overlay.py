"""Environment overlays: strategic merge on data, then through ``load(path, env)``."""

from __future__ import annotations

import pytest

from socle.errors import ManifestError
from socle.model.loader import environments, load
from socle.model.overlay import Owners, merge
from tests.unit.model._repo import app
from tests.unit.model.conftest import Problems, WriteRepo

MERGES = [
    ("scalar replaces", {"a": 1, "b": 2}, {"a": 3}, {"a": 3, "b": 2}),
    (
        "mappings merge",
        {"m": {"x": 1, "y": 2}},
        {"m": {"y": 3, "z": 4}},
        {"m": {"x": 1, "y": 3, "z": 4}},
    ),
    ("lists replace", {"l": [1, 2, 3]}, {"l": [4]}, {"l": [4]}),
    (
        "null deletes",
        {"a": 1, "m": {"x": 1, "y": 2}},
        {"a": None, "m": {"x": None}},
        {"m": {"y": 2}},
    ),
    ("null of a missing key is a no-op", {"a": 1}, {"b": None}, {"a": 1}),
    ("new mapping drops its nulls", {}, {"m": {"x": 1, "y": None}}, {"m": {"x": 1}}),
    ("mapping replaces a scalar", {"m": 1}, {"m": {"x": 1}}, {"m": {"x": 1}}),
    ("scalar replaces a mapping", {"m": {"x": 1}}, {"m": 2}, {"m": 2}),
]


@pytest.mark.parametrize(
    ("base", "patch", "expected"), [m[1:] for m in MERGES], ids=[m[0] for m in MERGES]
)
def test_merge(base: dict[object, object], patch: dict[object, object], expected: object) -> None:
    before = repr(base), repr(patch)
    assert merge(base, patch, "p", Owners()) == expected
    assert (repr(base), repr(patch)) == before, "inputs must not be modified"


def test_owners_remember_the_deepest_patch() -> None:
    owners: Owners[str] = Owners()
    base: dict[object, object] = {"spec": {"a": 1, "b": {"c": 1}}}
    merged = merge(base, {"spec": {"b": {"c": 2}}}, "first", owners)
    merge(merged, {"spec": {"a": None}}, "second", owners)
    assert owners.find(("spec", "b", "c")) == ("first", ("spec", "b", "c"))
    assert owners.find(("spec", "a", "x")) == ("second", ("spec", "a"))
    assert owners.find(("spec", "z")) is None
    assert owners.find(("spec",)) is None


BASE = {
    "apps/api.yaml": app(
        "api",
        """\
        replicas: 2
        env:
          GREETING: hello
          KEEP: "1"
        ports:
          - name: http
          - name: admin
        """,
    ),
    "apps/worker.yaml": app("worker", "dependsOn: [api]\n"),
}


def test_environments_are_listed(write_repo: WriteRepo) -> None:
    root = write_repo(
        {**BASE, "environments/prod/a.yaml": "", "environments/dev/a.yaml": "", ".x/y.yaml": ""}
    )
    (root / "environments" / ".hidden").mkdir()
    (root / "environments" / "staging").symlink_to(root / "environments" / "dev")
    (root / "environments" / "escape").symlink_to(root.parent, target_is_directory=True)
    assert environments(root) == ["dev", "prod", "staging"]
    assert load(root, "staging").env == "staging"
    assert environments(root / "apps") == []


def test_patch_merges_replaces_and_deletes(write_repo: WriteRepo) -> None:
    patch = """\
kind: App
metadata:
  name: api
  labels: {env: dev}
spec:
  replicas: 3
  env:
    GREETING: hi
    KEEP: null
  ports:
    - name: web
"""
    root = write_repo({**BASE, "environments/dev/api.yaml": patch})
    base = load(root)
    dev = load(root, "dev")
    assert dev.env == "dev"
    api = dev.apps["api"]
    assert api.spec.replicas == 3
    assert api.spec.env == {"GREETING": "hi"}
    assert [p.name for p in api.spec.ports] == ["web"]
    assert api.metadata.labels == {"env": "dev"}
    assert dev.apps["worker"] == base.apps["worker"]
    assert dev.origins["App/api"] == "apps/api.yaml:1"
    assert dev.digest() != base.digest()


def test_patch_added_object(write_repo: WriteRepo) -> None:
    root = write_repo({**BASE, "environments/dev/extra/debug.yaml": "# tools\n" + app("debug")})
    loaded = load(root, "dev")
    assert list(loaded.apps) == ["api", "debug", "worker"]
    assert loaded.origins["App/debug"] == "environments/dev/extra/debug.yaml:2"
    assert "debug" not in load(root).apps


def test_patches_apply_in_file_order(write_repo: WriteRepo) -> None:
    patch = "kind: App\nmetadata: {name: api}\nspec: {replicas: %d}\n"
    root = write_repo(
        {**BASE, "environments/dev/b.yaml": patch % 5, "environments/dev/a.yaml": patch % 4}
    )
    assert load(root, "dev").apps["api"].spec.replicas == 5


def test_unknown_environment_names_the_available_ones(problems: Problems) -> None:
    found = problems({**BASE, "environments/dev/a.yaml": "", "environments/prod/a.yaml": ""}, "qa")
    assert [(p.file, p.line, p.reason) for p in found] == [
        ("environments/", None, "unknown environment 'qa' (available: dev, prod)")
    ]


def test_unknown_environment_without_environments_folder(problems: Problems) -> None:
    (problem,) = problems(BASE, "dev")
    assert "there is no environments/ folder" in problem.reason


def test_unknown_environment_still_reports_base_problems(problems: Problems) -> None:
    found = problems({**BASE, "apps/bad.yaml": app("bad", "replicas: x\n")}, "qa")
    assert [p.file for p in found] == ["apps/bad.yaml", "environments/"]


OVERLAY_ERRORS = [
    (
        "error set by a patch points at the patch line",
        "kind: App\nmetadata:\n  name: api\nspec:\n  replicas: many\n",
        [("environments/dev/p.yaml", 5, "spec.replicas", "expected an integer")],
    ),
    (
        "deleting a required field points at the null",
        "kind: App\nmetadata:\n  name: api\nspec:\n  run: null\n",
        [("environments/dev/p.yaml", 5, "spec.run", "required field is missing")],
    ),
    (
        "a list replaced with bad items",
        "kind: App\nmetadata:\n  name: api\nspec:\n  ports:\n    - name: ok\n    - name: Bad\n",
        [("environments/dev/p.yaml", 7, "spec.ports[1].name", "invalid port name 'Bad'")],
    ),
    (
        "bad value merged into a base mapping points at the patch",
        "kind: App\nmetadata:\n  name: api\nspec:\n  env: {GREETING: hi, X: [1]}\n",
        [("environments/dev/p.yaml", 5, "spec.env.X", "env values must be strings")],
    ),
    (
        "patch YAML syntax error",
        "kind: App\nmetadata:\n  name: api\nspec: [\n",
        [("environments/dev/p.yaml", 5, "", "invalid YAML")],
    ),
    (
        "patch that matches nothing and is not complete",
        "kind: App\nmetadata:\n  name: apj\nspec:\n  replicas: 1\n",
        [
            (
                "environments/dev/p.yaml",
                3,
                "metadata.name",
                "matches nothing in the base manifests (api, worker)",
            )
        ],
    ),
    (
        "patch with unknown kind",
        "kind: Ap\nmetadata:\n  name: api\n",
        [("environments/dev/p.yaml", 1, "kind", "unknown kind 'Ap'")],
    ),
    (
        "patch without a name",
        "kind: App\nspec:\n  replicas: 1\n",
        [("environments/dev/p.yaml", 1, "metadata.name", "a patch needs metadata.name")],
    ),
    (
        "patch making a cycle",
        "kind: App\nmetadata:\n  name: api\nspec:\n  dependsOn: [worker]\n",
        [
            (
                "environments/dev/p.yaml",
                5,
                "spec.dependsOn[0]",
                "dependency cycle: api -> worker -> api",
            )
        ],
    ),
    (
        "patch with an unknown field",
        "kind: App\nmetadata:\n  name: api\n  label: {a: b}\n",
        [("environments/dev/p.yaml", 4, "metadata.label", "did you mean 'labels'?")],
    ),
]


@pytest.mark.parametrize(
    ("patch", "expected"), [c[1:] for c in OVERLAY_ERRORS], ids=[c[0] for c in OVERLAY_ERRORS]
)
def test_overlay_problem_is_located(
    problems: Problems, patch: str, expected: list[tuple[str, int, str, str]]
) -> None:
    found = problems({**BASE, "environments/dev/p.yaml": patch}, "dev")
    assert [(p.file, p.line, p.path) for p in found] == [e[:3] for e in expected], found
    for problem, (*_, reason) in zip(found, expected, strict=True):
        assert reason in problem.reason, problem


def test_error_in_base_part_of_a_patched_object_points_at_the_base(write_repo: WriteRepo) -> None:
    root = write_repo(
        {
            "a.yaml": app("api", "stopGrace: forever\n"),
            "environments/dev/p.yaml": "kind: App\nmetadata: {name: api}\nspec: {replicas: 2}\n",
        }
    )
    with pytest.raises(ManifestError) as info:
        load(root, "dev")
    assert [(p.file, p.line, p.path) for p in info.value.problems] == [
        ("a.yaml", 8, "spec.stopGrace")
    ]
