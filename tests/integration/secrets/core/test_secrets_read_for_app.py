"""SecretsCore.read_for_app: the runtime's door, with exactly the app's policies."""

from __future__ import annotations

import pytest

from socle.errors import SecretUnavailable
from tests.integration.secrets.socle_vault_server import VaultServer


def test_read_for_app(vault_server: VaultServer) -> None:
    if "kv" not in vault_server.registry.secrets:
        pytest.skip("the kv engine is not registered")
    root = vault_server.client()
    root.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    root.secrets.kv.v2.create_or_update_secret("web/db", {"password": "one"}, mount_point="secret")
    root.secrets.kv.v2.create_or_update_secret(
        "web/db", {"password": "two", "port": 5432}, mount_point="secret"
    )
    root.secrets.kv.v2.create_or_update_secret("admin/db", {"password": "x"}, mount_point="secret")
    root.sys.create_or_update_policy("web", 'path "secret/data/web/*" { capabilities = ["read"] }')
    core = vault_server.core

    assert vault_server.run(core.read_for_app(["web"], "secret/data/web/db", "password")) == (
        "two",
        2,
    )
    assert vault_server.run(core.read_for_app(["web"], "secret/web/db", "port")) == ("5432", 2)
    for policies, path, key, status in (
        (["web"], "secret/data/admin/db", "password", 403),
        (["default"], "secret/data/web/db", "password", 403),  # exactly these policies
        (["web"], "secret/data/web/missing", "password", 404),
        (["web"], "secret/data/web/db", "nokey", 404),
        (["web"], "secret/../sys", "x", 400),
    ):
        with pytest.raises(SecretUnavailable) as caught:
            vault_server.run(core.read_for_app(policies, path, key))
        assert caught.value.status == status, (path, caught.value.message)

    root.sys.seal()
    with pytest.raises(SecretUnavailable) as sealed:
        vault_server.run(core.read_for_app(["web"], "secret/data/web/db", "password"))
    assert sealed.value.status == 503
