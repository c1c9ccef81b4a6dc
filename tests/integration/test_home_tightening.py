"""An existing home with loose modes is made owner-only; links and app-owned files are
left alone; the SQLite WAL/SHM of a live store are private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from socle.fs import tighten
from socle.state.sqlite import SqliteStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _loose_home(home: Path) -> None:
    old = os.umask(0o022)
    try:
        for folder in ("releases/web/r1/bin", "logs/web", "run", "audit"):
            (home / folder).mkdir(parents=True, exist_ok=True)
        (home / "server.log").write_text("log\n")
        (home / "admin.token").write_text("socle_x\n")
        (home / "logs/web/web-0.log").write_text("line\n")
        (home / "releases/web/r1/app.py").write_text("print()\n")
        tool = home / "releases/web/r1/bin/tool"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    finally:
        os.umask(old)
    for path in [home, *home.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else (_mode(path) | 0o044))


async def test_a_loose_home_is_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _loose_home(home)
    old = os.umask(0o022)
    try:
        store = await SqliteStore.open(home / "state.db")
        await store.put("k", b"v" * 10_000)
    finally:
        os.umask(old)
    try:
        wal, shm = home / "state.db-wal", home / "state.db-shm"
        assert wal.exists() and shm.exists()
        for path in (home / "state.db", wal, shm):
            assert _mode(path) == 0o600, path  # private from the start, whatever the umask
        for path in (wal, shm):
            path.chmod(0o644)  # as an older version left them

        outside = tmp_path / "outside.conf"
        outside.write_text("x")
        outside.chmod(0o644)
        (home / "run" / "link").symlink_to(outside)

        done = tighten(home)
        assert done.files >= 5 and done.folders >= 6
        releases = home / "releases"
        for path in [home, *home.rglob("*")]:
            if path.is_symlink() or releases in path.parents:
                continue
            assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))
            if path.is_dir():
                assert _mode(path) == 0o700, path
        # releases/ keeps everyone else out; what is inside is sealed as it is (the app's
        # uid reads its code through a read-only bind, and the modes are part of the seal)
        assert _mode(releases) == 0o700
        assert _mode(home / "releases/web/r1/bin/tool") == 0o755
        assert _mode(home / "state.db-wal") == 0o600
        assert _mode(outside) == 0o644  # the link was not followed
        assert tighten(home).files == 0  # idempotent
        assert await store.get("k") is not None  # the live store still works
    finally:
        await store.close()


def test_files_of_another_owner_or_group_keep_that_owner_or_group(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        return
    home = tmp_path / "home"
    volume = home / "volumes" / "data"
    volume.mkdir(parents=True)
    (volume / "db.sqlite").write_text("app data")
    for path in (volume, volume / "db.sqlite"):
        os.chown(path, 4242, 4242)
    volume.chmod(0o750)
    shared = home / "releases" / "web"
    shared.mkdir(parents=True)
    (shared / "app.py").write_text("print()\n")
    os.chown(shared, 0, 4242)
    os.chown(shared / "app.py", 0, 4242)
    shared.chmod(0o755)
    (shared / "app.py").chmod(0o644)
    tighten(home)
    assert _mode(volume) == 0o750
    assert _mode(home / "volumes") == 0o700
    assert _mode(home / "releases") == 0o700
    assert _mode(shared) == 0o755 and _mode(shared / "app.py") == 0o644  # not walked
