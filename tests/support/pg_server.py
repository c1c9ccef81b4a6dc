"""A real, throw-away PostgreSQL server for tests.

The conformance suite runs the same tests on SQLite and PostgreSQL, and a PostgreSQL test is
only worth something against a real server, so this helper starts one: ``initdb`` and
``pg_ctl`` from the Debian packages, run as the ``postgres`` user (the server refuses to run
as root), in a fresh temporary folder, listening only on a free ``127.0.0.1`` port and on a
Unix socket inside that folder. Password authentication is on for TCP, so the DSN carries a
real secret and the tests can check that it never shows up in errors.

The server is started once per test session (fixture ``pg_server``) and each test gets its
own fresh database (:meth:`PgServer.new_database`), which is much faster than a server per
test. At teardown the server is stopped with ``pg_ctl stop`` and, if that fails, killed by
the PID from its own ``postmaster.pid``; the folder is then removed. Without root or without
the binaries the fixture skips, saying which one is missing. ``SOCLE_TEST_PG_BIN`` points at
another PostgreSQL ``bin`` folder (default: Debian's PostgreSQL 15).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.ports import free_port

PG_BIN = Path(os.environ.get("SOCLE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
START_TIMEOUT_S = 30


def skip_reason() -> str | None:
    """Why a local PostgreSQL cannot be started here, or None if it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "PostgreSQL tests start a server as user postgres and need root"
    needed = ("initdb", "pg_ctl", "postgres", "psql")
    missing = [name for name in needed if not (PG_BIN / name).exists()]
    if missing:
        return f"PostgreSQL binaries missing in {PG_BIN}: {', '.join(missing)}"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no {PG_USER!r} user to run the PostgreSQL server as"
    return None


@dataclass
class PgServer:
    """One running server; ``dsn`` reaches its ``postgres`` database as superuser over TCP."""

    root: Path
    port: int
    password: str
    _db_counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def dsn(self, dbname: str = "postgres", *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{PG_USER}:{secret}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """Create an empty database and return its DSN, so tests never see each other's keys."""
        name = f"socle_test_{next(self._db_counter)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def psql(self, sql: str, *, dbname: str = "postgres") -> str:
        """Run SQL over the Unix socket with ``psql`` (no Python driver involved)."""
        result = _run_as_postgres(
            [
                str(PG_BIN / "psql"),
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                PG_USER,
                "-d",
                dbname,
                "-c",
                sql,
            ]
        )
        return result.stdout

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


def _run_as_postgres(
    args: list[str], *, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args,
        user=PG_USER,
        group=pwd.getpwnam(PG_USER).pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{Path(args[0]).name} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result


def _init(root: Path, password: str) -> None:
    pw_file = root / "pwfile"
    pw_file.write_text(password + "\n")
    uid = pwd.getpwnam(PG_USER)
    os.chown(pw_file, uid.pw_uid, uid.pw_gid)
    pw_file.chmod(0o600)
    _run_as_postgres(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            PG_USER,
            "--pwfile",
            str(pw_file),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
    )
    pw_file.unlink()


def _start(server: PgServer) -> bool:
    """Start the server; False if the port was taken in the meantime."""
    options = " ".join(
        [
            "-c listen_addresses=127.0.0.1",
            f"-p {server.port}",
            f"-k {server.socket_dir}",
            # Test data is thrown away: skip the durability work to keep the suite fast.
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ]
    )
    result = _run_as_postgres(
        [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(server.data_dir),
            "-l",
            str(server.log_file),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        ],
        check=False,
        timeout=START_TIMEOUT_S + 10,
    )
    if result.returncode == 0:
        return True
    log = server.log_file.read_text(errors="replace") if server.log_file.exists() else ""
    if "could not bind" in log or "Address already in use" in log:
        return False
    raise RuntimeError(f"pg_ctl start failed:\n{result.stdout}{result.stderr}\n{log}")


def _stop(server: PgServer) -> None:
    """``pg_ctl stop``; if the server does not go, kill it by the PID it wrote down."""
    pid = server.postmaster_pid()
    result = _run_as_postgres(
        [str(PG_BIN / "pg_ctl"), "-D", str(server.data_dir), "-m", "fast", "-w", "stop"],
        check=False,
        timeout=30,
    )
    if result.returncode == 0 or pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown, children follow the postmaster
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_postgres() -> Iterator[PgServer]:
    """Start a server in a temporary folder, yield it, stop it and remove the folder."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    # Not under pytest's tmp_path: its parents are 0700 root and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="socle-pg-"))
    started: PgServer | None = None
    try:
        uid = pwd.getpwnam(PG_USER)
        os.chown(root, uid.pw_uid, uid.pw_gid)
        password = secrets.token_urlsafe(18)
        _init(root, password)
        (root / "sock").mkdir()
        os.chown(root / "sock", uid.pw_uid, uid.pw_gid)
        for _attempt in range(5):
            candidate = PgServer(root=root, port=free_port(), password=password)
            if _start(candidate):
                started = candidate
                break
        else:
            raise RuntimeError("could not find a free port for PostgreSQL after 5 tries")
        yield started
    finally:
        if started is not None:
            _stop(started)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole session, started only if a test asks for it."""
    with running_postgres() as server:
        yield server
