"""Named API tokens through the CLI: create, use, list, rotate, revoke, recover locally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.socle_fixture import SocleServer, wait_for, write_repo


def _tokens(server: SocleServer) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(server.cli("token", "list", "--json").stdout)
    return data


def _with_token(server: SocleServer, token: str) -> SocleServer:
    return SocleServer(
        home=server.home, env=dict(server.env, SOCLE_TOKEN=token), url=server.url, token=token
    )


def test_token_lifecycle(server: SocleServer, tmp_path: Path) -> None:
    created = server.cli("token", "create", "ci", "--ttl", "1h")
    token = created.stdout.strip()
    assert token.startswith("socle_") and "shown only now" in created.stderr
    ci = _with_token(server, token)

    # The who of a revision is the token's name; a client header cannot change it.
    repo = write_repo(tmp_path / "repo", {"web": {}})
    response = ci.api(
        "POST", "/api/v1/apply", json={"path": str(repo)}, headers={"X-Socle-User": "mallory"}
    )
    assert response.status_code == 200, response.text
    number = response.json()["revision"]["number"]
    assert server.api("GET", f"/api/v1/revisions/{number}").json()["who"] == "ci"
    assert "mallory" not in server.cli("history").stdout

    listed = server.cli("token", "list")
    assert "ci" in listed.stdout and "admin" in listed.stdout
    assert token not in listed.stdout and server.token not in listed.stdout
    entries = {e["name"]: e for e in _tokens(server)}
    assert entries["ci"]["expires"] is not None and entries["ci"]["admin"] is False
    assert entries["ci"]["last_used"] is not None
    assert (server.home / "state.db").read_bytes().find(token.encode()) == -1

    # A token without the admin right cannot manage tokens.
    refused = ci.cli("token", "create", "other", check=False)
    assert refused.returncode == 1 and "may not manage tokens" in refused.stderr
    duplicate = server.cli("token", "create", "ci", check=False)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    bad = server.cli("token", "create", "Bad\nName", check=False)
    assert bad.returncode == 1 and "invalid token name" in bad.stderr

    server.cli("token", "revoke", "ci")
    assert ci.api("GET", "/api/v1/status").status_code == 401
    assert "ci" not in {e["name"] for e in _tokens(server)}
    missing = server.cli("token", "revoke", "ci", check=False)
    assert missing.returncode == 1 and "no token named" in missing.stderr


def test_admin_rotation_and_last_admin(server: SocleServer) -> None:
    refused = server.cli("token", "revoke", "admin", check=False)
    assert refused.returncode == 1 and "last token that can manage tokens" in refused.stderr
    assert "--local" in refused.stderr

    old = server.token
    rotated = server.cli("token", "rotate", "admin")
    assert "admin.token" in rotated.stdout
    new = (server.home / "admin.token").read_text().strip()
    assert new != old and new not in rotated.stdout
    assert (server.home / "admin.token").stat().st_mode & 0o777 == 0o600
    assert server.api("GET", "/api/v1/status", token=old).status_code == 401
    server.token = new
    assert server.api("GET", "/api/v1/status").status_code == 200

    # With a second admin token, the first one may go.
    second = server.cli("token", "create", "ops", "--admin").stdout.strip()
    server.cli("token", "revoke", "admin")
    assert server.api("GET", "/api/v1/status").status_code == 401
    ops = _with_token(server, second)
    assert ops.api("GET", "/api/v1/status").status_code == 200


def test_local_rotation_recovers_a_lost_admin_token(server: SocleServer) -> None:
    running = server.cli("token", "rotate", "admin", "--local", check=False)
    assert running.returncode == 1 and "is running" in running.stderr
    old = server.token
    server.stop()
    (server.home / "admin.token").write_text("lost\n")
    server.cli("token", "rotate", "admin", "--local")
    new = (server.home / "admin.token").read_text().strip()
    assert new.startswith("socle_") and new != old
    server.start()
    assert server.token == new
    assert server.api("GET", "/api/v1/status").status_code == 200
    assert server.api("GET", "/api/v1/status", token=old).status_code == 401


def test_an_expired_token_stops_working(server: SocleServer) -> None:
    token = server.cli("token", "create", "short", "--ttl", "1s").stdout.strip()
    wait_for(
        lambda: server.api("GET", "/api/v1/status", token=token).status_code == 401,
        30,
        "the token to expire",
    )
