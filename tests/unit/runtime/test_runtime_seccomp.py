"""The syscall filter compiles to classic BPF and is written owner-only."""

from __future__ import annotations

import stat
from pathlib import Path

from socle.runtime.local.seccomp import DENIED, compile_filter, write_filter


def test_filter_compiles_to_whole_bpf_instructions() -> None:
    program = compile_filter()
    assert program and len(program) % 8 == 0  # struct sock_filter is 8 bytes


def test_deny_list_covers_the_escape_paths() -> None:
    for name in ("mount", "ptrace", "unshare", "setns", "keyctl", "bpf", "init_module"):
        assert name in DENIED


def test_written_once_owner_only(tmp_path: Path) -> None:
    path = write_filter(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert write_filter(tmp_path) == path
