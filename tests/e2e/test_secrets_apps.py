"""Secrets joined to apps, through the whole server: hvac on /v1, references in manifests."""

from __future__ import annotations

import json
from pathlib import Path

import hvac

from tests.e2e.socle_fixture import SocleServer, get_json, instance_url, wait_for, write_repo

SECRET = "correct-horse-battery-staple-7d1f"
NEW_SECRET = "tr0ub4dor-and-3-9c2e"


def vault(server: SocleServer) -> hvac.Client:
    keys = json.loads((server.home / "secrets-dev-unseal.key").read_text())
    assert (server.home / "secrets-dev-unseal.key").stat().st_mode & 0o777 == 0o600
    return hvac.Client(url=server.url, token=keys["root_token"])


def secret_app() -> dict[str, object]:
    return {
        "replicas": 2,
        "env": {"DB_PASSWORD": {"secret": "secret/data/db#password"}},
        "update": {"minHealthySeconds": "200ms"},
    }


def grep_home(server: SocleServer, needle: str) -> list[str]:
    hits = []
    for path in server.home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle.encode() in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                continue
    return hits


def test_hvac_speaks_to_the_control_plane(dev_server: SocleServer) -> None:
    client = vault(dev_server)
    assert client.sys.read_health_status(method="GET")["sealed"] is False
    client.secrets.kv.v2.create_or_update_secret("team/a", secret={"k": "v"}, mount_point="secret")
    client.secrets.kv.v2.create_or_update_secret("team/b", secret={"k": "v"}, mount_point="secret")
    listed = client.secrets.kv.v2.list_secrets("team", mount_point="secret")  # sends LIST
    assert listed["data"]["keys"] == ["a", "b"]


def test_app_gets_its_secret_and_rolls_when_it_changes(
    dev_server: SocleServer, tmp_path: Path
) -> None:
    client = vault(dev_server)
    client.secrets.kv.v2.create_or_update_secret(
        "db", secret={"password": SECRET}, mount_point="secret"
    )
    repo = write_repo(tmp_path / "repo", {"web": secret_app()})

    refused = dev_server.cli("apply", str(repo), "--yes", check=False)
    assert refused.returncode == 1
    assert "app-web" in refused.stderr and "spec.env.DB_PASSWORD" in refused.stderr
    assert dev_server.status()["apps"] == []

    client.sys.create_or_update_policy(
        "app-web", 'path "secret/data/db" { capabilities = ["read"] }'
    )
    plan = json.loads(dev_server.cli("plan", str(repo), "--json", check=False).stdout)
    assert SECRET not in json.dumps(plan)
    dev_server.cli("apply", str(repo), "--yes")
    app = dev_server.app("web")
    assert {get_json(instance_url(app, n))["db_password"] for n in (0, 1)} == {SECRET}

    client.secrets.kv.v2.create_or_update_secret(
        "db", secret={"password": NEW_SECRET}, mount_point="secret"
    )

    def rolled() -> bool:
        app = dev_server.app("web")
        return (
            app["ready"] == 2
            and len(app["instances"]) == 2
            and {get_json(instance_url(app, n))["db_password"] for n in (0, 1)} == {NEW_SECRET}
        )

    wait_for(rolled, 60, "apps to roll onto the new secret version")
    history = json.loads(dev_server.cli("history", "--json").stdout)
    assert history[0]["who"] == "socle (secret changed)"
    fields = history[0]["plan"]["changes"][0]["fields"]
    assert fields == [{"path": "secrets.secret/data/db#password", "old": 1, "new": 2}]

    visible = json.dumps(history) + dev_server.cli("status", "--json").stdout
    visible += dev_server.cli("logs", "web").stdout
    for value in (SECRET, NEW_SECRET):
        assert value not in visible
        assert grep_home(dev_server, value) == [], "secret values never stored in plaintext"


def test_policy_limits_what_an_app_can_read(dev_server: SocleServer, tmp_path: Path) -> None:
    client = vault(dev_server)
    client.secrets.kv.v2.create_or_update_secret(
        "db", secret={"password": SECRET}, mount_point="secret"
    )
    client.secrets.kv.v2.create_or_update_secret(
        "other", secret={"password": "x"}, mount_point="secret"
    )
    client.sys.create_or_update_policy(
        "app-web", 'path "secret/data/db" { capabilities = ["read"] }'
    )
    spec = secret_app()
    spec["env"] = {"DB_PASSWORD": {"secret": "secret/data/other#password"}}
    repo = write_repo(tmp_path / "repo", {"web": spec})
    refused = dev_server.cli("apply", str(repo), "--yes", check=False)
    assert refused.returncode == 1 and "permission denied" in refused.stderr
