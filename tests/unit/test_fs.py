"""Private files, folders and lock files (socle.fs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from socle.fs import open_private_append, private_dir, try_lock, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_is_owner_only_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "token"
    write_private(target, "first\n")
    assert target.read_text() == "first\n" and mode(target) == 0o600
    assert mode(target.parent) == 0o700
    target.chmod(0o644)  # an older, too-wide file is replaced by a private one
    write_private(target, b"second", durable=True)
    assert target.read_bytes() == b"second" and mode(target) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["token"]  # no temporary left


def test_write_private_replaces_a_symlink_instead_of_following_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep")
    link = tmp_path / "home" / "server.json"
    link.parent.mkdir()
    link.symlink_to(outside)
    write_private(link, "{}")
    assert outside.read_text() == "keep"
    assert not link.is_symlink() and link.read_text() == "{}"


def test_write_private_leaves_nothing_when_it_fails(tmp_path: Path) -> None:
    folder = tmp_path / "is-a-dir"
    folder.mkdir()
    (folder / "x").write_text("")
    with pytest.raises(OSError):
        write_private(folder, "data")  # cannot replace a non-empty folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is-a-dir"]


def test_private_dir_creates_and_tightens(tmp_path: Path) -> None:
    fresh = private_dir(tmp_path / "a" / "b")
    assert mode(fresh) == 0o700
    wide = tmp_path / "wide"
    wide.mkdir(mode=0o755)
    os.chmod(wide, 0o755)
    private_dir(wide)
    assert mode(wide) == 0o700


def test_try_lock_is_exclusive_and_released_by_close(tmp_path: Path) -> None:
    path = tmp_path / "server.lock"
    first = try_lock(path)
    assert first is not None and mode(path) == 0o600
    assert try_lock(path) is None
    os.close(first)
    again = try_lock(path)
    assert again is not None
    os.close(again)


def test_try_lock_relocks_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    held = try_lock(path)
    assert held is not None
    path.unlink()  # someone removed the file: the old lock protects nothing any more
    fresh = try_lock(path)
    assert fresh is not None and os.fstat(fresh).st_ino == path.stat().st_ino
    os.close(held)
    os.close(fresh)


def test_open_private_append_creates_and_tightens(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("old\n")
    log.chmod(0o644)
    fd = open_private_append(log)
    try:
        os.write(fd, b"new\n")
    finally:
        os.close(fd)
    assert log.read_text() == "old\nnew\n" and mode(log) == 0o600
    link = tmp_path / "link.log"
    link.symlink_to(log)
    with pytest.raises(OSError):
        open_private_append(link)
