"""Hostile and malformed input to the API and CLI: clear errors, nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.e2e.socle_fixture import SocleServer, write_repo


def test_every_api_call_needs_a_valid_token(server: SocleServer) -> None:
    for token in ("", "wrong", "socle_" + "A" * 43):
        response = server.api("GET", "/api/v1/status", token=token)
        assert response.status_code == 401
        assert "token" in response.json()["message"]
    assert httpx.get(server.url + "/api/v1/status").status_code == 401
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}


def test_token_is_stored_hashed_and_file_is_private(server: SocleServer) -> None:
    token_file = server.home / "admin.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    db = (server.home / "state.db").read_bytes()
    assert server.token.encode() not in db
    for wal in server.home.glob("state.db*"):
        assert server.token.encode() not in wal.read_bytes()


def test_malformed_bodies_are_refused(server: SocleServer, tmp_path: Path) -> None:
    cases = [
        b"{not json",
        b"[]",
        json.dumps({"path": str(tmp_path), "bogus": 1}).encode(),
        json.dumps({"path": 12}).encode(),
        json.dumps({"path": ""}).encode(),
        json.dumps({"path": "x" * 5000}).encode(),
    ]
    for body in cases:
        response = server.api(
            "POST", "/api/v1/plan", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code in (400, 422), (body, response.text)
        assert response.json()["message"]
    bad_rollback = server.api("POST", "/api/v1/rollback", json={"revision": 0})
    assert bad_rollback.status_code == 400
    missing = server.api("POST", "/api/v1/rollback", json={"revision": 99})
    assert missing.status_code == 404 and "socle history" in missing.json()["hint"]


def test_invalid_manifests_change_nothing(server: SocleServer, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {}})
    server.cli("apply", str(repo), "--yes")
    (repo / "broken.yaml").write_text(
        "apiVersion: socle/v1\nkind: App\nmetadata: {name: bad}\nspec:\n  replicas: many\n  run: {command: [x]}\n"
    )
    result = server.cli("apply", str(repo), "--yes", check=False)
    assert result.returncode == 1
    assert "broken.yaml" in result.stderr and "spec.replicas" in result.stderr
    response = server.api("POST", "/api/v1/apply", json={"path": str(repo)})
    assert response.status_code == 422
    problem = response.json()["problems"][0]
    assert problem["file"].endswith("broken.yaml") and problem["line"] == 5
    assert [r["number"] for r in json.loads(server.cli("history", "--json").stdout)] == [1]


def test_missing_path_and_bad_flags(server: SocleServer, tmp_path: Path) -> None:
    result = server.cli("apply", str(tmp_path / "nope"), "--yes", check=False)
    assert result.returncode == 1 and "not a folder" in result.stderr
    assert server.cli("history", "--limit", "0", check=False).returncode == 2
    assert server.cli("rollback", "a b", "--yes", check=False).returncode == 2
    unknown = server.cli("rollback", "abc", "--yes", check=False)  # an environment now
    assert unknown.returncode == 1 and "environment abc" in unknown.stderr
    assert server.cli("logs", "web", "--since", "yesterday", check=False).returncode == 1


def test_apply_without_confirmation_refuses_when_not_interactive(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {}})
    result = server.cli("apply", str(repo), check=False)
    assert result.returncode == 1 and "--yes" in result.stderr
    assert server.status()["apps"] == []


def test_cli_without_server_says_what_to_do(socle_env: dict[str, str], tmp_path: Path) -> None:
    srv = SocleServer(
        home=tmp_path / "empty", env=dict(socle_env, SOCLE_HOME=str(tmp_path / "empty"))
    )
    result = srv.cli("status", check=False)
    assert result.returncode == 1 and "socle up" in result.stderr


def test_second_control_plane_on_the_same_home_is_refused(server: SocleServer) -> None:
    result = server.cli("server", "--listen", "127.0.0.1:0", check=False, timeout=30)
    assert result.returncode == 1
    assert "another Socle control plane is running" in result.stderr
    assert server.status()["apps"] == []


def test_bad_listen_address_is_refused(socle_env: dict[str, str], tmp_path: Path) -> None:
    srv = SocleServer(home=tmp_path / "h2", env=dict(socle_env, SOCLE_HOME=str(tmp_path / "h2")))
    for bad in ("nonsense", "127.0.0.1:99999", ":80"):
        result = srv.cli("server", "--listen", bad, check=False, timeout=30)
        assert result.returncode == 1 and "HOST:PORT" in result.stderr, (bad, result.stderr)


def test_control_characters_in_api_bodies_are_client_errors(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {}})
    for body in (
        {"path": str(repo) + "\x00"},
        {"path": str(repo), "env": "dev\x00"},
        {"path": str(repo), "env": "dev\n"},
        {"path": str(repo), "env": "../../etc"},
    ):
        response = server.api("POST", "/api/v1/plan", json=body)
        assert response.status_code in (400, 422), (body, response.text)
        assert "path" in response.text or "env" in response.text
