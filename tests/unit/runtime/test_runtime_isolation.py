"""The bubblewrap command line and the isolation decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from socle.errors import RuntimeDriverError
from socle.runtime.local.isolation import bwrap_argv, detect


def test_bwrap_argv_namespaces_without_net_or_die_with_parent() -> None:
    argv = bwrap_argv(
        "/usr/bin/bwrap",
        ["/usr/bin/python3", "app.py"],
        workdir=Path("/srv/rel/app"),
        release_root=Path("/srv/rel"),
        hostname="web-0",
        hidden=[Path("/var/lib/socle/run"), Path("/nonexistent/logs")],
    )
    assert argv[0] == "/usr/bin/bwrap"
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"):
        assert flag in argv
    assert "--new-session" in argv
    assert "--die-with-parent" not in argv and "--unshare-net" not in argv
    assert "--unshare-all" not in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--chdir") + 1] == "/srv/rel/app"
    assert argv[argv.index("--bind") + 1 : argv.index("--bind") + 3] == ["/srv/rel", "/srv/rel"]
    assert argv[-3:] == ["--", "/usr/bin/python3", "app.py"]
    # Hidden folders that exist get an empty tmpfs, before the release is bound.
    assert "/nonexistent/logs" not in argv
    assert argv.index("--ro-bind") < argv.index("--tmpfs") < argv.index("--bind")


def test_hidden_existing_folder_is_masked(tmp_path: Path) -> None:
    hidden = Path("/var")  # exists, not under /tmp
    argv = bwrap_argv(
        "bwrap", ["x"], workdir=tmp_path, release_root=tmp_path, hostname="h", hidden=[hidden]
    )
    assert argv[argv.index("/var") - 1 : argv.index("/var") + 1] == ["--tmpfs", "/var"]


def test_workdir_outside_release_root_is_bound_too() -> None:
    argv = bwrap_argv(
        "bwrap", ["x"], workdir=Path("/w"), release_root=Path("/r"), hostname="h", hidden=[]
    )
    assert argv.count("--bind") == 2


def test_none_mode_says_plainly_what_is_missing() -> None:
    host = detect("none")
    assert not host.sandbox
    assert host.info.mode == "rlimits"
    assert host.info.warning is not None and "not sandboxed" in host.info.warning


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(RuntimeDriverError, match="unknown isolation mode"):
        detect("chroot")
