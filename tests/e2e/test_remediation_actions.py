"""Remediation beyond restart, through the webhook Alertmanager calls: ``rollback`` puts the
app back to its previous healthy release (a new revision, nothing else touched) and
``run`` executes a command in the app's sandbox; both recorded and rate-limited."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.socle_fixture import SocleServer, get_json, instance_url, wait_for, write_repo

NOT_ROOT = "import os, sys; sys.exit(0 if os.getuid() != 0 else 1)"


def _repo(root: Path, version: str) -> Path:
    write_repo(root, {"web": {"env": {"VERSION": version}}, "other": {}})
    rules = [
        {
            "apiVersion": "socle/v1",
            "kind": "AlertRule",
            "metadata": {"name": name},
            "spec": {"expr": f'up{{job="{name}"}} == 0', "actions": actions},
        }
        for name, actions in (
            ("web-errors", ["rollback", {"run": {"command": [sys.executable, "-c", NOT_ROOT]}}]),
            ("web-fails", [{"run": {"command": [sys.executable, "-c", "exit(3)"]}}]),
        )
    ]
    (root / "rules.yaml").write_text(yaml.safe_dump_all(rules))
    return root


def _fire(server: SocleServer, rule: str) -> list[dict[str, Any]]:
    payload = {
        "version": "4",
        "status": "firing",
        "receiver": "socle",
        "alerts": [
            {"status": "firing", "labels": {"alertname": rule, "socle_rule": rule, "app": "web"}}
        ],
    }
    answer = server.api("POST", "/api/v1/alerts/webhook", json=payload)
    assert answer.status_code == 200, answer.text
    done: list[dict[str, Any]] = answer.json()["remediations"]
    return done


def _version(server: SocleServer) -> str:
    return str(get_json(instance_url(server.app("web")))["version"])


def test_rollback_and_run_actions(server: SocleServer, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    server.cli("apply", str(_repo(repo, "1")), "--yes")
    server.cli("apply", str(_repo(repo, "2")), "--yes")
    assert _version(server) == "2"
    other_before = server.app("other")["instances"][0]["pid"]

    done = _fire(server, "web-errors")
    assert [(r["action"], r["result"]) for r in done] == [("rollback", "done"), ("run", "done")]
    assert "back to its state in revision 1" in done[0]["message"]
    assert done[1]["instance"].startswith("web-")  # ran in the instance's sandbox, not as root

    def rolled_back() -> bool:
        revision = server.api("GET", "/api/v1/revisions/3").json()
        return bool(revision.get("status") == "succeeded")

    wait_for(rolled_back, 90, "the rollback revision")
    revision = server.api("GET", "/api/v1/revisions/3").json()
    assert revision["rollback_of"] == 1 and revision["who"] == "socle (alert web-errors)"
    wait_for(lambda: _version(server) == "1", 60, "the previous release to answer")
    assert server.app("other")["instances"][0]["pid"] == other_before  # untouched
    assert "socle (alert web-errors)" in server.cli("history").stdout

    # Still firing on the bad release's last samples: no storm of rollbacks or commands.
    again = _fire(server, "web-errors")
    assert [r["result"] for r in again] == ["rate-limited", "rate-limited"]
    assert server.api("GET", "/api/v1/revisions/4").status_code == 404

    (failed,) = _fire(server, "web-fails")
    assert failed["result"] == "failed" and "exited with code 3" in failed["message"]

    recorded = json.loads(server.cli("alerts", "--json").stdout)["remediations"]
    assert [(r["action"], r["result"]) for r in recorded] == [
        ("rollback", "done"),
        ("run", "done"),
        ("rollback", "rate-limited"),
        ("run", "rate-limited"),
        ("run", "failed"),
    ]
