"""The Consul-compatible API read and written by the real ``py-consul`` client."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import consul
import httpx
import pytest

from tests.e2e.socle_fixture import SocleServer, wait_for, write_repo


def consul_address(server: SocleServer) -> tuple[str, int]:
    info = json.loads((server.home / "server.json").read_text())
    host, _, port = info["consul"].rpartition(":")
    return host, int(port)


@pytest.fixture
def client(server: SocleServer) -> consul.Consul:
    host, port = consul_address(server)
    return consul.Consul(host=host, port=port, token=server.token)


def test_catalog_and_health_list_a_running_app(
    server: SocleServer, client: consul.Consul, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {"replicas": 2}})
    server.cli("apply", str(repo), "--yes")
    app = server.app("web")

    def passing() -> list[dict[str, Any]]:
        _, rows = client.health.service("web", passing=True)
        return list(rows)

    rows = wait_for(lambda: len(passing()) == 2 and passing(), 30, "2 passing entries")
    ports = {i["ports"]["http"] for i in app["instances"]}
    assert {r["Service"]["Port"] for r in rows} == ports
    for row in rows:
        assert row["Service"]["Service"] == "web"
        assert "env=default" in row["Service"]["Tags"]
        assert {c["Status"] for c in row["Checks"]} == {"passing"}
        assert row["Node"]["Datacenter"] == "dc1"
    index, services = client.catalog.services()
    assert "web" in services and "port=http" in services["web"]
    _, catalog = client.catalog.service("web")
    assert {c["ServicePort"] for c in catalog} == ports
    assert {c["ServiceAddress"] for c in catalog} == {i["address"] for i in app["instances"]}

    # A blocking query on the catalog wakes up on a change (an agent registration).
    answer: dict[str, Any] = {}

    def block() -> None:
        answer["index"], answer["services"] = client.catalog.services(index=index, wait="5m")

    thread = threading.Thread(target=block)
    thread.start()
    client.agent.service.register(
        "legacy-db", service_id="legacy-db-1", address="127.0.0.9", port=5432, tags=["primary"]
    )
    thread.join(300)
    assert int(answer["index"]) > int(index) and "legacy-db" in answer["services"]
    _, rows = client.health.service("legacy-db", passing=True)
    assert [(r["Service"]["ID"], r["Service"]["Address"], r["Service"]["Port"]) for r in rows] == [
        ("legacy-db-1", "127.0.0.9", 5432)
    ]
    assert "primary" in rows[0]["Service"]["Tags"]
    # Agent registrations survive a restart of the control plane (kept in the state store).
    server.stop(keep_apps=True)
    server.start()
    host, port = consul_address(server)
    again = consul.Consul(host=host, port=port, token=server.token)
    _, rows = again.health.service("legacy-db")
    assert [r["Service"]["ID"] for r in rows] == ["legacy-db-1"]
    again.agent.service.deregister("legacy-db-1")
    _, rows = again.health.service("legacy-db")
    assert rows == []


def test_kv_round_trip_cas_recurse_keys_and_raw(server: SocleServer, client: consul.Consul) -> None:
    assert client.kv.put("app/config/db", "postgres://db:5432/app") is True
    assert client.kv.put("app/config/cache", b"\x00\x01binary", flags=42) is True
    assert client.kv.put("app/other", "x") is True
    index, entry = client.kv.get("app/config/db")
    assert entry["Value"] == b"postgres://db:5432/app" and entry["Flags"] == 0
    assert int(index) == entry["ModifyIndex"]
    _, cache = client.kv.get("app/config/cache")
    assert cache["Value"] == b"\x00\x01binary" and cache["Flags"] == 42

    # Check-and-set: the stale index loses, the current one wins, cas=0 only creates.
    modify = entry["ModifyIndex"]
    assert client.kv.put("app/config/db", "v2", cas=modify) is True
    assert client.kv.put("app/config/db", "v3", cas=modify) is False
    assert client.kv.get("app/config/db")[1]["Value"] == b"v2"
    assert client.kv.put("app/config/db", "v4", cas=0) is False
    assert client.kv.put("app/new", "n", cas=0) is True

    _, rows = client.kv.get("app/config/", recurse=True)
    assert [r["Key"] for r in rows] == ["app/config/cache", "app/config/db"]
    _, keys = client.kv.get("app/", keys=True, separator="/")
    assert keys == ["app/config/", "app/new", "app/other"]
    assert client.kv.get("missing/key")[1] is None

    host, port = consul_address(server)
    base = f"http://{host}:{port}"
    raw = httpx.get(f"{base}/v1/kv/app/config/db?raw", headers={"X-Consul-Token": server.token})
    assert raw.status_code == 200 and raw.content == b"v2" and "X-Consul-Index" in raw.headers
    listing = httpx.get(
        f"{base}/v1/kv/app/config/db", headers={"Authorization": f"Bearer {server.token}"}
    ).json()
    assert base64.b64decode(listing[0]["Value"]) == b"v2"

    # A blocking read of one key returns when it changes.
    index, _ = client.kv.get("app/other")
    seen: dict[str, Any] = {}

    def block() -> None:
        seen["index"], seen["entry"] = client.kv.get("app/other", index=index, wait="5m")

    thread = threading.Thread(target=block)
    thread.start()
    client.kv.put("app/other", "changed")
    thread.join(300)
    assert seen["entry"]["Value"] == b"changed" and int(seen["index"]) > int(index)

    assert client.kv.delete("app/config", recurse=True) is True
    assert client.kv.get("app/config/", recurse=True)[1] is None
    assert client.kv.get("app/other")[1] is not None


def test_no_token_no_access_and_bad_input_is_refused(server: SocleServer) -> None:
    host, port = consul_address(server)
    base = f"http://{host}:{port}"
    for method, path in [
        ("GET", "/v1/catalog/services"),
        ("GET", "/v1/kv/x"),
        ("PUT", "/v1/kv/x"),
        ("PUT", "/v1/agent/service/register"),
    ]:
        assert httpx.request(method, base + path).status_code == 403
        bad = httpx.request(method, base + path, headers={"X-Consul-Token": "nope"})
        assert bad.status_code == 403
    auth = {"X-Consul-Token": server.token}
    assert httpx.put(f"{base}/v1/kv/x", params={"cas": "abc"}, headers=auth).status_code == 400
    wait = httpx.get(
        f"{base}/v1/catalog/services", params={"index": 1, "wait": "soon"}, headers=auth
    )
    assert wait.status_code == 400
    huge = httpx.put(f"{base}/v1/kv/big", content=b"x" * (600 * 1024), headers=auth)
    assert huge.status_code == 413
    assert httpx.get(f"{base}/v1/kv/big", headers=auth).status_code == 404
    for body in [
        b"not json",
        b"[]",
        json.dumps({"Name": "bad name!"}).encode(),
        json.dumps({"Name": "ok", "Port": 99999}).encode(),
    ]:
        response = httpx.put(f"{base}/v1/agent/service/register", content=body, headers=auth)
        assert response.status_code == 400, body
    assert httpx.get(f"{base}/v1/catalog/services", headers=auth).json() == {}


def test_agent_service_with_an_http_check_follows_it(
    server: SocleServer, client: consul.Consul, tmp_path: Path
) -> None:
    import http.server

    healthy = {"ok": True}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if healthy["ok"] else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        port = int(web.server_address[1])
        check = consul.Check.http(f"http://127.0.0.1:{port}/health", interval="1s", timeout="1s")
        client.agent.service.register(
            "legacy-web", service_id="legacy-web-1", port=port, check=check
        )

        def passing() -> int:
            return len(client.health.service("legacy-web", passing=True)[1])

        wait_for(lambda: passing() == 1, 60, "the checked service passing")
        healthy["ok"] = False
        wait_for(lambda: passing() == 0, 60, "the failing check to take it out")
        _, rows = client.health.service("legacy-web")
        service_check = rows[0]["Checks"][1]
        assert service_check["Status"] == "critical" and "500" in service_check["Output"]
        healthy["ok"] = True
        wait_for(lambda: passing() == 1, 60, "passing again")
        client.agent.service.deregister("legacy-web-1")
    finally:
        web.shutdown()
        web.server_close()
