"""The sandbox profile's bubblewrap command line: what an app sees, and as whom."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from socle.runtime.driver import Mount
from socle.runtime.local.sandbox import (
    SCRATCH,
    SETPRIV,
    Profile,
    bwrap_argv,
    program_roots,
    sandbox_env,
)


def argv_for(program: str = "/usr/bin/python3", **overrides: object) -> list[str]:
    fields: dict[str, object] = {
        "command": [program, "app.py"],
        "workdir": Path("/srv/rel/app"),
        "release_root": Path("/srv/rel"),
        "hostname": "web-0",
        "uid": 200_123,
        "seccomp_fd": 7,
    }
    fields.update(overrides)
    return bwrap_argv("/usr/bin/bwrap", Profile(**fields))  # type: ignore[arg-type]


def pairs(argv: list[str], option: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg == option]


def test_no_host_root_only_system_folders_and_an_allowed_etc() -> None:
    argv = argv_for()
    sources = [source for source, _ in pairs(argv, "--ro-bind")]
    assert "/" not in sources
    assert "/usr" in sources
    for secret in ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh", "/root", "/home"):
        assert secret not in sources
    assert all(not s.startswith("/etc/") or s.split("/")[2] != "shadow" for s in sources)


def test_release_is_read_only_for_apps_and_writable_for_builds() -> None:
    assert ("/srv/rel", "/srv/rel") in pairs(argv_for(), "--ro-bind")
    assert ("/srv/rel", "/srv/rel") not in pairs(argv_for(), "--bind")
    assert ("/srv/rel", "/srv/rel") in pairs(argv_for(writable_release=True), "--bind")


def test_drops_to_the_app_uid_with_no_groups_caps_or_new_privileges() -> None:
    argv = argv_for()
    tail = argv[argv.index(SETPRIV) :]
    assert "--reuid=200123" in tail and "--regid=200123" in tail
    for flag in ("--clear-groups", "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all"):
        assert flag in tail
    assert tail[-3:] == ["--", "/usr/bin/python3", "app.py"]
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--seccomp") + 1] == "7"
    assert argv.index("--seccomp") < argv.index(SETPRIV)


def test_rootless_uses_a_user_namespace_and_no_setpriv() -> None:
    argv = argv_for(uid=None)
    assert SETPRIV not in argv and "--unshare-user" in argv
    assert "--cap-add" not in argv


def test_private_tmp_scratch_mounts_and_no_die_with_parent_for_apps() -> None:
    argv = argv_for(
        scratch=Path("/var/lib/socle/run/scratch/web-0"),
        mounts=[Mount(Path("/vol/data"), "/data"), Mount(Path("/vol/cfg"), "/cfg", True)],
    )
    assert argv[argv.index("--tmpfs") + 1] == "/tmp"
    assert ("/var/lib/socle/run/scratch/web-0", SCRATCH) in pairs(argv, "--bind")
    assert ("/vol/data", "/data") in pairs(argv, "--bind")
    assert ("/vol/cfg", "/cfg") in pairs(argv, "--ro-bind")
    assert "--die-with-parent" not in argv and "--unshare-net" not in argv
    assert "--die-with-parent" in argv_for(die_with_parent=True)


def test_parent_folders_are_made_traversable_before_binds() -> None:
    argv = argv_for()
    dirs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--dir"]
    assert "/srv" in dirs
    assert argv.index("/srv") < argv.index("/srv/rel")


def test_venv_program_brings_its_base_interpreter(tmp_path: Path) -> None:
    base = tmp_path / "pyenv" / "versions" / "3.x"
    (base / "bin").mkdir(parents=True)
    (base / "bin" / "python3").write_text("")
    venv = tmp_path / "rel" / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\nversion = 3.x\n")
    (venv / "bin" / "python").symlink_to(base / "bin" / "python3")
    roots = program_roots(str(venv / "bin" / "python"), hidden_ok=[tmp_path / "rel"])
    assert roots == [base]


def test_this_interpreter_is_found() -> None:
    roots = program_roots(sys.executable)
    if not sys.executable.startswith(("/usr/", "/bin/")):
        assert roots, "an interpreter outside /usr must be bound"
        real = Path(os.path.realpath(sys.executable))
        assert any(real.is_relative_to(root) for root in roots)


def test_home_is_fixed_inside_the_sandbox() -> None:
    env = sandbox_env({"HOME": "/root", "PATH": "/usr/bin"})
    assert env["HOME"] == SCRATCH and env["PATH"] == "/usr/bin"


def test_a_script_brings_its_interpreter(tmp_path: Path) -> None:
    base = tmp_path / "opt" / "tool"
    (base / "bin").mkdir(parents=True)
    (base / "bin" / "lua").write_text("")
    script = tmp_path / "rel" / "run"
    script.parent.mkdir()
    script.write_text(f"#!{base / 'bin' / 'lua'} -e\nprint(1)\n")
    assert program_roots(str(script), hidden_ok=[tmp_path / "rel"]) == [base]
    script.write_text("#!/usr/bin/env lua\n")
    assert program_roots(str(script), hidden_ok=[tmp_path / "rel"]) == []
