"""Remediation beyond restart, through the webhook Alertmanager calls: ``rollback`` puts the
app back to its previous healthy release (a new revision, nothing else touched) and
``run`` executes a command in the app's sandbox; both recorded and rate-limited."""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.socle_fixture import (
    SocleServer,
    get_json,
    instance_url,
    observed_env,
    prometheus_query,
    running_server,
    wait_for,
    write_repo,
)

pytestmark = pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus")


@pytest.fixture
def observed(tmp_path: Path, socle_env: dict[str, str]) -> Iterator[SocleServer]:
    with running_server(tmp_path / "home", observed_env(socle_env, alertmanager=False)) as srv:
        yield srv


NOT_ROOT = "import os, sys; sys.exit(0 if os.getuid() != 0 else 1)"


def _repo(root: Path, version: str) -> Path:
    write_repo(root, {"web": {"env": {"VERSION": version}}, "other": {}})
    rules = [
        {
            "apiVersion": "socle/v1",
            "kind": "AlertRule",
            "metadata": {"name": name},
            # Fires at once, for app web: Prometheus has it firing, so the webhook's alert is
            # confirmed (a forged one would not be).
            "spec": {"expr": "vector(1)", "labels": {"app": "web"}, "actions": actions},
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


@pytest.mark.timeout(300)
def test_rollback_and_run_actions(observed: SocleServer, tmp_path: Path) -> None:
    server = observed
    repo = tmp_path / "repo"
    server.cli("apply", str(_repo(repo, "1")), "--yes")
    server.cli("apply", str(_repo(repo, "2")), "--yes")
    assert _version(server) == "2"
    other_before = server.app("other")["instances"][0]["pid"]

    def firing() -> bool:
        names = {r["metric"].get("alertname") for r in prometheus_query(server, "ALERTS")}
        return {"web-errors", "web-fails"} <= names

    wait_for(firing, 90, "Prometheus to have both rules firing")
    # An alert Prometheus does not have firing (for another app) is not acted on.
    payload = {
        "alerts": [{"status": "firing", "labels": {"socle_rule": "web-errors", "app": "other"}}]
    }
    forged = server.api("POST", "/api/v1/alerts/webhook", json=payload).json()["remediations"]
    assert {r["result"] for r in forged} == {"unconfirmed"}

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
        ("rollback", "unconfirmed"),
        ("run", "unconfirmed"),
        ("rollback", "done"),
        ("run", "done"),
        ("rollback", "rate-limited"),
        ("run", "rate-limited"),
        ("run", "failed"),
    ]


@pytest.mark.timeout(300)
def test_an_app_wide_restart_rolls_one_instance_at_a_time(
    observed: SocleServer, tmp_path: Path
) -> None:
    """An alert naming a whole app restarts its instances one after the other, each once
    the previous one is ready again: the app never has all its instances down at once."""
    server = observed
    repo = write_repo(tmp_path / "repo", {"web": {"replicas": 3}})
    rule = {
        "apiVersion": "socle/v1",
        "kind": "AlertRule",
        "metadata": {"name": "web-stuck"},
        "spec": {"expr": "vector(1)", "labels": {"app": "web"}, "actions": ["restart"]},
    }
    (repo / "rules.yaml").write_text(yaml.safe_dump(rule))
    server.cli("apply", str(repo), "--yes")
    before = {i["id"]: i for i in server.app("web")["instances"]}
    assert len(before) == 3 and all(i["ready"] for i in before.values())

    def firing() -> bool:
        alerts = prometheus_query(server, "ALERTS")
        return "web-stuck" in {r["metric"].get("alertname") for r in alerts}

    wait_for(firing, 90, "Prometheus to have the rule firing")
    done = _fire(server, "web-stuck")
    assert [r["result"] for r in done] == ["done", "queued", "queued"], done
    order = [r["instance"] for r in done]
    assert set(order) == set(before)

    def rolled() -> list[dict[str, Any]] | None:
        now = {i["id"]: i for i in server.app("web")["instances"]}
        finished = all(now[i]["restarts"] >= 1 and now[i]["ready"] for i in order)
        return [now[i] for i in order] if finished else None

    after = wait_for(rolled, 180, "the rolling restart to finish")
    # Each restart began only once the previous instance was ready again.
    for previous, following in itertools.pairwise(after):
        assert following["started_at"] >= previous["ready_since"], (previous, following)
    recorded = json.loads(server.cli("alerts", "--json").stdout)["remediations"]
    assert [(r["instance"], r["result"]) for r in recorded if r["result"] == "done"] == [
        (i, "done") for i in order
    ]
    # A second alert during or after the roll restarts nothing (rate limit per instance).
    assert {r["result"] for r in _fire(server, "web-stuck")} == {"rate-limited"}
