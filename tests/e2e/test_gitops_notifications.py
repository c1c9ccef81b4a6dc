"""Notifiers end to end: a sync, a refused commit and a rollback are posted to a real
local HTTP receiver, signed with an HMAC key read from the secrets engine (policy
``notifier-<name>``), never carrying the key or the Git token; `socle notifications`
shows each delivery; hostile notifier settings are refused with nothing changed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import hvac

from socle.gitops.notify import SIGNATURE_HEADER, sign
from tests.e2e.gitops_repo import Remote, web
from tests.e2e.socle_fixture import SocleServer
from tests.e2e.test_gitops import sync
from tests.integration.gitops.test_notify import receiver

HMAC_KEY = "notifier-hmac-key-5b1f"


def test_events_reach_a_signed_webhook(dev_server: SocleServer, tmp_path: Path) -> None:
    server = dev_server
    keys = json.loads((server.home / "secrets-dev-unseal.key").read_text())
    vault = hvac.Client(url=server.url, token=keys["root_token"])
    vault.secrets.kv.v2.create_or_update_secret(
        "hooks/team", secret={"secret": HMAC_KEY}, mount_point="secret"
    )
    vault.sys.create_or_update_policy(
        "notifier-team", 'path "secret/data/hooks/team" { capabilities = ["read"] }'
    )
    bad = server.cli("notifier", "add", "evil", "--url", "http://169.254.169.254/x", check=False)
    assert bad.returncode != 0 and "link-local" in bad.stderr
    bad = server.cli("notifier", "add", "evil", "--url", "https://u:p@h.example/", check=False)
    assert bad.returncode != 0 and "must not hold credentials" in bad.stderr
    assert json.loads(server.cli("notifier", "list", "--json").stdout) == []

    with receiver([]) as (url, seen):
        server.cli(
            "notifier", "add", "team", "--url", f"{url}/hook", "--secret",
            "secret/data/hooks/team", "--event", "sync started", "--event", "sync succeeded",
            "--event", "sync failed", "--event", "rollback",
        )  # fmt: skip
        server.cli("notifier", "add", "chat", "--url", f"{url}/chat", "--format", "slack",
                   "--event", "sync failed")  # fmt: skip
        remote = Remote(tmp_path / "git")
        remote.commit_apps("v1", {"web": web("v1")})
        server.cli(
            "source", "add", "platform", "--repo", remote.url, "--branch", "main",
            "--path", "deploy", "--env", "dev", "--interval", "1h",
        )  # fmt: skip
        code, _ = sync(server, "dev")
        assert code == 0
        (remote.work / "deploy" / "apps.yaml").write_text("apps: [broken\n")
        remote.commit("broken")
        code, _ = sync(server, "dev")
        assert code == 1

        def delivered() -> list[dict[str, object]]:
            rows: list[dict[str, object]] = json.loads(server.cli("notifications", "--json").stdout)
            return rows

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = {(r["notifier"], r["event"]) for r in delivered() if r["delivered"]}
            if {
                ("team", "sync failed"),
                ("chat", "sync failed"),
                ("team", "sync succeeded"),
            } <= events:
                break
            time.sleep(0.2)
        assert ("team", "sync started") in events and ("team", "sync succeeded") in events
        assert ("chat", "sync failed") in events and ("chat", "sync started") not in events

    team = [(h, b) for h, b in seen if h.get(SIGNATURE_HEADER.lower())]
    assert team and all(h[SIGNATURE_HEADER.lower()] == sign(HMAC_KEY, b) for h, b in team)
    assert any(json.loads(b)["event"] == "sync failed" for _, b in team)
    chat = [json.loads(b) for h, b in seen if SIGNATURE_HEADER.lower() not in h]
    assert chat and all(set(c) == {"text"} and "sync failed" in c["text"] for c in chat)
    everything = b"".join(b for _, b in seen).decode() + server.cli("notifications").stdout
    assert HMAC_KEY not in everything
    assert "/hook" not in server.cli("notifications", "--json").stdout  # paths can be secrets
