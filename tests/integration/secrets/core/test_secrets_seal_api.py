"""Init, unseal (progress, reset, wrong keys), health codes, seal, restart, rotate, dev mode."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable

import httpx
import hvac
import pytest

from socle.secrets.core import DEV_KEY_FILE
from tests.integration.secrets.socle_vault_server import VaultServer


def test_init_then_unseal_with_three_of_five(sealed_vault_server: VaultServer) -> None:
    client = sealed_vault_server.client("")
    assert client.sys.is_initialized() is False
    assert client.sys.read_seal_status()["initialized"] is False
    result = sealed_vault_server.initialize(5, 3)
    assert len(result["keys"]) == 5 and len(result["keys_base64"]) == 5
    assert result["root_token"].startswith("hvs.")
    assert client.sys.is_initialized() is True
    status = client.sys.read_seal_status()
    assert status["sealed"] is True and (status["t"], status["n"], status["progress"]) == (3, 5, 0)

    keys = sealed_vault_server.unseal_keys
    first = client.sys.submit_unseal_key(keys[0])
    assert first["sealed"] and first["progress"] == 1 and first["nonce"]
    again = client.sys.submit_unseal_key(keys[0])  # the same share twice does not count
    assert again["progress"] == 1
    reset = client.sys.submit_unseal_key(reset=True)
    assert reset["progress"] == 0 and reset["nonce"] == ""
    client.sys.submit_unseal_key(keys[4])
    second = client.sys.submit_unseal_key(result["keys_base64"][2])  # base64 works too
    assert second["progress"] == 2 and second["sealed"]
    done = client.sys.submit_unseal_key(keys[1])
    assert done["sealed"] is False and done["progress"] == 0
    assert sealed_vault_server.client().lookup_token()["data"]["policies"] == ["root"]


def test_init_validation_and_only_once(sealed_vault_server: VaultServer) -> None:
    client = sealed_vault_server.client("")
    for shares, threshold in ((5, 6), (0, 0), (3, 1), (256, 3)):
        with pytest.raises(hvac.exceptions.InvalidRequest):
            client.sys.initialize(shares, threshold)
    sealed_vault_server.initialize(1, 1)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="already initialized"):
        client.sys.initialize(5, 3)
    sealed_vault_server.unseal()  # a single share is the key itself
    assert not client.sys.is_sealed()


def test_wrong_shares_reset_progress(vault_server_factory: Callable[..., VaultServer]) -> None:
    server = vault_server_factory(unseal=False)
    other = vault_server_factory(unseal=False)
    client = server.client("")
    client.sys.submit_unseal_key(server.unseal_keys[0])
    client.sys.submit_unseal_key(other.unseal_keys[1])
    with pytest.raises(hvac.exceptions.InvalidRequest, match="wrong"):
        client.sys.submit_unseal_key(other.unseal_keys[2])
    assert client.sys.read_seal_status()["progress"] == 0
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.submit_unseal_key("not-a-key")
    server.unseal()


def _health(url: str, query: str = "", method: str = "GET") -> httpx.Response:
    return httpx.request(method, f"{url}/v1/sys/health{query}", timeout=5)


def test_health_codes_and_overrides(sealed_vault_server: VaultServer) -> None:
    url = sealed_vault_server.url
    assert _health(url).status_code == 501
    assert _health(url, "?uninitcode=200").status_code == 200
    sealed_vault_server.initialize()
    response = _health(url)
    assert response.status_code == 503 and response.json()["sealed"] is True
    assert _health(url, "?sealedcode=299").status_code == 299
    head = _health(url, method="HEAD")
    assert head.status_code == 503 and head.content == b""
    sealed_vault_server.unseal()
    body = _health(url).json()
    assert _health(url).status_code == 200 and body["initialized"] and not body["sealed"]
    assert _health(url, "?activecode=204&standbyok=true").status_code == 204
    assert _health(url, method="HEAD").status_code == 200
    assert _health(url, "?activecode=abc").status_code == 400
    status = sealed_vault_server.client("").sys.read_health_status(method="GET")
    assert status["sealed"] is False


def test_sealed_refuses_everything_else(vault_server: VaultServer) -> None:
    client = vault_server.client()
    client.sys.seal()
    assert client.sys.is_sealed()
    for method, path in (
        ("GET", "auth/token/lookup-self"),
        ("GET", "sys/mounts"),
        ("POST", "secret/data/x"),
        ("LIST", "sys/policies/acl"),
    ):
        response = httpx.request(
            method,
            f"{vault_server.url}/v1/{path}",
            headers={"X-Vault-Token": vault_server.root_token},
            timeout=5,
        )
        assert response.status_code == 503
        assert response.json() == {"errors": ["Vault is sealed"]}
    vault_server.unseal()
    assert client.lookup_token()["data"]["policies"] == ["root"]


def test_seal_needs_sudo(vault_server: VaultServer) -> None:
    client = vault_server.client()
    client.sys.create_or_update_policy("sealer", 'path "sys/seal" { capabilities = ["update"] }')
    plain = client.auth.token.create(policies=["sealer"])["auth"]["client_token"]
    with pytest.raises(hvac.exceptions.Forbidden):
        vault_server.client(plain).sys.seal()
    with pytest.raises(hvac.exceptions.Forbidden):
        vault_server.client("").sys.seal()
    client.sys.create_or_update_policy(
        "sealer", 'path "sys/seal" { capabilities = ["update", "sudo"] }'
    )
    vault_server.client(plain).sys.seal()
    assert client.sys.is_sealed()


def test_restart_comes_back_sealed(vault_server_factory: Callable[..., VaultServer]) -> None:
    first = vault_server_factory()
    first.client().sys.create_or_update_policy("kept", 'path "a" { capabilities = ["read"] }')
    first.stop()
    second = vault_server_factory(previous=first, unseal=False)
    assert second.client("").sys.is_sealed()
    with pytest.raises(hvac.exceptions.VaultDown):
        second.client().sys.list_policies()
    second.unseal()
    assert "kept" in second.client().sys.list_policies()["data"]["policies"]


def test_rotate_and_key_status(vault_server: VaultServer) -> None:
    client = vault_server.client()
    client.sys.create_or_update_policy("before", 'path "a" { capabilities = ["read"] }')
    assert client.sys.get_encryption_key_status()["data"]["term"] == 1
    client.sys.rotate_encryption_key()
    status = client.sys.get_encryption_key_status()
    assert status["data"]["term"] == 2 and status["term"] == 2 and "install_time" in status
    client.sys.create_or_update_policy("after", 'path "b" { capabilities = ["read"] }')
    client.sys.seal()
    vault_server.unseal()
    assert (
        client.sys.read_policy("before")["data"]["rules"] == 'path "a" { capabilities = ["read"] }'
    )
    assert client.sys.read_policy("after")["data"]["name"] == "after"
    assert client.sys.get_encryption_key_status()["data"]["term"] == 2


def test_dev_mode_unseals_itself(vault_server_factory: Callable[..., VaultServer]) -> None:
    server = vault_server_factory(initialize=False, dev=True)
    key_file = server.home / DEV_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    saved = json.loads(key_file.read_text())
    assert server.core.dev_root_token == saved["root_token"]
    client = server.client(saved["root_token"])
    assert not client.sys.is_sealed()
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    if "kv" in server.registry.secrets:
        assert mounts["secret/"]["type"] == "kv" and mounts["secret/"]["options"] == {
            "version": "2"
        }
    server.stop()
    again = vault_server_factory(home=server.home, initialize=False, dev=True)
    assert not again.client(saved["root_token"]).sys.is_sealed()  # same key, same token
