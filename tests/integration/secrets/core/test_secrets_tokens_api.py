"""Tokens through hvac: create, lookups, children, TTLs, use counts, renewal, revocation."""

from __future__ import annotations

import time

import hvac
import pytest

from tests.integration.secrets.socle_vault_server import VaultServer


def _create(client: hvac.Client, **kwargs: object) -> dict[str, object]:
    auth: dict[str, object] = client.auth.token.create(**kwargs)["auth"]
    return auth


def test_create_and_lookups(vault_server: VaultServer) -> None:
    root = vault_server.client()
    root.sys.create_or_update_policy("reader", 'path "secret/*" { capabilities = ["read"] }')
    auth = _create(root, policies=["reader"], ttl="1h", meta={"team": "a"}, display_name="ci")
    token = str(auth["client_token"])
    assert token.startswith("hvs.") and auth["policies"] == ["default", "reader"]
    assert auth["token_policies"] == ["default", "reader"] and auth["renewable"] is True
    assert auth["metadata"] == {"team": "a"} and auth["orphan"] is False
    assert auth["token_type"] == "service" and 3590 <= int(str(auth["lease_duration"])) <= 3600

    me = vault_server.client(token).lookup_token()["data"]
    assert me["id"] == token and me["display_name"] == "token-ci" and me["meta"] == {"team": "a"}
    assert me["policies"] == ["default", "reader"] and me["path"] == "auth/token/create"
    assert 0 < me["ttl"] <= 3600 and me["expire_time"]

    by_token = root.auth.token.lookup(token)["data"]
    assert by_token["accessor"] == auth["accessor"]
    by_accessor = root.auth.token.lookup_accessor(auth["accessor"])["data"]
    assert by_accessor["id"] == "" and by_accessor["display_name"] == "token-ci"


MAKER = 'path "auth/token/create" { capabilities = ["update"] }'


def test_children_die_with_their_parent_but_orphans_do_not(vault_server: VaultServer) -> None:
    root = vault_server.client()
    root.sys.create_or_update_policy("maker", MAKER)
    parent = str(_create(root, policies=["maker"])["client_token"])
    parent_client = vault_server.client(parent)
    child = str(_create(parent_client)["client_token"])
    grandchild = str(_create(vault_server.client(child))["client_token"])
    orphan = str(root.auth.token.create_orphan(policies=["default"])["auth"]["client_token"])
    root.auth.token.revoke(parent)
    for token in (parent, child, grandchild):
        with pytest.raises(hvac.exceptions.Forbidden):
            vault_server.client(token).lookup_token()
    assert vault_server.client(orphan).lookup_token()["data"]["orphan"] is True


def test_revoke_orphan_keeps_children(vault_server: VaultServer) -> None:
    root = vault_server.client()
    root.sys.create_or_update_policy("maker", MAKER)
    parent = str(_create(root, policies=["maker"])["client_token"])
    child = str(_create(vault_server.client(parent))["client_token"])
    root.auth.token.revoke_and_orphan_children(parent)
    with pytest.raises(hvac.exceptions.Forbidden):
        vault_server.client(parent).lookup_token()
    assert vault_server.client(child).lookup_token()["data"]["orphan"] is True


def test_child_policies_must_be_a_subset(vault_server: VaultServer) -> None:
    root = vault_server.client()
    for name in ("a", "b"):
        root.sys.create_or_update_policy(
            name, 'path "auth/token/create" { capabilities = ["update"] }'
        )
    token = str(_create(root, policies=["a"])["client_token"])
    limited = vault_server.client(token)
    assert _create(limited, policies=["a"])["policies"] == ["a", "default"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="subset"):
        _create(limited, policies=["b"])
    with pytest.raises(hvac.exceptions.InvalidRequest, match="subset"):
        _create(limited, policies=["root"])
    with pytest.raises(hvac.exceptions.InvalidRequest, match="orphan"):
        _create(limited, no_parent=True)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="periodic"):
        _create(limited, period="1h")


def test_no_default_policy(vault_server: VaultServer) -> None:
    auth = _create(vault_server.client(), policies=["x"], no_default_policy=True)
    assert auth["policies"] == ["x"]
    with pytest.raises(hvac.exceptions.Forbidden):  # default policy is what allows lookup-self
        vault_server.client(str(auth["client_token"])).lookup_token()


def test_expired_tokens_are_refused(vault_server: VaultServer) -> None:
    token = str(_create(vault_server.client(), ttl="1s")["client_token"])
    client = vault_server.client(token)
    assert client.lookup_token()["data"]["ttl"] <= 1
    time.sleep(1.2)
    with pytest.raises(hvac.exceptions.Forbidden, match="permission denied"):
        client.lookup_token()


def test_ttl_is_capped_by_explicit_max_not_by_the_parent(vault_server: VaultServer) -> None:
    """As in Vault (checked against OpenBao by the bao_cli suite): a child keeps its own TTL,
    and dies with its parent through tree revocation instead."""
    root = vault_server.client()
    capped = _create(root, ttl="2h", explicit_max_ttl="1h")
    assert int(str(capped["lease_duration"])) <= 3600
    root.sys.create_or_update_policy("maker", MAKER)
    parent = str(_create(root, ttl="60s", policies=["maker"])["client_token"])
    child = _create(vault_server.client(parent), ttl="1h")
    assert 3590 <= int(str(child["lease_duration"])) <= 3600
    root.auth.token.revoke(parent)
    with pytest.raises(hvac.exceptions.Forbidden):
        vault_server.client(str(child["client_token"])).lookup_token()


def test_num_uses(vault_server: VaultServer) -> None:
    token = str(_create(vault_server.client(), num_uses=2)["client_token"])
    client = vault_server.client(token)
    assert client.lookup_token()["data"]["num_uses"] == 1
    client.lookup_token()
    with pytest.raises(hvac.exceptions.Forbidden):
        client.lookup_token()
    with pytest.raises(hvac.exceptions.InvalidRequest, match="negative"):
        _create(vault_server.client(), num_uses=-1)


def test_limited_tokens_cannot_have_children(vault_server: VaultServer) -> None:
    vault_server.client().sys.create_or_update_policy("maker", MAKER)
    token = str(_create(vault_server.client(), num_uses=5, policies=["maker"])["client_token"])
    with pytest.raises(hvac.exceptions.InvalidRequest, match="restricted"):
        _create(vault_server.client(token))


def test_renewals(vault_server: VaultServer) -> None:
    root = vault_server.client()
    auth = _create(root, ttl="60s", explicit_max_ttl="120s")
    token = str(auth["client_token"])
    renewed = vault_server.client(token).auth.token.renew_self(increment="100s")["auth"]
    assert 99 <= renewed["lease_duration"] <= 100
    capped = root.auth.token.renew(token, increment="1h")
    assert capped["auth"]["lease_duration"] <= 120 and capped["warnings"]
    by_accessor = root.auth.token.renew_accessor(auth["accessor"], increment="30s")
    assert by_accessor["auth"]["client_token"] == ""
    fixed = str(_create(root, ttl="60s", renewable=False)["client_token"])
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not renewable"):
        vault_server.client(fixed).auth.token.renew_self()
    periodic = str(_create(root, period="30s")["client_token"])
    assert (
        vault_server.client(periodic).auth.token.renew_self(increment="1h")["auth"][
            "lease_duration"
        ]
        == 30
    )


def test_revoke_self_and_by_accessor(vault_server: VaultServer) -> None:
    root = vault_server.client()
    one = str(_create(root)["client_token"])
    vault_server.client(one).auth.token.revoke_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        vault_server.client(one).lookup_token()
    two = _create(root)
    root.auth.token.revoke_accessor(two["accessor"])
    with pytest.raises(hvac.exceptions.Forbidden):
        vault_server.client(str(two["client_token"])).lookup_token()
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid accessor"):
        root.auth.token.lookup_accessor(two["accessor"])
    with pytest.raises(hvac.exceptions.Forbidden, match="bad token"):
        root.auth.token.lookup("hvs.not-a-real-token")


def test_accessor_listing_needs_sudo(vault_server: VaultServer) -> None:
    root = vault_server.client()
    auth = _create(root, policies=["default"])
    keys = root.auth.token.list_accessors()["data"]["keys"]
    assert auth["accessor"] in keys
    with pytest.raises(hvac.exceptions.Forbidden):
        vault_server.client(str(auth["client_token"])).auth.token.list_accessors()


def test_bearer_header_works_too(vault_server: VaultServer) -> None:
    import httpx

    response = httpx.get(
        f"{vault_server.url}/v1/auth/token/lookup-self",
        headers={"Authorization": f"Bearer {vault_server.root_token}"},
        timeout=5,
    )
    assert response.status_code == 200 and response.json()["data"]["policies"] == ["root"]


def test_cubbyhole_is_private_and_dies_with_the_token(vault_server: VaultServer) -> None:
    root = vault_server.client()
    one = str(_create(root, policies=["default"])["client_token"])
    two = str(_create(root, policies=["default"])["client_token"])
    vault_server.client(one).write("cubbyhole/note", value="mine")
    assert vault_server.client(one).read("cubbyhole/note")["data"] == {"value": "mine"}
    assert vault_server.client(two).read("cubbyhole/note") is None
    assert root.read("cubbyhole/note") is None  # not even root sees another token's cubbyhole
    assert vault_server.client(one).list("cubbyhole")["data"]["keys"] == ["note"]
    root.auth.token.revoke(one)
    key_count = vault_server.run(vault_server.core.barrier.keys("cubbyhole/"))
    assert key_count == []
