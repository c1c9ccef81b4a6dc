"""``spec.templates`` on App: what loads, what is refused (file, line, field, reason)."""

from __future__ import annotations

import pytest

from socle.engine.targets import app_state
from socle.model.loader import load
from tests.unit.model._repo import Files, app
from tests.unit.model.conftest import Problems, WriteRepo


def test_templates_load_with_defaults(write_repo: WriteRepo) -> None:
    root = write_repo(
        {
            "a.yaml": app(
                "web",
                "templates:\n- {source: conf/app.tmpl, destination: app.conf}\n"
                "- {source: conf/b.tmpl, destination: sub/b.conf, onChange: signal, "
                "signal: SIGUSR1}\n",
            )
        }
    )
    spec = load(root).apps["web"].spec
    first, second = spec.templates
    assert (first.source, first.destination, first.on_change, first.signal) == (
        "conf/app.tmpl",
        "app.conf",
        "restart",
        "SIGHUP",
    )
    assert (second.on_change, second.signal, second.destination) == (
        "signal",
        "SIGUSR1",
        "sub/b.conf",
    )


def test_unset_templates_leave_digests_as_they_were(write_repo: WriteRepo) -> None:
    """An app without templates keeps its manifest and template digests (no restart on
    upgrade); adding templates changes the template (new instances render them)."""
    plain = load(write_repo({"a.yaml": app("web")})).apps["web"]
    state = app_state(plain, "r1")
    assert "templates" not in state.manifest["spec"]
    with_tpl = load(
        write_repo({"a.yaml": app("web", "templates:\n- {source: a.tmpl, destination: a}\n")})
    ).apps["web"]
    assert app_state(with_tpl, "r1").template != state.template


CASES: list[tuple[str, Files, list[tuple[str, int, str, str]]]] = [
    (
        "absolute source",
        {"a.yaml": app("w", "templates:\n- {source: /etc/passwd, destination: a}\n")},
        [("a.yaml", 9, "spec.templates[0].source", "plain relative path")],
    ),
    (
        "source climbing out",
        {"a.yaml": app("w", "templates:\n- {source: ../../etc/passwd, destination: a}\n")},
        [("a.yaml", 9, "spec.templates[0].source", "no '..'")],
    ),
    (
        "absolute destination",
        {"a.yaml": app("w", "templates:\n- {source: a.tmpl, destination: /etc/a}\n")},
        [("a.yaml", 9, "spec.templates[0].destination", "plain relative path")],
    ),
    (
        "destination with ..",
        {"a.yaml": app("w", "templates:\n- {source: a.tmpl, destination: x/../../a}\n")},
        [("a.yaml", 9, "spec.templates[0].destination", "no '..'")],
    ),
    (
        "unknown onChange",
        {"a.yaml": app("w", "templates:\n- {source: a.tmpl, destination: a, onChange: kill}\n")},
        [("a.yaml", 9, "spec.templates[0].onChange", "")],
    ),
    (
        "unknown signal",
        {"a.yaml": app("w", "templates:\n- {source: a, destination: a, signal: SIGKILL}\n")},
        [("a.yaml", 9, "spec.templates[0].signal", "is not one of")],
    ),
    (
        "destination twice",
        {
            "a.yaml": app(
                "w",
                "templates:\n- {source: a.tmpl, destination: a.conf}\n"
                "- {source: b.tmpl, destination: a.conf}\n",
            )
        },
        [("a.yaml", 10, "spec.templates[1].destination", "clashes with 'a.conf'")],
    ),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_templates_are_located(
    problems: Problems, files: Files, expected: list[tuple[str, int, str, str]]
) -> None:
    found = problems(files)
    assert [(p.file, p.line, p.path) for p in found] == [e[:3] for e in expected], found
    for problem, (*_, reason) in zip(found, expected, strict=True):
        assert reason in problem.reason, problem
