"""Policies through hvac (old and new APIs) and their enforcement on real paths."""

from __future__ import annotations

from collections.abc import Callable

import hvac
import pytest

from tests.integration.secrets.core.vault_test_backends import make_registry
from tests.integration.secrets.socle_vault_server import VaultServer

APP_POLICY = """
# the app reads its own secrets
path "kv/app/*" {
  capabilities = ["read", "list"]
}
path "kv/app/admin" {
  capabilities = ["deny"]
}
path "kv/+/shared" {
  capabilities = ["read"]
}
path "kv/team/*" {
  capabilities = ["create", "update", "read"]
}
"""


@pytest.fixture
def server(vault_server_factory: Callable[..., VaultServer]) -> VaultServer:
    server = vault_server_factory(registry=make_registry())
    root = server.client()
    root.sys.enable_secrets_engine("memkv", path="kv")
    for path in ("app/db", "app/admin", "web/shared", "web/private", "team/x"):
        root.write(f"kv/{path}", value=f"v-{path}")
    root.sys.create_or_update_policy("app", APP_POLICY)
    return server


def test_crud_through_both_apis(vault_server: VaultServer) -> None:
    client = vault_server.client()
    client.sys.create_or_update_policy("old", 'path "a/*" { capabilities = ["read"] }')
    assert (
        client.sys.read_policy("old")["data"]["rules"] == 'path "a/*" { capabilities = ["read"] }'
    )
    client.sys.create_or_update_acl_policy("new", 'path "b" { capabilities = ["list"] }')
    assert (
        client.sys.read_acl_policy("new")["data"]["policy"]
        == 'path "b" { capabilities = ["list"] }'
    )
    listed = client.sys.list_policies()
    assert listed["data"]["policies"] == ["default", "new", "old", "root"]
    assert listed["policies"] == listed["data"]["keys"]  # mirrored at the top level, like Vault
    assert client.sys.list_acl_policies()["data"]["keys"] == ["default", "new", "old", "root"]
    client.sys.delete_policy("old")
    client.sys.delete_acl_policy("new")
    assert client.sys.list_policies()["data"]["policies"] == ["default", "root"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.sys.read_policy("old")


def test_names_are_lower_cased_and_builtins_protected(vault_server: VaultServer) -> None:
    client = vault_server.client()
    client.sys.create_or_update_policy("MixedCase", 'path "a" { capabilities = ["read"] }')
    assert "mixedcase" in client.sys.list_policies()["data"]["policies"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="root"):
        client.sys.create_or_update_policy("root", 'path "a" { capabilities = ["read"] }')
    for name in ("root", "default"):
        with pytest.raises(hvac.exceptions.InvalidRequest, match="cannot delete"):
            client.sys.delete_policy(name)
    assert "lookup-self" in client.sys.read_policy("default")["data"]["rules"]


def test_parse_errors_are_400_with_the_line(vault_server: VaultServer) -> None:
    client = vault_server.client()
    with pytest.raises(hvac.exceptions.InvalidRequest, match=r"line 3.*invalid capability"):
        client.sys.create_or_update_policy("bad", 'path "a" {\n\n capabilities = ["fly"]\n}')
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not supplied"):
        client.sys.create_or_update_policy("bad", "   ")


def test_enforcement(server: VaultServer) -> None:
    token = server.client().auth.token.create(policies=["app"])["auth"]["client_token"]
    app = server.client(token)
    assert app.read("kv/app/db")["data"] == {"value": "v-app/db"}
    assert app.list("kv/app")["data"]["keys"] == ["admin", "db"]
    assert app.read("kv/web/shared")["data"]["value"] == "v-web/shared"  # '+'
    app.write("kv/team/y", value="mine")  # create
    app.write("kv/team/x", value="changed")  # update
    for forbidden in ("kv/app/admin", "kv/web/private", "kv/other", "sys/mounts"):
        with pytest.raises(hvac.exceptions.Forbidden):
            app.read(forbidden)
    with pytest.raises(hvac.exceptions.Forbidden):
        app.write("kv/app/db", value="nope")
    with pytest.raises(hvac.exceptions.Forbidden):
        app.delete("kv/team/x")
    with pytest.raises(hvac.exceptions.Forbidden):
        app.sys.create_or_update_policy("escalate", 'path "*" { capabilities = ["sudo"] }')


def test_policy_changes_apply_immediately(server: VaultServer) -> None:
    root = server.client()
    token = root.auth.token.create(policies=["app"])["auth"]["client_token"]
    app = server.client(token)
    assert app.read("kv/app/db")
    root.sys.create_or_update_policy("app", 'path "kv/other" { capabilities = ["read"] }')
    with pytest.raises(hvac.exceptions.Forbidden):
        app.read("kv/app/db")
    root.sys.delete_policy("app")
    with pytest.raises(hvac.exceptions.Forbidden):
        app.read("kv/other")


def test_create_versus_update_capability(server: VaultServer) -> None:
    root = server.client()
    root.sys.create_or_update_policy("creator", 'path "kv/c/*" { capabilities = ["create"] }')
    app = server.client(root.auth.token.create(policies=["creator"])["auth"]["client_token"])
    app.write("kv/c/new", value="1")
    with pytest.raises(hvac.exceptions.Forbidden):
        app.write("kv/c/new", value="2")  # now it exists: that is an update


def test_capabilities_self(server: VaultServer) -> None:
    token = server.client().auth.token.create(policies=["app"])["auth"]["client_token"]
    caps = server.client(token).sys.get_capabilities(["kv/app/db", "kv/app/admin", "nope"])
    assert caps["kv/app/db"] == ["list", "read"]  # sorted, as Vault answers
    assert caps["kv/app/admin"] == ["deny"] and caps["nope"] == ["deny"]
    root_caps = server.client().sys.get_capabilities(["kv/app/db"], token=token)
    assert root_caps["capabilities"] == ["list", "read"]
