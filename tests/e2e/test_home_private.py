"""A real server started on a home left loose by an older version makes it owner-only,
and everything it creates afterwards (WAL/SHM, logs, releases, build logs) is private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.e2e.socle_fixture import SocleServer, write_repo


def test_server_tightens_an_existing_home(tmp_path: Path, socle_env: dict[str, str]) -> None:
    home = tmp_path / "home"
    old = os.umask(0o022)
    try:
        (home / "releases" / "web").mkdir(parents=True)
        (home / "releases" / "web" / "stale.py").write_text("x\n")
        (home / "server.log").write_text("old log\n")
        home.chmod(0o755)
    finally:
        os.umask(old)
    server = SocleServer(home=home, env=dict(socle_env, SOCLE_HOME=str(home)))
    try:
        server.start()
        repo = write_repo(tmp_path / "repo", {"web": {"build": [{"command": ["true"]}]}})
        server.cli("apply", str(repo), "--yes")
        # Readable by others on purpose, behind owner-only folders: releases (an app's uid
        # reads its sealed code through a read-only bind) and the sandbox's copy of the
        # host's public /etc files (run/etc). Build logs and everything else are private.
        public = (home / "releases", home / "run" / "etc")
        for folder in (home, home / "releases", home / "run"):
            assert stat.S_IMODE(folder.lstat().st_mode) == 0o700, folder
        logs = list(home.glob("releases/*/*.build.log"))
        assert logs and all(stat.S_IMODE(p.lstat().st_mode) == 0o600 for p in logs)
        loose = [
            (str(p), oct(stat.S_IMODE(p.lstat().st_mode)))
            for p in [home, *home.rglob("*")]
            if not p.is_symlink()
            and not any(folder == p or folder in p.parents for folder in public)
            and p.lstat().st_uid == os.geteuid()
            and stat.S_IMODE(p.lstat().st_mode) & 0o077
        ]
        assert loose == [], loose[:5]
        assert (home / "state.db-wal").exists()
    finally:
        server.cleanup()
