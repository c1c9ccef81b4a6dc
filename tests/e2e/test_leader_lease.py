"""The leader lease with two real control planes on one real PostgreSQL.

Each control plane has its own SOCLE_HOME (its own flock, runtime folder and admin token) and
the same ``SOCLE_STORE``. What must hold:

- the second one refuses to start, naming the leader's pid and address, and changes nothing;
- with ``--standby`` it waits (no API, no ``server.json``), and when the leader is killed
  with ``kill -9`` it takes over and serves the state the leader wrote (its revision);
- a leader whose lease connection is cut stops acting (fences) and exits non-zero, while its
  apps keep running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.socle_fixture import SOCLE, SocleServer, wait_for, write_repo
from tests.support.pg_server import PgServer, running_postgres

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


def _env(base: dict[str, str], home: Path, dsn: str) -> dict[str, str]:
    return dict(base, SOCLE_HOME=str(home), SOCLE_STORE=dsn, SOCLE_LEADER_CHECK_SECONDS="0.2")


@pytest.fixture
def dsn(postgres: PgServer) -> str:
    return postgres.new_database()


@pytest.fixture
def leader(tmp_path: Path, socle_env: dict[str, str], dsn: str) -> Iterator[SocleServer]:
    home = tmp_path / "leader"
    srv = SocleServer(home=home, env=_env(socle_env, home, dsn))
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


def test_a_second_control_plane_refuses_naming_the_leader(
    leader: SocleServer, tmp_path: Path, socle_env: dict[str, str], dsn: str
) -> None:
    home = tmp_path / "second"
    result = subprocess.run(
        [SOCLE, "server", "--listen", "127.0.0.1:0"],
        env=_env(socle_env, home, dsn),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert "another control plane leads" in result.stderr
    assert f"pid {leader.proc.pid if leader.proc else '?'}" in result.stderr
    assert leader.url.removeprefix("http://") in result.stderr
    assert "--standby" in result.stderr  # the hint says how to wait instead
    assert not (home / "server.json").exists()
    assert not (home / "admin.token").exists()  # refused before writing anything
    # The leader was not disturbed, and says it leads.
    shown = leader.status()["control_plane"]["leader"]
    assert leader.proc is not None
    assert shown["role"] == "leader" and shown["pid"] == leader.proc.pid
    assert shown["address"] == leader.url
    assert "leader of its shared store" in leader.cli("status").stdout


def test_a_waiting_standby_stops_cleanly_on_sigterm(
    leader: SocleServer, tmp_path: Path, socle_env: dict[str, str], dsn: str
) -> None:
    home = tmp_path / "standby"
    home.mkdir()
    log = home / "out.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [SOCLE, "server", "--listen", "127.0.0.1:0", "--standby"],
            env=_env(socle_env, home, dsn),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "waiting to take over" in log.read_text(), 60, "standby")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert "Traceback" not in log.read_text()
        assert not (home / "server.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert leader.status()["control_plane"]["leader"]["pid"] == leader.proc.pid  # type: ignore[union-attr]


def test_a_standby_takes_over_when_the_leader_is_killed(
    leader: SocleServer, tmp_path: Path, socle_env: dict[str, str], dsn: str
) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {}})
    leader.cli("apply", str(repo), "--yes")
    assert leader.app("web")["ready"] == 1

    home = tmp_path / "standby"
    standby = SocleServer(home=home, env=_env(socle_env, home, dsn), args=("--standby",))
    try:
        home.mkdir(parents=True)
        with open(standby.log, "ab") as out:
            standby.proc = subprocess.Popen(
                [SOCLE, "server", "--listen", "127.0.0.1:0", "--standby"],
                env=standby.env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for(lambda: "waiting to take over" in standby.log.read_text(), 60, "standby")
        assert standby.proc.poll() is None
        assert not (home / "server.json").exists()  # a standby does not serve

        leader.kill9()

        def serving() -> bool:
            assert standby.proc is not None
            if standby.proc.poll() is not None:
                raise AssertionError(f"standby exited:\n{standby.log.read_text()[-3000:]}")
            standby.url = json.loads((home / "server.json").read_text())["url"]
            return httpx.get(standby.url + "/healthz", timeout=1).status_code == 200

        wait_for(serving, 120, "the standby to take over")
        standby.token = (home / "admin.token").read_text().strip()
        status = standby.status()
        assert status["control_plane"]["leader"] is not None
        # It serves the state the dead leader wrote, and converges it with its own runtime.
        history = standby.api("GET", "/api/v1/revisions").json()
        assert [r["number"] for r in history] == [1]
        wait_for(lambda: standby.app("web")["ready"] == 1, 120, "web to run on the new leader")
    finally:
        standby.cleanup()


def test_a_leader_that_loses_its_lease_stops_acting(
    leader: SocleServer, tmp_path: Path, postgres: PgServer, dsn: str
) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {}})
    leader.cli("apply", str(repo), "--yes")
    app_pids = [i["pid"] for i in leader.app("web")["instances"]]
    assert app_pids and all(app_pids)

    dbname = dsn.rsplit("/", 1)[1]
    postgres.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = 'socle-leader' AND datname = '{dbname}'"
    )
    assert leader.proc is not None
    code = leader.proc.wait(60)
    assert code != 0
    log = leader.log.read_text()
    assert "lost the leader lease" in log
    # Fenced, not crashed: apps of this host keep running (another leader will adopt them).
    for pid in app_pids:
        os.kill(pid, 0)  # raises if the app is gone; the fixture's cleanup kills it
