"""Consistent copies of the state store, and putting them back.

SQLite: the online backup API (:meth:`sqlite3.Connection.backup`) copies pages under
SQLite's own locking, so a control plane may keep writing; copying the file of a live WAL
database would miss (or half-take) what sits in ``-wal``. PostgreSQL: ``pg_dump
--format=custom`` (one snapshot transaction) and ``pg_restore``. The store holds the
secrets engine's data as ciphertext only, so both copies do too.

Passwords never reach a command line (other users can read ``/proc/*/cmdline``): the DSN is
passed without its password, and the password through ``PGPASSWORD``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from socle.errors import BackupError

PG_TIMEOUT = 3600.0


def sqlite_snapshot(db: Path, dest: Path) -> None:
    """Copy the live SQLite database ``db`` into a new file ``dest`` (0600)."""
    if not db.is_file():
        raise BackupError(
            f"no state store at {db}",
            hint="is SOCLE_HOME right? A home that never ran `socle server` has nothing to back up",
        )
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.close(fd)
    try:
        source = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(dest)
            try:
                source.backup(target)
                # One file: switch the copy out of WAL so no -wal is needed next to it.
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up the state store {db}: {exc}") from exc


def check_sqlite(path: Path) -> None:
    """Refuse a state file that SQLite does not find intact."""
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()
            conn.execute("SELECT count(*) FROM kv").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the state store in the backup is not usable: {exc}") from exc
    if not result or result[0] != "ok":
        raise BackupError(f"the state store in the backup is damaged: {result}")


def _pg_argv_env(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN without its password, and an environment carrying the password."""
    parts = urlsplit(dsn)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = parts.password
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = (parts.username or "") + "@" + host + (f":{parts.port}" if parts.port else "")
        dsn = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    if dsn.startswith("postgres://"):
        dsn = "postgresql://" + dsn.removeprefix("postgres://")
    return dsn, env


def _pg_tool(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise BackupError(
            f"{tool} is not installed",
            hint="install the PostgreSQL client tools (Debian package postgresql-client)",
        )
    return found


def _run_pg(argv: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=PG_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        password = env.get("PGPASSWORD")
        output = done.stderr.strip()[-800:]
        if password:
            output = output.replace(password, "***")
        raise BackupError(
            f"{what} failed (exit {done.returncode}): {output}",
            hint="check that the database is reachable with SOCLE_STORE's address and user",
        )


def pg_dump(dsn: str, dest: Path) -> None:
    """``pg_dump --format=custom`` of the database ``dsn`` names into ``dest`` (0600)."""
    url, env = _pg_argv_env(dsn)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.close(fd)
    _run_pg(
        [
            _pg_tool("pg_dump"),
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            "--file",
            str(dest),
            "--dbname",
            url,
        ],
        env,
        "pg_dump",
    )


def pg_restore(dsn: str, dump: Path) -> None:
    """Restore a custom-format dump into ``dsn``, replacing the objects it holds."""
    url, env = _pg_argv_env(dsn)
    _run_pg(
        [
            _pg_tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            "--dbname",
            url,
            str(dump),
        ],
        env,
        "pg_restore",
    )


def pg_check_dump(dump: Path) -> None:
    """Refuse a dump that ``pg_restore --list`` cannot read."""
    _run_pg([_pg_tool("pg_restore"), "--list", str(dump)], dict(os.environ), "pg_restore --list")


__all__ = ["check_sqlite", "pg_check_dump", "pg_dump", "pg_restore", "sqlite_snapshot"]
