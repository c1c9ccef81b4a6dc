"""Instance environment and program resolution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from socle.errors import RuntimeDriverError
from socle.runtime.driver import InstanceId, InstanceSpec, ReleaseId
from socle.runtime.local.spawn import BASE_PATH, ShimArgs, instance_env, resolve_program


def _spec(workdir: Path, **fields: object) -> InstanceSpec:
    base: dict[str, object] = {
        "id": InstanceId("api-1"),
        "app": "api",
        "release": ReleaseId("r7"),
        "ordinal": 1,
        "command": ["python3"],
        "workdir": workdir,
    }
    base.update(fields)
    return InstanceSpec(**base)  # type: ignore[arg-type]


def test_env_is_clean_then_spec_then_secrets_then_driver_vars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCLE_TOKEN", "leak")
    spec = _spec(
        tmp_path,
        env={"A": "1", "SHARED": "plain", "SOCLE_APP": "spoofed"},
        secret_env={"SHARED": "secret", "B": "2"},
        ports=["http", "admin_api"],
    )
    env = instance_env(spec, {"http": 5000, "admin_api": 5001})
    assert env == {
        "PATH": BASE_PATH,
        "LANG": "C.UTF-8",
        "HOME": str(tmp_path),
        "A": "1",
        "SHARED": "secret",
        "B": "2",
        "SOCLE_APP": "api",
        "SOCLE_INSTANCE": "api-1",
        "SOCLE_RELEASE": "r7",
        "PORT": "5000",
        "PORT_HTTP": "5000",
        "PORT_ADMIN_API": "5001",
    }


def test_no_ports_no_port_vars(tmp_path: Path) -> None:
    env = instance_env(_spec(tmp_path), {})
    assert "PORT" not in env and not any(k.startswith("PORT_") for k in env)


def test_relative_program_resolves_against_workdir(tmp_path: Path) -> None:
    program = tmp_path / ".venv" / "bin" / "python"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    spec = _spec(tmp_path, command=[".venv/bin/python", "-m", "x"])
    assert resolve_program(spec, instance_env(spec, {})) == str(program)


def test_bare_program_is_looked_up_on_the_instance_path(tmp_path: Path) -> None:
    spec = _spec(tmp_path, command=["sh"])
    found = resolve_program(spec, instance_env(spec, {}))
    assert os.path.basename(found) == "sh" and os.path.isabs(found)


def test_errors_name_the_file_and_the_workdir(tmp_path: Path) -> None:
    spec = _spec(tmp_path, command=[".venv/bin/python"])
    with pytest.raises(RuntimeDriverError) as caught:
        resolve_program(spec, instance_env(spec, {}))
    assert str(tmp_path / ".venv/bin/python") in caught.value.message
    assert f"workdir {tmp_path}" in caught.value.message
    assert caught.value.hint

    (tmp_path / "data.txt").write_text("x")
    spec = _spec(tmp_path, command=["./data.txt"])
    with pytest.raises(RuntimeDriverError, match="not executable"):
        resolve_program(spec, instance_env(spec, {}))

    spec = _spec(tmp_path, command=["no-such-tool-xyz"])
    with pytest.raises(RuntimeDriverError, match="not found on PATH"):
        resolve_program(spec, instance_env(spec, {}))

    spec = _spec(tmp_path / "gone")
    with pytest.raises(RuntimeDriverError, match=r"workdir .* does not exist"):
        resolve_program(spec, instance_env(spec, {}))


def test_shim_argv_keeps_the_command_after_double_dash(tmp_path: Path) -> None:
    args = ShimArgs(
        shim=tmp_path / "shim.pyc",
        log=tmp_path / "x.log",
        status=tmp_path / "x.exit",
        max_bytes=4096,
        backups=2,
        cgroups=["/sys/fs/cgroup/pids/socle/x"],
        rlimit_as=None,
        workdir=tmp_path,
        sandbox=True,
    )
    argv = args.argv(["/bin/echo", "--log=evil", "--"])
    assert argv[1:3] == ["-I", "-S"]
    assert argv[argv.index("--") + 1 :] == ["/bin/echo", "--log=evil", "--"]
    assert "--sandbox" in argv and "--cgroup=/sys/fs/cgroup/pids/socle/x" in argv
