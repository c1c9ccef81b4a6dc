"""The platform audit log through the CLI: who did what, tied by request id; tampering found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.socle_fixture import SocleServer, write_repo


def _query(server: SocleServer, *args: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(server.cli("audit", "query", "--json", *args).stdout)
    return data


def test_requests_and_changes_are_audited_and_verifiable(
    server: SocleServer, tmp_path: Path
) -> None:
    token = server.cli("token", "create", "ci").stdout.strip()
    repo = write_repo(tmp_path / "repo", {"web": {"replicas": 0}})
    applied = server.api("POST", "/api/v1/apply", json={"path": str(repo)}, token=token)
    assert applied.status_code == 200, applied.text
    rid = applied.headers["x-request-id"]
    assert server.api("GET", "/api/v1/status", token="socle_wrong").status_code == 401
    denied = server.api("GET", "/api/v1/audit", token=token)
    assert denied.status_code == 403  # only admins read the audit log

    mine = _query(server, "--who", "ci")
    requests = [e for e in mine if e["kind"] == "request"]
    assert [(e["method"], e["path"], e["status"], e["result"]) for e in requests] == [
        ("POST", "/api/v1/apply", 200, "ok"),
        ("GET", "/api/v1/audit", 403, "denied"),
    ]
    changes = [e for e in mine if e["kind"] == "change"]
    assert changes and all(e["request_id"] == rid for e in changes)
    assert any(k.startswith("+") and "web" in k for e in changes for k in e["keys"])
    assert token not in (server.home / "platform-audit" / "platform.log").read_text()

    refused = _query(server, "--path", "/api/v1/status")
    assert any(e["who"] == "-" and e["status"] == 401 for e in refused)
    by_id = _query(server, "--request-id", rid)
    assert {e["kind"] for e in by_id} == {"request", "change"}
    assert _query(server, "--since", "1h") and not _query(server, "--since", "0s", "--who", "x")
    table = server.cli("audit", "query", "--who", "ci").stdout
    assert "POST /api/v1/apply" in table and rid in table

    ok = server.cli("audit", "verify")
    assert ok.returncode == 0 and "chain intact" in ok.stdout

    log = server.home / "platform-audit" / "platform.log"
    lines = log.read_bytes().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if b'"who":"ci"' in line)
    lines[number] = lines[number].replace(b'"who":"ci"', b'"who":"ed"')
    log.write_bytes(b"".join(lines))
    tampered = server.cli("audit", "verify", check=False)
    assert tampered.returncode == 1 and f"line {number + 1}" in tampered.stderr
    offline = server.cli("audit", "verify", str(log), "--json", check=False)
    assert offline.returncode == 1 and json.loads(offline.stdout)["bad_line"] == number + 1

    bad = server.cli("audit", "query", "--since", "yesterday", check=False)
    assert bad.returncode == 1 and "since" in bad.stderr
