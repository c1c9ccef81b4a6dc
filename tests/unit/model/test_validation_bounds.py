"""Hostile values are refused at load time with the field path and line, never later.

Trailing newlines in names (``$`` matches before one), NaN/Inf/overflowing durations and
sizes, NUL and escape characters in names, labels, env, commands, build env and workdirs,
probe intervals that would fork thousands of processes a second, too many ports.
"""

from __future__ import annotations

import json

import pytest

from socle.model.app import MAX_PORTS
from socle.units import parse_cpu, parse_duration, parse_size
from tests.unit.model._repo import app
from tests.unit.model.conftest import Problems

HEAD = "apiVersion: socle/v1\nkind: App\nmetadata:\n  name: {name}\n"


def q(text: str) -> str:
    """A YAML double-quoted scalar holding ``text`` exactly (escapes included)."""
    return json.dumps(text)


def health(extra: str) -> str:
    return f"ports: [{{name: http}}]\nhealth:\n  tcp: {{port: http}}\n{extra}"


# (id, spec lines or a whole document, line, field path, part of the reason)
CASES: list[tuple[str, str, int, str, str]] = [
    (
        "name with a trailing newline",
        "doc:" + HEAD.format(name=q("api\n")) + "spec:\n  run: {command: [x]}\n",
        4,
        "metadata.name",
        "invalid name",
    ),
    (
        "name with an escape",
        "doc:" + HEAD.format(name=q("a\x1bb")) + "spec:\n  run: {command: [x]}\n",
        4,
        "metadata.name",
        "invalid name",
    ),
    ("NaN duration", "stopGrace: .nan\n", 8, "spec.stopGrace", "finite"),
    ("infinite duration", "stopGrace: .inf\n", 8, "spec.stopGrace", "finite"),
    ("1e400 duration", "stopGrace: 1e400\n", 8, "spec.stopGrace", ""),
    ("duration over a year", "stopGrace: 400d\n", 8, "spec.stopGrace", "longer than a year"),
    ("huge digits duration", f"stopGrace: {'9' * 400}s\n", 8, "spec.stopGrace", ""),
    ("huge size", "resources: {memory: 2048Ti}\n", 8, "spec.resources.memory", "larger than 1Pi"),
    ("overflowing size", f"resources: {{memory: {'9' * 400}Ti}}\n", 8, "spec.resources.memory", ""),
    (
        "huge integer size",
        f"resources: {{memory: {10**30}}}\n",
        8,
        "spec.resources.memory",
        "larger than 1Pi",
    ),
    ("NaN cpu", "resources: {cpu: .nan}\n", 8, "spec.resources.cpu", "finite"),
    ("too many cpus", "resources: {cpu: 100000}\n", 8, "spec.resources.cpu", "cores"),
    ("NUL in an env value", f"env: {{A: {q('x' + chr(0) + 'y')}}}\n", 8, "spec.env.A", "NUL byte"),
    (
        "escape in an env value",
        f"env: {{A: {q(chr(27) + '[2J')}}}\n",
        8,
        "spec.env.A",
        "control character",
    ),
    (
        "env name with a trailing newline",
        f"env: {{{q('A' + chr(10))}: x}}\n",
        8,
        'spec.env["A\\n"]',
        "invalid environment variable name",
    ),
    (
        "NUL in a command argument",
        f"build:\n- command: [echo, {q('a' + chr(0))}]\n",
        9,
        "spec.build[0].command[1]",
        "NUL byte",
    ),
    (
        "NUL in build env",
        f"build:\n- command: [make]\n  env: {{CC: {q('gcc' + chr(0))}}}\n",
        10,
        "spec.build[0].env.CC",
        "NUL byte",
    ),
    (
        "bad build env name",
        f"build:\n- command: [make]\n  env: {{{q('A B')}: x}}\n",
        10,
        'spec.build[0].env["A B"]',
        "invalid environment variable name",
    ),
    (
        "label value with a newline",
        "doc:"
        + HEAD.format(name="api")
        + f"  labels: {{team: {q('a' + chr(10))}}}\nspec:\n  run: {{command: [x]}}\n",
        5,
        "metadata.labels",
        "control characters",
    ),
    (
        "probe interval of 1us",
        health("  interval: 0.000001\n"),
        11,
        "spec.health.interval",
        "at least 100ms",
    ),
    (
        "probe timeout of 1ms",
        health("  timeout: 1ms\n"),
        11,
        "spec.health.timeout",
        "at least 10ms",
    ),
    (
        "probe timeout above interval",
        health("  interval: 1s\n  timeout: 5s\n"),
        12,
        "spec.health.timeout",
        "longer than the interval",
    ),
    (
        "too many ports",
        "ports: [" + ", ".join(f"{{name: p{i}}}" for i in range(MAX_PORTS + 1)) + "]\n",
        8,
        "spec.ports",
        "at most 64",
    ),
    (
        "dependsOn with a newline",
        f"dependsOn: [{q('db' + chr(10))}]\n",
        8,
        "spec.dependsOn[0]",
        "invalid dependsOn entry",
    ),
]


def _files(body: str) -> dict[str, str | bytes]:
    if body.startswith("doc:"):
        return {"a.yaml": body[4:]}
    return {"a.yaml": app("api", body)}


@pytest.mark.parametrize(
    ("body", "line", "path", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hostile_value_is_refused_with_its_place(
    problems: Problems, body: str, line: int, path: str, reason: str
) -> None:
    found = problems(_files(body))
    assert len(found) == 1, found
    problem = found[0]
    assert (problem.file, problem.path) == ("a.yaml", path), problem
    assert problem.line == line, problem
    assert reason in problem.reason, problem


def test_http_check_path_with_an_escape_is_refused(problems: Problems) -> None:
    body = f"ports: [{{name: http}}]\nhealth:\n  http: {{port: http, path: {q('/h' + chr(27))}}}\n"
    (problem,) = problems({"a.yaml": app("api", body)})
    assert problem.path == "spec.health.http.path" and problem.line == 10


def test_workdir_with_controls_is_refused(problems: Problems) -> None:
    doc = HEAD.format(name="api") + f"spec:\n  run: {{command: [x], workdir: {q('a' + chr(10))}}}\n"
    (problem,) = problems({"a.yaml": doc})
    assert problem.path == "spec.run.workdir" and "relative path" in problem.reason


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), -float("inf"), 1e400, 10**400, "9" * 400 + "d", "366d"]
)
def test_durations_are_finite_and_bounded(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_bounds_themselves_pass() -> None:
    assert parse_duration("365d") == 365 * 86400
    assert parse_size("1024Ti") == 1024**5
    assert parse_cpu(1024) == 1024.0


@pytest.mark.parametrize("bad", ["1025Ti", 1024**5 + 1, "9" * 400, "1e3", "128Mi\x00"])
def test_sizes_do_not_overflow(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e400, "1025", "500m\x00"])
def test_cpu_is_finite_and_bounded(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_cpu(bad)
