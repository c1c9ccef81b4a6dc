"""Server faults as a client and an operator see them, on a real control plane.

The fault is real: the PostgreSQL table behind the state store is renamed under a running
control plane, so every store call fails inside the server. Then

- an API call that needs the store answers 503 (a server-side fault, never 400) with
  ``{"error", "message", "request_id"}``, the same id in ``X-Request-Id`` (the client's own
  if well-formed, a fresh one otherwise) and in the server log;
- an apply whose background task fails (its build outlives the table) shows up in
  ``/api/v1/status`` and in ``socle status`` under the control plane's background-task
  failures, and in the server log with its traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.socle_fixture import SocleServer, wait_for, write_repo
from tests.support.pg_server import PgServer, running_postgres

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_plane(
    tmp_path: Path, socle_env: dict[str, str], postgres: PgServer
) -> Iterator[tuple[SocleServer, PgServer, str]]:
    dsn = postgres.new_database()
    home = tmp_path / "home"
    srv = SocleServer(home=home, env=dict(socle_env, SOCLE_HOME=str(home), SOCLE_STORE=dsn))
    srv.start()
    try:
        yield srv, postgres, dsn.rsplit("/", 1)[1]
    finally:
        srv.cleanup()


def test_store_fault_is_a_5xx_with_a_request_id(
    pg_plane: tuple[SocleServer, PgServer, str],
) -> None:
    srv, postgres, dbname = pg_plane
    ok = srv.api("GET", "/api/v1/revisions")
    assert ok.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", ok.headers["x-request-id"])
    denied = srv.api("GET", "/api/v1/revisions", token="", headers={"X-Request-Id": "cli-42"})
    assert denied.status_code == 401 and denied.headers["x-request-id"] == "cli-42"

    postgres.psql("ALTER TABLE socle_kv RENAME TO socle_kv_gone", dbname=dbname)
    try:
        mine = srv.api("GET", "/api/v1/revisions", headers={"X-Request-Id": "trace-7.a_b"})
        assert mine.status_code == 503
        body = mine.json()
        assert body["error"] == "StoreError"
        assert body["request_id"] == "trace-7.a_b" == mine.headers["x-request-id"]
        assert "password" not in mine.text and postgres.password not in mine.text

        odd = srv.api("GET", "/api/v1/revisions", headers={"X-Request-Id": "not ok; drop"})
        assert odd.status_code == 503
        fresh = odd.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", fresh) and odd.json()["request_id"] == fresh
        wait_for(lambda: "trace-7.a_b" in srv.log.read_text(), 10, "request id in the log")
        assert fresh in srv.log.read_text()

        shown = srv.cli("history", check=False)
        assert shown.returncode != 0
        rid = re.search(r"request id ([0-9a-f]{32})", shown.stderr)
        assert rid is not None, shown.stderr
        assert rid.group(1) in srv.log.read_text()
    finally:
        postgres.psql("ALTER TABLE socle_kv_gone RENAME TO socle_kv", dbname=dbname)
    assert srv.api("GET", "/api/v1/revisions").status_code == 200


def test_failed_background_task_shows_in_status(
    pg_plane: tuple[SocleServer, PgServer, str], tmp_path: Path
) -> None:
    srv, postgres, dbname = pg_plane
    before = srv.status()["control_plane"]
    assert before["tasks"]["failures"] == 0 and before["tasks"]["last_failure"] is None
    assert [c["state"] for c in before["components"]] == ["running"] * len(before["components"])
    names = [c["name"] for c in before["components"]]
    assert names == [
        "audit", "store", "leader-lease", "secrets", "runtime", "logs", "traces", "volumes",
        "network", "otlp", "firewall", "engine", "volume-backups", "ingress", "consul", "observe",
        "log-alerts", "gitops", "api", "alertmanager", "prometheus",
    ]  # fmt: skip

    # The build outlives the table: the apply's background task cannot record its outcome.
    # Its step waits for a file that the test writes only once the table is gone.
    wait_go = "while [ ! -e go ]; do sleep 0.1; done"
    repo = write_repo(tmp_path / "repo", {"web": {"build": [{"command": ["sh", "-c", wait_go]}]}})
    srv.cli("apply", str(repo), "--yes", "--no-wait")
    postgres.psql("ALTER TABLE socle_kv RENAME TO socle_kv_gone", dbname=dbname)
    try:

        def failed() -> dict[str, object] | None:
            for folder in [srv.home / "releases", *(srv.home / "releases").rglob("*")]:
                if folder.is_dir() and not (folder / "go").exists():
                    (folder / "go").touch()
            last: dict[str, object] | None = srv.status()["control_plane"]["tasks"]["last_failure"]
            return last

        last = wait_for(failed, 60, "the apply task to fail")
        assert last["task"] == "engine/apply:1"
        assert "StoreError" in str(last["error"])
        shown = srv.cli("status").stdout
        assert "background task failures" in shown and "engine/apply:1" in shown
        assert "Traceback" in srv.log.read_text()
    finally:
        postgres.psql("ALTER TABLE socle_kv_gone RENAME TO socle_kv", dbname=dbname)
