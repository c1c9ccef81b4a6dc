"""Alerts reach the team's notifiers, like a user sets them up: a real Prometheus evaluates
an AlertRule that always holds, the real Alertmanager calls Socle back, and the alert is
posted to the notifier's webhook (a local HTTP receiver that first answers 503: retried);
removing the rule sends the resolved notification at once. A notifier whose severity filter
does not match gets nothing; `socle notifications` records every delivery."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.socle_fixture import SocleServer, observed_env, running_server, wait_for
from tests.integration.gitops.test_notify import receiver

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")),
    reason="needs Debian's prometheus and prometheus-alertmanager",
)


@pytest.fixture
def observed(tmp_path: Path, socle_env: dict[str, str]) -> Iterator[SocleServer]:
    with running_server(tmp_path / "home", observed_env(socle_env)) as srv:
        yield srv


def rule(name: str, expr: str, severity: str) -> dict[str, Any]:
    return {
        "apiVersion": "socle/v1",
        "kind": "AlertRule",
        "metadata": {"name": name},
        "spec": {
            "expr": expr,
            "for": "2s",
            "severity": severity,
            "labels": {"team": "web"},
            "annotations": {"summary": f"{name} holds"},
        },
    }


def test_firing_and_resolved_alerts_reach_notifiers(observed: SocleServer, tmp_path: Path) -> None:
    server = observed
    bad = server.cli("notifier", "add", "x", "--url", "http://127.0.0.1:9/", "--severity",
                     "urgent", check=False)  # fmt: skip
    assert bad.returncode != 0 and "urgent" in bad.stderr
    with receiver([503]) as (url, seen):
        server.cli(
            "notifier", "add", "oncall", "--url", f"{url}/oncall", "--event", "alert firing",
            "--event", "alert resolved", "--severity", "critical",
        )  # fmt: skip
        server.cli("notifier", "add", "tickets", "--url", f"{url}/tickets", "--format", "slack",
                   "--severity", "info")  # fmt: skip
        listed = {n["name"]: n for n in json.loads(server.cli("notifier", "list", "--json").stdout)}
        assert listed["oncall"]["alerts"] == {"severity": ["critical"]}

        repo = tmp_path / "repo"
        repo.mkdir()
        (repo / "always.yaml").write_text(
            yaml.safe_dump(rule("always", "vector(1) > 0", "critical"))
        )
        (repo / "never.yaml").write_text(yaml.safe_dump(rule("never", "vector(1) < 0", "info")))
        # Prometheus evaluates rules once it runs (its start is slow on a busy machine).
        wait_for(lambda: server.cli("metrics", "query", "vector(1)", check=False).returncode == 0,
                 120, "Prometheus to answer")  # fmt: skip
        server.cli("apply", str(repo), "--yes")
        applied = time.monotonic()

        def bodies(status: str) -> list[dict[str, Any]]:
            found = [json.loads(b) for _, b in seen]
            return [
                b for b in found
                if b.get("alert", {}).get("status") == status and b["alert"]["name"] == "always"
            ]  # fmt: skip

        fired = wait_for(lambda: bodies("firing"), 180, "the firing alert at the receiver")
        print(f"apply -> firing alert at the notifier: {time.monotonic() - applied:.1f}s")
        alert = fired[0]["alert"]
        assert fired[0]["event"] == "alert firing" and fired[0]["message"] == "always holds"
        assert alert["severity"] == "critical" and alert["labels"]["team"] == "web"
        assert alert["rule"] == "always" and alert["startsAt"]

        (repo / "always.yaml").unlink()
        server.cli("apply", str(repo), "--yes")
        removed = time.monotonic()
        # Without Socle ending the removed rule's alert, Alertmanager would resolve it only
        # when Prometheus' last endsAt passes (4 resend periods: 4 min): this waits 2.
        resolved = wait_for(lambda: bodies("resolved"), 120, "the resolved alert at the receiver")
        print(f"rule removed -> resolved at the notifier: {time.monotonic() - removed:.1f}s")
        assert resolved[0]["event"] == "alert resolved" and resolved[0]["alert"]["endsAt"]

        rows: list[dict[str, Any]] = json.loads(server.cli("notifications", "--json").stdout)
    oncall = [r for r in rows if r["notifier"] == "oncall"]
    events = sorted(r["event"] for r in oncall if r["delivered"])
    assert events[:2] == ["alert firing", "alert resolved"], rows
    assert all(r["source"] == "always" for r in oncall)
    first = min((r for r in oncall if r["event"] == "alert firing"), key=lambda r: r["time"])
    assert first["statuses"][:2] == [503, 200]  # retried after the receiver's 503
    assert not [r for r in rows if r["notifier"] == "tickets"]  # severity filter: info only
    # Alertmanager sends the group again when it changes: the firing alert is posted once.
    assert len([r for r in oncall if r["event"] == "alert firing"]) == 1
    table = server.cli("notifications").stdout
    assert "alert firing" in table and "alert resolved" in table
