"""AppRole through hvac: roles, role ids, secret ids (uses, TTL), login and its token."""

from __future__ import annotations

import time

import hvac
import pytest

from tests.integration.secrets.socle_vault_server import VaultServer


@pytest.fixture
def root(vault_server: VaultServer) -> hvac.Client:
    client = vault_server.client()
    client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy("app", 'path "secret/*" { capabilities = ["read"] }')
    return client


def test_login_flow(vault_server: VaultServer, root: hvac.Client) -> None:
    root.auth.approle.create_or_update_approle(
        "web", token_policies=["app"], token_ttl="10m", token_max_ttl="30m"
    )
    role = root.auth.approle.read_role("web")["data"]
    assert role["token_policies"] == ["app"] and role["token_ttl"] == 600
    assert role["token_max_ttl"] == 1800 and role["bind_secret_id"] is True
    assert root.auth.approle.list_roles()["data"]["keys"] == ["web"]
    role_id = root.auth.approle.read_role_id("web")["data"]["role_id"]
    issued = root.auth.approle.generate_secret_id("web", metadata={"host": "web-1"})["data"]
    assert issued["secret_id"] and issued["secret_id_accessor"]

    machine = vault_server.client("")
    login = machine.auth.approle.login(role_id, issued["secret_id"])
    auth = login["auth"]
    assert auth["policies"] == ["app", "default"] and auth["lease_duration"] == 600
    assert auth["metadata"] == {"host": "web-1", "role_name": "web"} and auth["orphan"] is True
    me = machine.lookup_token()["data"]  # hvac switched to the new token
    assert me["path"] == "auth/approle/login" and me["display_name"] == "approle"
    renewed = machine.auth.token.renew_self(increment="2h")["auth"]["lease_duration"]
    assert renewed <= 1800  # token_max_ttl caps renewals

    looked = root.auth.approle.read_secret_id("web", issued["secret_id"])["data"]
    assert looked["metadata"] == {"host": "web-1"}
    assert looked["secret_id_accessor"] == issued["secret_id_accessor"]
    accessors = root.auth.approle.list_secret_id_accessors("web")["data"]["keys"]
    assert accessors == [issued["secret_id_accessor"]]


def test_bad_credentials(vault_server: VaultServer, root: hvac.Client) -> None:
    root.auth.approle.create_or_update_approle("web", token_policies=["app"])
    role_id = root.auth.approle.read_role_id("web")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("web")["data"]["secret_id"]
    machine = vault_server.client("")
    for rid, sid in ((role_id, "wrong"), ("wrong", secret_id), (role_id, None)):
        with pytest.raises(hvac.exceptions.InvalidRequest):
            machine.auth.approle.login(rid, sid)
    machine.auth.approle.login(role_id, secret_id)


def test_secret_id_uses_and_ttl(vault_server: VaultServer, root: hvac.Client) -> None:
    root.auth.approle.create_or_update_approle(
        "batch", token_policies=["app"], secret_id_num_uses=2, secret_id_ttl="1s"
    )
    role_id = root.auth.approle.read_role_id("batch")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("batch")["data"]["secret_id"]
    machine = vault_server.client("")
    machine.auth.approle.login(role_id, secret_id, use_token=False)
    machine.auth.approle.login(role_id, secret_id, use_token=False)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid role or secret ID"):
        machine.auth.approle.login(role_id, secret_id, use_token=False)
    expiring = root.auth.approle.generate_secret_id("batch")["data"]["secret_id"]
    time.sleep(1.1)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        machine.auth.approle.login(role_id, expiring, use_token=False)


def test_destroy_and_custom_role_id(vault_server: VaultServer, root: hvac.Client) -> None:
    root.auth.approle.create_or_update_approle("web", token_policies=["app"])
    root.auth.approle.update_role_id("web", "my-role-id")
    assert root.auth.approle.read_role_id("web")["data"]["role_id"] == "my-role-id"
    one = root.auth.approle.generate_secret_id("web")["data"]
    two = root.auth.approle.generate_secret_id("web")["data"]
    root.auth.approle.destroy_secret_id("web", one["secret_id"])
    root.auth.approle.destroy_secret_id_accessor("web", two["secret_id_accessor"])
    machine = vault_server.client("")
    for secret in (one, two):
        with pytest.raises(hvac.exceptions.InvalidRequest):
            machine.auth.approle.login("my-role-id", secret["secret_id"], use_token=False)
    root.auth.approle.delete_role("web")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.auth.approle.read_role_id("web")


def test_roles_need_a_constraint_and_refuse_cidrs(root: hvac.Client) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest, match="constraint"):
        root.auth.approle.create_or_update_approle("x", bind_secret_id=False)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="CIDR"):
        root.auth.approle.create_or_update_approle("x", token_bound_cidrs=["10.0.0.0/8"])


def test_role_management_needs_permission(vault_server: VaultServer, root: hvac.Client) -> None:
    token = root.auth.token.create(policies=["app"])["auth"]["client_token"]
    with pytest.raises(hvac.exceptions.Forbidden):
        vault_server.client(token).auth.approle.create_or_update_approle("evil")
