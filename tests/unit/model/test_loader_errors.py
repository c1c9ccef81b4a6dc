"""Every kind of bad input is refused with file, line, field path and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from socle.errors import ManifestError
from socle.model.loader import load
from socle.model.yamlsource import MAX_FILE_BYTES
from tests.unit.model._repo import Files, app, write_files
from tests.unit.model.conftest import Problems

HEAD = "apiVersion: socle/v1\nkind: App\nmetadata:\n  name: {name}\n"

# (id, files, [(file, line, path, part of the reason)]) -- problems come sorted by file, line.
CASES: list[tuple[str, Files, list[tuple[str, int | None, str, str]]]] = [
    (
        "unknown field with suggestion",
        {"a.yaml": app("api", "replica: 2\n")},
        [("a.yaml", 8, "spec.replica", "unknown field 'replica'; did you mean 'replicas'?")],
    ),
    (
        "unknown field without a close name lists the known ones",
        {"a.yaml": app("api", "zzz:\n  x: 1\n").replace("run:\n", "run:\n    workdir: .\n")},
        [("a.yaml", 9, "spec.zzz", "known fields: replicas, run, build")],
    ),
    (
        "snake_case spelling of a field",
        {"a.yaml": app("api", "stop_grace: 5s\n")},
        [("a.yaml", 8, "spec.stop_grace", "unknown field 'stop_grace'; did you mean 'stopGrace'?")],
    ),
    (
        "unknown nested field",
        {"a.yaml": app("api", "health:\n  http: {path: /, port: http, timeout: 1}\n")},
        [
            (
                "a.yaml",
                9,
                "spec.health.http.timeout",
                "unknown field 'timeout'; known fields: path, port",
            )
        ],
    ),
    (
        "wrong type",
        {"a.yaml": app("api", "replicas: two\n")},
        [("a.yaml", 8, "spec.replicas", "expected an integer (got 'two')")],
    ),
    (
        "out of range",
        {"a.yaml": app("api", "replicas: -1\n")},
        [("a.yaml", 8, "spec.replicas", "greater than or equal to 0 (got -1)")],
    ),
    (
        "missing required field points at its parent",
        {"a.yaml": HEAD.format(name="api") + "spec:\n  replicas: 2\n"},
        [("a.yaml", 5, "spec.run", "required field is missing")],
    ),
    (
        "empty command",
        {"a.yaml": HEAD.format(name="api") + "spec:\n  run:\n    command: []\n"},
        [("a.yaml", 7, "spec.run.command", "must not be empty")],
    ),
    (
        "unknown apiVersion",
        {"a.yaml": app("api").replace("socle/v1", "socle/v2")},
        [("a.yaml", 1, "apiVersion", "unknown apiVersion 'socle/v2' (known: socle/v1)")],
    ),
    (
        "unknown kind",
        {"a.yaml": app("api").replace("kind: App", "kind: Ap")},
        [("a.yaml", 2, "kind", "unknown kind 'Ap' (known kinds: App, Volume")],
    ),
    (
        "a YAML file that is not a manifest",
        {"compose.yaml": "services:\n  web:\n    image: nginx\n"},
        [
            ("compose.yaml", 1, "apiVersion", "required field is missing"),
            ("compose.yaml", 1, "kind", "list it in .socleignore"),
        ],
    ),
    (
        "document that is not a mapping",
        {"a.yaml": app("api") + "---\n- a\n- b\n"},
        [("a.yaml", 9, "", "a manifest must be a mapping, not a list")],
    ),
    (
        "invalid name",
        {"a.yaml": app("Api_1")},
        [("a.yaml", 4, "metadata.name", "invalid name 'Api_1'")],
    ),
    (
        "invalid label key",
        {"a.yaml": app("api").replace("  name: api\n", "  name: api\n  labels: {'bad key': x}\n")},
        [("a.yaml", 5, "metadata.labels", "invalid label key 'bad key'")],
    ),
    (
        "invalid duration",
        {"a.yaml": app("api", "stopGrace: 10x\n")},
        [("a.yaml", 8, "spec.stopGrace", "invalid duration '10x'")],
    ),
    (
        "invalid size",
        {"a.yaml": app("api", "resources:\n  cpu: 1\n  memory: 12Xi\n")},
        [("a.yaml", 10, "spec.resources.memory", "invalid size '12Xi'")],
    ),
    (
        "invalid port name, indexed path",
        {"a.yaml": app("api", "ports:\n  - name: http\n  - name: Admin\n")},
        [("a.yaml", 10, "spec.ports[1].name", "invalid port name 'Admin'")],
    ),
    (
        "duplicate port name",
        {"a.yaml": app("api", "ports:\n  - name: http\n  - name: http\n")},
        [("a.yaml", 10, "spec.ports[1].name", "duplicate port name 'http'")],
    ),
    (
        "health port not in spec.ports points at the port",
        {
            "a.yaml": app(
                "api",
                "ports:\n  - name: http\nhealth:\n  http:\n    path: /healthz\n    port: web\n",
            )
        },
        [("a.yaml", 13, "spec.health.http.port", "port 'web' which is not in spec.ports (http)")],
    ),
    (
        "health needs one probe",
        {"a.yaml": app("api", "health:\n  interval: 1s\n")},
        [("a.yaml", 8, "spec.health", "exactly one of http, tcp or exec")],
    ),
    (
        "rolling update that cannot progress",
        {"a.yaml": app("api", "update:\n  maxSurge: 0\n")},
        [("a.yaml", 9, "spec.update.maxSurge", "cannot both be 0")],
    ),
    (
        "env: reserved name, bad value, bad secret, all at once",
        {
            "a.yaml": app(
                "api",
                "env:\n  PORT: '1'\n  LIST: [1]\n  FLAG: yes\n  DB: {secret: nope}\n  OK: 3\n",
            )
        },
        [
            ("a.yaml", 9, "spec.env.PORT", "PORT is set by the runtime"),
            ("a.yaml", 10, "spec.env.LIST", "env values must be strings, numbers"),
            ("a.yaml", 11, "spec.env.FLAG", "not true/false (quote it)"),
            ("a.yaml", 12, "spec.env.DB.secret", "invalid secret reference 'nope'"),
        ],
    ),
    (
        "dependsOn lists an app twice",
        {"a.yaml": app("api", "dependsOn: [db, db]\n") + "---\n" + app("db")},
        [("a.yaml", 8, "spec.dependsOn[1]", "dependsOn lists 'db' twice")],
    ),
    (
        "dependsOn names a missing app",
        {"a.yaml": app("api", "dependsOn:\n  - worker\n  - db\n") + "---\n" + app("worker")},
        [("a.yaml", 10, "spec.dependsOn[1]", "dependsOn names 'db', which is not an App")],
    ),
    (
        "dependency cycle is named",
        {
            "a.yaml": app("a", "dependsOn: [b]\n"),
            "b.yaml": app("b", "dependsOn: [c]\n"),
            "c.yaml": app("c", "dependsOn: [a]\n"),
        },
        [("a.yaml", 8, "spec.dependsOn[0]", "dependency cycle: a -> b -> c -> a")],
    ),
    (
        "an app depending on itself",
        {"a.yaml": app("a", "dependsOn: [a]\n")},
        [("a.yaml", 8, "spec.dependsOn[0]", "dependency cycle: a -> a")],
    ),
    (
        "duplicate names, both locations",
        {"x/one.yaml": app("api"), "y/two.yaml": "# another\n" + app("api")},
        [
            ("x/one.yaml", 4, "metadata.name", "duplicate App 'api': also defined at y/two.yaml:2"),
            ("y/two.yaml", 5, "metadata.name", "duplicate App 'api': also defined at x/one.yaml:1"),
        ],
    ),
    (
        "workdir that does not exist",
        {"a.yaml": app("api").replace("    command", "    workdir: apps/nope\n    command")},
        [("a.yaml", 7, "spec.run.workdir", "workdir 'apps/nope' does not exist")],
    ),
    (
        "workdir that escapes the repository",
        {"a.yaml": app("api").replace("    command", "    workdir: ../elsewhere\n    command")},
        [
            (
                "a.yaml",
                7,
                "spec.run.workdir",
                "must be a relative path inside the manifest repository",
            )
        ],
    ),
    (
        "YAML syntax error with line and column",
        {"a.yaml": "apiVersion: socle/v1\nkind: App\nmetadata:\n  name: api\n bad: [\n"},
        [("a.yaml", 5, "", "invalid YAML: did not find expected key")],
    ),
    (
        "duplicate key",
        {"a.yaml": app("api", "replicas: 1\nreplicas: 2\n")},
        [("a.yaml", 9, "spec.replicas", "duplicate key 'replicas' (first at line 8)")],
    ),
    (
        "merge key",
        {"a.yaml": app("api", "<<: {replicas: 2}\n")},
        [("a.yaml", 8, 'spec["<<"]', "merge keys (<<) are not supported")],
    ),
    (
        "alias",
        {"a.yaml": app("api", "env: {A: &x one, B: *x}\n")},
        [("a.yaml", 8, "", "YAML alias *x is not allowed")],
    ),
    (
        "python tag builds nothing",
        {"a.yaml": app("api", "replicas: !!python/object/apply:os.system [id]\n")},
        [("a.yaml", 8, "spec.replicas", "unsupported YAML tag !!python/object/apply:os.system")],
    ),
    (
        "custom tag",
        {"a.yaml": app("api", "replicas: !two 2\n")},
        [("a.yaml", 8, "spec.replicas", "unsupported YAML tag !two")],
    ),
    (
        "deep flow nesting",
        {"a.yaml": app("api") + "---\nx: " + "[" * 200 + "]" * 200 + "\n"},
        [("a.yaml", 9, "", "nested deeper than 64 levels")],
    ),
    (
        "deep compact block nesting",
        {"a.yaml": "- " * 100_000 + "x\n"},
        [("a.yaml", 1, "", "nested deeper than 64 levels")],
    ),
    (
        "deep indented nesting",
        {"a.yaml": "".join(" " * i + f"k{i}:\n" for i in range(70)) + " " * 70 + "v\n"},
        [("a.yaml", 65, "", "nested deeper than 64 levels")],
    ),
    (
        "not UTF-8",
        {"a.yaml": b"apiVersion: socle/v1\nkind: App\nmetadata:\n  name: caf\xe9\n"},
        [("a.yaml", 4, "", "not UTF-8 text (byte 0xe9)")],
    ),
    (
        "binary",
        {"a.yaml": b"\x7fELF\x02\x01\x01\x00\x00\x00"},
        [("a.yaml", None, "", "binary file")],
    ),
    (
        "too big",
        {"a.yaml": b"# " + b"x" * MAX_FILE_BYTES + b"\n"},
        [("a.yaml", None, "", "larger than 5 MiB")],
    ),
    (
        "problems from several files are all collected",
        {
            "a.yaml": app("a", "replicas: x\n"),
            "b.yaml": app("b").replace("kind: App", "kind: Nope"),
            "c/c.yaml": "key: [unclosed\n",
            "d.yaml": app("d", "stopGrace: soon\n"),
        },
        [
            ("a.yaml", 8, "spec.replicas", "expected an integer"),
            ("b.yaml", 2, "kind", "unknown kind 'Nope'"),
            ("c/c.yaml", 2, "", "invalid YAML"),
            ("d.yaml", 8, "spec.stopGrace", "invalid duration 'soon'"),
        ],
    ),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_problem_is_located(
    problems: Problems, files: Files, expected: list[tuple[str, int | None, str, str]]
) -> None:
    found = problems(files)
    assert [(p.file, p.line, p.path) for p in found] == [e[:3] for e in expected], found
    for problem, (*_, reason) in zip(found, expected, strict=True):
        assert reason in problem.reason, problem


def test_syntax_error_has_a_column(problems: Problems) -> None:
    (problem,) = problems({"a.yaml": "a: b\n  c: [\n"})
    assert (problem.line, problem.column) == (2, 4)
    assert str(problem).startswith("a.yaml:2:4: invalid YAML")


def test_documents_before_a_syntax_error_are_still_checked(problems: Problems) -> None:
    found = problems({"a.yaml": app("api", "replicas: x\n") + "---\nkey: [\n"})
    assert [(p.line, p.path) for p in found] == [(8, "spec.replicas"), (11, "")]


def test_missing_dependency_not_guessed_when_a_file_is_unreadable(problems: Problems) -> None:
    found = problems({"a.yaml": app("a", "dependsOn: [b]\n"), "b.yaml": "kind: [\n"})
    assert [p.file for p in found] == ["b.yaml"]


def test_symlinked_file_outside_is_refused(tmp_path: Path) -> None:
    outside = write_files(tmp_path / "outside", {"secret.yaml": app("leak")})
    root = write_files(tmp_path / "repo", {"a.yaml": app("api")})
    (root / "leak.yaml").symlink_to(outside / "secret.yaml")
    (root / "dir").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ManifestError) as info:
        load(root)
    assert [(p.file, p.line) for p in info.value.problems] == [("dir", None), ("leak.yaml", None)]
    assert all(
        p.reason.startswith("symlink points outside the repository; refused")
        for p in info.value.problems
    )


def test_symlinks_inside_are_followed_once(tmp_path: Path) -> None:
    root = write_files(tmp_path / "repo", {"real/a.yaml": app("api")})
    (root / "link.yaml").symlink_to(root / "real" / "a.yaml")
    (root / "linkdir").symlink_to(root / "real", target_is_directory=True)
    with pytest.raises(ManifestError) as info:
        load(root)
    assert [p.reason for p in info.value.problems] == [
        "duplicate App 'api': also defined at real/a.yaml:1",
        "duplicate App 'api': also defined at link.yaml:1",
    ]


def test_workdir_symlink_out_of_the_repository(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    root = write_files(
        tmp_path / "repo",
        {"a.yaml": app("api").replace("    command", "    workdir: code\n    command")},
    )
    (root / "code").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / ".socleignore").write_text("# data lives elsewhere\ncode/\n")
    with pytest.raises(ManifestError) as info:
        load(root)
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (7, "spec.run.workdir")
    assert "resolves outside the repository" in problem.reason


def test_fifo_is_refused_not_read(tmp_path: Path) -> None:
    import os

    root = write_files(tmp_path / "repo", {"a.yaml": app("api")})
    os.mkfifo(root / "pipe.yaml")
    with pytest.raises(ManifestError) as info:
        load(root)
    assert [(p.file, p.reason) for p in info.value.problems] == [
        ("pipe.yaml", "not a regular file; refused")
    ]


def test_missing_directory() -> None:
    with pytest.raises(ManifestError) as info:
        load(Path("/nonexistent/socle/repo"))
    assert info.value.problems[0].reason == "no such directory"


def test_billion_laughs_is_refused_quickly(problems: Problems) -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    found = problems({"bomb.yaml": "\n".join(lines) + "\n"})
    assert found[0].reason.startswith("YAML alias *a0 is not allowed")
    assert len(found) <= 20


def test_nesting_below_the_scan_triggers_is_still_bounded(problems: Problems) -> None:
    # 40 block levels and 30 flow levels: no line reaches column 48 and no document has 48
    # brackets, so the fast path parses it; the builder then refuses level 65.
    text = "".join(" " * i + f"k{i}:\n" for i in range(40)) + " " * 40 + "[" * 30 + "]" * 30
    (problem,) = problems({"a.yaml": text + "\n"})
    assert (problem.line, problem.reason) == (41, "nested deeper than 64 levels")
    assert problem.path == ".".join(f"k{i}" for i in range(40)) + "[0]" * 24
