"""``kind: ExternalService``: something Socle does not run gets registry entries, DNS names
and Consul catalog entries; with a health check, only addresses that answer are served."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import pytest

from tests.e2e.socle_fixture import SocleServer, wait_for


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port that accepts on 127.0.0.1 only (127.0.0.2 on the same port refuses)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def entries(server: SocleServer, name: str) -> list[dict[str, Any]]:
    listing = server.api("GET", "/api/v1/services").json()
    return [i for s in listing["services"] if s["name"] == name for i in s["instances"]]


def test_external_service_is_registered_checked_resolved_and_removed(
    server: SocleServer, tmp_path: Path, listener: int
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "legacy.yaml").write_text(
        "apiVersion: socle/v1\nkind: ExternalService\n"
        "metadata: {name: legacy-db, labels: {tier: data}}\n"
        "spec:\n"
        "  addresses: [127.0.0.1, 127.0.0.2]\n"
        f"  ports: [{{name: pg, port: {listener}}}]\n"
        "  health: {tcp: {port: pg}, interval: 1s, timeout: 1s}\n"
    )
    plan = server.cli("plan", str(repo), check=False)
    assert plan.returncode == 2 and "ExternalService/legacy-db" in plan.stdout
    server.cli("apply", str(repo), "--yes")

    def settled() -> list[dict[str, Any]] | None:
        rows = entries(server, "legacy-db")
        health = {r["address"]: r["health"] for r in rows}
        return rows if health == {"127.0.0.1": "passing", "127.0.0.2": "critical"} else None

    rows = wait_for(settled, 60, "the reachable address passing, the other critical")
    assert {r["source"] for r in rows} == {"external"}
    assert all(r["ports"] == {"pg": listener} and r["labels"] == {"tier": "data"} for r in rows)
    critical = next(r for r in rows if r["health"] == "critical")
    assert "TCP connect" in critical["output"]

    info = json.loads((server.home / "server.json").read_text())
    dns_host, _, dns_port = info["dns"].rpartition(":")
    dig = subprocess.run(
        ["dig", f"@{dns_host}", "-p", dns_port, "+short", "+time=5",
         "legacy-db.default.socle.internal", "A"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert dig.stdout.split() == ["127.0.0.1"]

    host, _, port = info["consul"].rpartition(":")
    client = consul.Consul(host=host, port=int(port), token=server.token)
    _, passing = client.health.service("legacy-db", passing=True)
    assert [r["Service"]["Address"] for r in passing] == ["127.0.0.1"]
    _, every = client.health.service("legacy-db")
    assert len(every) == 2

    status = {(r["kind"], r["name"]): r for r in server.status()["objects"]}
    row = status[("ExternalService", "legacy-db")]
    assert row["health"] == "degraded" and "1/2" in row["message"]
    shown = server.cli("status")
    assert "legacy-db" in shown.stdout

    # A restart keeps it registered (from the stored target).
    server.stop(keep_apps=True)
    server.start()
    wait_for(settled, 60, "registered again after a restart")

    (repo / "legacy.yaml").unlink()
    server.cli("apply", str(repo), "--yes", "--allow-delete-all")
    wait_for(lambda: entries(server, "legacy-db") == [], 60, "the entries removed")
