"""preflight: a spec that can never start is refused with where and why, never its secrets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from socle.errors import StartRefused
from socle.runtime.driver import InstanceId, InstanceSpec, ReleaseId
from socle.runtime.local.instance import preflight
from socle.runtime.local.spawn import instance_env


def spec(tmp_path: Path, **overrides: Any) -> InstanceSpec:
    fields: dict[str, Any] = {
        "id": InstanceId("web-0"),
        "app": "web",
        "release": ReleaseId("r1"),
        "ordinal": 0,
        "command": [sys.executable, "app.py"],
        "workdir": tmp_path,
    }
    fields.update(overrides)
    return InstanceSpec(**fields)


def refused(s: InstanceSpec) -> StartRefused:
    with pytest.raises(StartRefused) as caught:
        preflight(s, instance_env(s, {}))
    return caught.value


def test_a_startable_spec_gives_its_program(tmp_path: Path) -> None:
    s = spec(tmp_path, env={"A": "1"}, secret_env={"B": "2"})
    assert preflight(s, instance_env(s, {})) == sys.executable


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"command": [sys.executable, "a\0b"]}, "run.command[1] holds a NUL byte"),
        ({"env": {"GREETING": "hi\0there"}}, "the value of environment variable GREETING"),
        ({"env": {"A=B": "x"}}, "invalid environment variable name 'A=B'"),
        ({"env": {"": "x"}}, "invalid environment variable name ''"),
        ({"env": {"A\0B": "x"}}, "invalid environment variable name"),
        ({"command": ["no-such-program-4f2"]}, "program 'no-such-program-4f2' not found"),
        ({"command": ["./missing.sh"]}, "missing.sh"),
    ],
)
def test_hopeless_specs_are_refused(tmp_path: Path, overrides: dict[str, Any], words: str) -> None:
    error = refused(spec(tmp_path, **overrides))
    assert words in error.message and "web-0" in error.message
    assert error.hint


def test_missing_workdir_is_refused(tmp_path: Path) -> None:
    assert "does not exist" in refused(spec(tmp_path / "gone")).message


def test_a_secret_value_is_named_never_shown(tmp_path: Path) -> None:
    error = refused(spec(tmp_path, secret_env={"DB_PASSWORD": "hunter2-canary\0x"}))
    assert "secret value of environment variable DB_PASSWORD" in error.message
    assert "hunter2" not in error.message + (error.hint or "")
