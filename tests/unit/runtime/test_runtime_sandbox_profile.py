"""The sandbox profile's bubblewrap command line: what an app sees, and as whom."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A folder any user of the host may read (``/tmp/pytest-of-root`` is root's only): an
    interpreter found through the release's own files is shown only from such a place."""
    path = Path(tempfile.mkdtemp(prefix="socle-test-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_venv_program_brings_its_base_interpreter(public_tmp: Path) -> None:
    tmp_path = public_tmp
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


def test_a_script_brings_its_interpreter(public_tmp: Path) -> None:
    tmp_path = public_tmp
    base = tmp_path / "opt" / "tool"
    (base / "bin").mkdir(parents=True)
    (base / "bin" / "lua").write_text("")
    script = tmp_path / "rel" / "run"
    script.parent.mkdir()
    script.write_text(f"#!{base / 'bin' / 'lua'} -e\nprint(1)\n")
    assert program_roots(str(script), hidden_ok=[tmp_path / "rel"]) == [base]
    script.write_text("#!/usr/bin/env lua\n")
    assert program_roots(str(script), hidden_ok=[tmp_path / "rel"]) == []


def _private_target(tmp_path: Path) -> Path:
    """Another app's release inside a home only root may enter (0700)."""
    home = tmp_path / "home"
    other = home / "releases" / "other" / "r1"
    (other / "bin").mkdir(parents=True)
    (other / "bin" / "python").write_text("")
    (other / "secret.py").write_text("API_KEY = 'x'\n")
    home.chmod(0o700)
    return other


def test_a_venv_written_by_a_build_step_cannot_point_at_private_folders(
    public_tmp: Path,
) -> None:
    """The release is the app's: its ``pyvenv.cfg``, symlinks and ``#!`` lines may name any
    host path. Bound as the venv's "base interpreter", another app's release (or the
    home, or the operator's repository) would appear inside the sandbox."""
    other = _private_target(public_tmp)
    release = public_tmp / "rel"
    venv = release / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {other / 'bin'}\n")
    (venv / "bin" / "python").symlink_to(other / "bin" / "python")
    assert program_roots(str(venv / "bin" / "python"), hidden_ok=[release]) == []
    script = release / "run"
    script.write_text(f"#!{other / 'bin' / 'python'}\n")
    assert program_roots(str(script), hidden_ok=[release]) == []


def test_a_venv_of_the_control_planes_own_python_is_still_shown(public_tmp: Path) -> None:
    release = public_tmp / "rel"
    venv = release / ".venv"
    (venv / "bin").mkdir(parents=True)
    real = Path(os.path.realpath(sys.executable))
    (venv / "pyvenv.cfg").write_text(f"home = {real.parent}\n")
    (venv / "bin" / "python").symlink_to(real)
    roots = program_roots(str(venv / "bin" / "python"), hidden_ok=[release])
    if not _system_path(real):
        assert roots and all(real.is_relative_to(r) or r == real.parent.parent for r in roots)


def test_a_program_the_manifest_names_outside_the_release_is_shown(tmp_path: Path) -> None:
    """The manifest's author chose it (``command: [/srv/tools/bin/run]``): not the app's."""
    other = _private_target(tmp_path)
    assert program_roots(str(other / "bin" / "python"), hidden_ok=[tmp_path / "rel"]) == [other]


def _system_path(path: Path) -> bool:
    return str(path).startswith(("/usr/", "/bin/", "/sbin/", "/lib"))


@pytest.mark.timeout(20)
def test_a_fifo_in_place_of_pyvenv_cfg_or_a_script_does_not_block(tmp_path: Path) -> None:
    """A build step leaves FIFOs where the control plane reads ``pyvenv.cfg`` and the
    ``#!`` line of the next step's program: a plain open() would wait for a writer
    forever, in a worker thread of the control plane."""
    release = tmp_path / "rel"
    (release / ".venv" / "bin").mkdir(parents=True)
    os.mkfifo(release / ".venv" / "pyvenv.cfg")
    os.mkfifo(release / ".venv" / "bin" / "pip")
    assert program_roots(str(release / ".venv" / "bin" / "pip"), hidden_ok=[release]) == []
