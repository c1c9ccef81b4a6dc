"""The service registry as a user sees it: ``socle services`` and ``/api/v1/services``."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.socle_fixture import SocleServer, wait_for, write_repo


def registered(server: SocleServer, name: str = "web") -> list[dict[str, Any]]:
    listing = server.api("GET", "/api/v1/services").json()
    return [i for s in listing["services"] if s["name"] == name for i in s["instances"]]


def test_healthy_instances_are_registered_and_leave_when_they_fail(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {"replicas": 2}})
    server.cli("apply", str(repo), "--yes")
    app = server.app("web")
    wait_for(lambda: len(registered(server)) == 2, 30, "both instances registered")
    entries = registered(server)
    by_id = {i["id"]: i for i in server.app("web")["instances"]}
    for entry in entries:
        live = by_id[entry["instance"]]
        assert entry["ports"] == live["ports"] and entry["address"] == live["address"]
        assert entry["environment"] == "default" and entry["health"] == "passing"
        assert entry["source"] == "runtime"

    # A blocking query returns as soon as something changes: kill an instance.
    index = server.api("GET", "/api/v1/services/web").json()["index"]
    answer: dict[str, Any] = {}

    def block() -> None:
        response = httpx.get(
            server.url + "/api/v1/services/web",
            params={"index": index, "wait": "5m"},
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=600,
        )
        answer.update(response.json())

    thread = threading.Thread(target=block)
    thread.start()
    victim = app["instances"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    thread.join(300)
    assert answer["index"] > index
    # The killed instance left the registry at once (the blocking query saw it go, or saw
    # it come back healthy after its restart with a new pid).
    wait_for(lambda: len(registered(server)) == 2, 60, "the restarted instance registered again")

    table = server.cli("services")
    assert "web" in table.stdout and "passing" in table.stdout
    as_json = json.loads(server.cli("services", "web", "--json").stdout)
    assert {i["instance"] for i in as_json["instances"]} == {e["instance"] for e in entries}

    # Deleting the app deregisters every instance.
    (repo / "apps.yaml").write_text("")
    server.cli("apply", str(repo), "--yes", "--allow-delete-all")
    wait_for(lambda: registered(server) == [], 60, "instances deregistered")
    missing = server.cli("services", "web", check=False)
    assert missing.returncode != 0 and "no registered instance" in missing.stderr


def test_services_need_a_token(server: SocleServer) -> None:
    response = httpx.get(server.url + "/api/v1/services", timeout=10)
    assert response.status_code == 401
    bad = server.api("GET", "/api/v1/services", params={"index": 1, "wait": "soon"})
    assert bad.status_code == 400 and "wait" in bad.json()["message"]


def test_dns_answers_for_applied_apps_and_instances_know_the_resolver(
    server: SocleServer, tmp_path: Path
) -> None:
    import subprocess

    info = json.loads((server.home / "server.json").read_text())
    host, _, port = info["dns"].rpartition(":")
    repo = write_repo(tmp_path / "repo", {"web": {"replicas": 2}})
    server.cli("apply", str(repo), "--yes")
    app = server.app("web")

    def dig(*args: str) -> str:
        out = subprocess.run(
            ["dig", f"@{host}", "-p", port, "+short", "+time=5", *args],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return out.stdout

    wait_for(lambda: len(registered(server)) == 2, 30, "both instances registered")
    assert set(dig("web.default.socle.internal", "A").split()) == {
        i["address"] for i in app["instances"]
    }
    srv = dig("_http._tcp.web.default.socle.internal", "SRV")
    assert sorted(int(line.split()[2]) for line in srv.splitlines()) == sorted(
        i["ports"]["http"] for i in app["instances"]
    )
    environ = Path(f"/proc/{app['instances'][0]['pid']}/environ").read_bytes().split(b"\0")
    # Instances in their own network namespace (as root) ask the DNS server on the gateway.
    reachable = server.status()["control_plane"]["network"]["instances_dns"] or info["dns"]
    assert f"SOCLE_DNS={reachable}".encode() in environ
    assert b"SOCLE_ENVIRONMENT=default" in environ
    assert b"SOCLE_SERVICE=web.default.socle.internal" in environ
    network = server.status()["control_plane"]["network"]
    assert (network["consul"], network["dns"]) == (info["consul"], info["dns"])
    assert set(network["firewall"]) == {
        "enforced",
        "isolated",
        "reason",
        "table",
        "drift_corrections",
    }
    assert network["firewall"]["drift_corrections"] == 0
    assert f"DNS {info['dns']}" in server.cli("status").stdout
