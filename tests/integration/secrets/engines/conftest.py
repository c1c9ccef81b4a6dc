"""A real PostgreSQL 15 for the database engine tests, shared by the whole directory.

``initdb`` and ``pg_ctl`` run as the ``postgres`` user in a private temporary directory,
listening on 127.0.0.1 at a free port with password (SCRAM) authentication for TCP. The
server is stopped at teardown with ``pg_ctl stop`` and, if that fails, killed by the PID
in its ``postmaster.pid``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.support.ports import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ROOT_USER = "socle_root"
ROOT_PASSWORD = "Root-Pw-4-Tests"


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    root_user: str
    root_password: str

    @property
    def url_template(self) -> str:
        return f"postgresql://{{{{username}}}}:{{{{password}}}}@{self.host}:{self.port}/postgres"

    def connect(self, user: str | None = None, password: str | None = None) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=user or self.root_user,
            password=password if password is not None else self.root_password,
            dbname="postgres",
            connect_timeout=5,
            autocommit=True,
        )

    def role_exists(self, name: str) -> bool:
        with self.connect() as conn:
            return (
                conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
                is not None
            )


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    if os.geteuid() != 0 or not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("needs root, runuser and PostgreSQL 15 binaries")
    account = pwd.getpwnam("postgres")
    base = Path(tempfile.mkdtemp(prefix="socle-pg-"))
    os.chown(base, account.pw_uid, account.pw_gid)
    base.chmod(0o700)
    data = base / "data"
    pwfile = base / "pw"
    pwfile.write_text(ROOT_PASSWORD + "\n")
    os.chown(pwfile, account.pw_uid, account.pw_gid)
    port = free_port()
    pid: int | None = None
    try:
        subprocess.run(
            _as_postgres(
                str(PG_BIN / "initdb"),
                "-D", str(data),
                "-U", ROOT_USER,
                "--pwfile", str(pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E", "UTF8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {base} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            _as_postgres(
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(base / "log"),
                "-w",
                "-o",
                options,
                "start",
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        yield PgServer("127.0.0.1", port, ROOT_USER, ROOT_PASSWORD)
    finally:
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"),
            capture_output=True,
            timeout=30,
            check=False,
        )
        if pid is not None:
            _kill_if_alive(pid)
        shutil.rmtree(base, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has already exited


def _kill_if_alive(pid: int) -> None:
    for _ in range(50):
        if not _alive(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
