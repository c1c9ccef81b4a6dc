"""Sealing a release: modes, ownership and the digest that proves it unchanged."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from socle.engine.releases._digest import MARKER_NAME, SealCache, seal_tree, sealed_digest
from socle.errors import BuildError


def tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "main.py").write_text("print('hi')\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o775)
    (root / "pkg" / "data.txt").write_text("x")
    (root / "pkg" / "data.txt").chmod(0o666)
    (root / "link").symlink_to("main.py")
    return root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_seal_sets_read_only_modes_keeping_exec_bits(tmp_path: Path) -> None:
    root = tree(tmp_path / "rel")
    seal_tree(root, owner=None)
    assert mode(root) == 0o755 and mode(root / "pkg") == 0o755
    assert mode(root / "main.py") == 0o644 and mode(root / "pkg" / "data.txt") == 0o644
    assert mode(root / "run.sh") == 0o755
    assert (root / "link").is_symlink()


def test_seal_removes_fifos(tmp_path: Path) -> None:
    root = tree(tmp_path / "rel")
    os.mkfifo(root / "pipe")
    seal_tree(root, owner=None)
    assert not (root / "pipe").exists()


def test_digest_sees_content_mode_new_files_and_links_not_the_marker(tmp_path: Path) -> None:
    root = tree(tmp_path / "rel")
    seal_tree(root, owner=None)
    cache: SealCache = {}
    first = sealed_digest(root, cache)
    assert sealed_digest(root, cache) == first == sealed_digest(root)
    (root / MARKER_NAME).write_text("{}")
    assert sealed_digest(root, cache) == first, "the marker is not part of the seal"

    (root / "main.py").write_text("print('owned')\n")
    assert sealed_digest(root, cache) != first
    (root / "main.py").write_text("print('hi')\n")
    assert sealed_digest(root, cache) == first

    (root / "main.py").chmod(0o755)
    assert sealed_digest(root, cache) != first
    (root / "main.py").chmod(0o644)

    (root / "pkg" / "extra.py").write_text("")
    assert sealed_digest(root, cache) != first
    (root / "pkg" / "extra.py").unlink()

    (root / "link").unlink()
    (root / "link").symlink_to("/etc/passwd")
    assert sealed_digest(root, cache) != first


def test_same_size_rewrite_with_restored_mtime_is_seen(tmp_path: Path) -> None:
    root = tree(tmp_path / "rel")
    cache: SealCache = {}
    first = sealed_digest(root, cache)
    target = root / "main.py"
    before = target.stat()
    target.write_text("print('ho')\n")  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert sealed_digest(root, cache) != first


def test_seal_refuses_a_huge_sparse_file(tmp_path: Path) -> None:
    """A build step's ``truncate -s 1T``: free for it, a terabyte to read for the control
    plane's digest (and to write into every backup)."""
    root = tree(tmp_path / "rel")
    with open(root / "pkg" / "huge.bin", "wb") as handle:
        handle.truncate(1 << 40)
    with pytest.raises(BuildError, match=r"sparse file 'pkg/huge.bin'"):
        seal_tree(root, owner=None)


def test_seal_keeps_small_holes(tmp_path: Path) -> None:
    root = tree(tmp_path / "rel")
    with open(root / "db.bin", "wb") as handle:
        handle.truncate(1 << 20)  # a preallocated file of a few holes is fine
    seal_tree(root, owner=None)
    assert mode(root / "db.bin") == 0o644
