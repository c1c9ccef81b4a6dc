"""The bubblewrap command line: what the sandbox shows and hides."""

from __future__ import annotations

from pathlib import Path

from socle.runtime.local.isolation import bwrap_argv


def argv_for(program: str) -> list[str]:
    return bwrap_argv(
        "/usr/bin/bwrap",
        [program, "app.py"],
        workdir=Path("/srv/rel/app"),
        release_root=Path("/srv/rel"),
        hostname="app-0",
        hidden=[],
    )


def ro_binds(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--ro-bind"]


def test_program_in_a_venv_under_tmp_stays_visible() -> None:
    argv = argv_for("/tmp/ci/main/.venv/bin/python")
    assert ro_binds(argv) == ["/", "/tmp/ci/main/.venv"]
    assert argv.index("--tmpfs") < argv.index("/tmp/ci/main/.venv"), "bound after the tmpfs"


def test_program_elsewhere_needs_no_extra_bind() -> None:
    assert ro_binds(argv_for("/usr/bin/python3")) == ["/"]
    assert ro_binds(argv_for("/tmp/tool")) == ["/"]
