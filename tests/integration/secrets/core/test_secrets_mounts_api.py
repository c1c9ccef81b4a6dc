"""Mounts and auth methods through hvac: enable, list, tune, disable (storage removed)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import hvac
import pytest

from socle.secrets.core.barrier import DATA_PREFIX
from tests.integration.secrets.core.vault_test_backends import make_registry
from tests.integration.secrets.socle_vault_server import VaultServer


@pytest.fixture
def server(vault_server_factory: Callable[..., VaultServer]) -> VaultServer:
    return vault_server_factory(registry=make_registry())


def test_fresh_server_mounts(server: VaultServer) -> None:
    client = server.client()
    assert set(client.sys.list_mounted_secrets_engines()["data"]) == {"cubbyhole/", "sys/"}
    assert set(client.sys.list_auth_methods()["data"]) == {"token/"}


def test_enable_list_tune_disable(server: VaultServer) -> None:
    client = server.client()
    client.sys.enable_secrets_engine(
        "memkv",
        path="team/kv",
        description="team secrets",
        config={"default_lease_ttl": "1h", "max_lease_ttl": 7200},
    )
    mounts = client.sys.list_mounted_secrets_engines()
    entry = mounts["data"]["team/kv/"]
    assert entry["type"] == "memkv" and entry["description"] == "team secrets"
    assert entry["config"]["default_lease_ttl"] == 3600 and entry["config"]["max_lease_ttl"] == 7200
    assert entry["uuid"] and entry["accessor"].startswith("memkv_")
    assert mounts["team/kv/"] == entry  # mirrored at the top level
    client.write("team/kv/a/b", value="1")
    assert client.list("team/kv/a")["data"]["keys"] == ["b"]

    client.sys.tune_mount_configuration("team/kv", description="renamed", default_lease_ttl="30m")
    tuned = client.sys.read_mount_configuration("team/kv")["data"]
    assert tuned["description"] == "renamed" and tuned["default_lease_ttl"] == 1800
    assert client.read("team/kv/a/b")["data"] == {"value": "1"}  # data survives a tune

    uuid = entry["uuid"]
    keys = server.run(server.core.barrier._store.keys(f"{DATA_PREFIX}logical/{uuid}/"))
    assert keys
    client.sys.disable_secrets_engine("team/kv")
    assert "team/kv/" not in client.sys.list_mounted_secrets_engines()["data"]
    assert server.run(server.core.barrier._store.keys(f"{DATA_PREFIX}logical/{uuid}/")) == []
    client.sys.enable_secrets_engine("memkv", path="team/kv")
    assert client.read("team/kv/a/b") is None  # a fresh mount starts empty


def test_mount_errors(server: VaultServer) -> None:
    client = server.client()
    client.sys.enable_secrets_engine("memkv", path="one")
    for kwargs in (
        {"backend_type": "memkv", "path": "one"},
        {"backend_type": "memkv", "path": "one/nested"},
        {"backend_type": "nope", "path": "two"},
        {"backend_type": "memkv", "path": "sys/x"},
        {"backend_type": "memkv", "path": "auth/x"},
    ):
        with pytest.raises(hvac.exceptions.InvalidRequest):
            client.sys.enable_secrets_engine(**kwargs)
    for builtin in ("sys", "cubbyhole"):
        with pytest.raises(hvac.exceptions.InvalidRequest):
            client.sys.disable_secrets_engine(builtin)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.disable_auth_method("token")


def test_real_kv_v2_if_registered(server: VaultServer) -> None:
    if "kv" not in server.registry.secrets:
        pytest.skip("the kv engine is not registered")
    client = server.client()
    client.sys.enable_secrets_engine("kv-v2", path="kv2")
    assert client.sys.list_mounted_secrets_engines()["data"]["kv2/"]["options"] == {"version": "2"}
    client.secrets.kv.v2.create_or_update_secret("app", {"password": "pw"}, mount_point="kv2")
    read = client.secrets.kv.v2.read_secret_version(
        "app", mount_point="kv2", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"password": "pw"}


def test_auth_methods(server: VaultServer) -> None:
    client = server.client()
    client.sys.enable_auth_method("approle", path="machines", description="ci")
    methods = client.sys.list_auth_methods()["data"]
    assert methods["machines/"]["type"] == "approle" and methods["machines/"]["description"] == "ci"
    client.auth.approle.create_or_update_approle(
        "r", token_policies=["default"], mount_point="machines"
    )
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.enable_auth_method("approle", path="machines")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.enable_auth_method("nope")
    client.sys.disable_auth_method("machines")
    assert "machines/" not in client.sys.list_auth_methods()["data"]


def test_auth_enable_needs_sudo(server: VaultServer) -> None:
    root = server.client()
    root.sys.create_or_update_policy(
        "ops",
        'path "sys/auth/*" { capabilities = ["update"] }\n'
        'path "sys/mounts/*" { capabilities = ["update"] }',
    )
    ops = server.client(root.auth.token.create(policies=["ops"])["auth"]["client_token"])
    ops.sys.enable_secrets_engine("memkv", path="allowed")  # no sudo needed for mounts
    with pytest.raises(hvac.exceptions.Forbidden):
        ops.sys.enable_auth_method("approle")


def test_internal_ui_mounts_answers_only_callers_reaching_the_mount(
    vault_server: VaultServer,
) -> None:
    """What the bao/vault CLI asks before every kv command (see tests/.../bao_cli)."""
    url = f"{vault_server.url}/v1/sys/internal/ui/mounts/secret/app/db"
    root = vault_server.client()
    root.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    answer = httpx.get(url, headers={"X-Vault-Token": vault_server.root_token}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["data"]["options"] == {"version": "2"}
    assert answer.json()["data"]["path"] == "secret/"
    anonymous = httpx.get(url, timeout=5)
    assert anonymous.status_code == 403 and anonymous.json() == {"errors": ["permission denied"]}
    plain = root.auth.token.create(policies=["default"])["auth"]["client_token"]
    refused = httpx.get(url, headers={"X-Vault-Token": plain}, timeout=5)
    assert refused.status_code == 403 and "preflight capability check" in refused.text
