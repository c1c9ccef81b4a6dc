"""Leases: ids, lookup, renew, revoke (one, prefix, by token), expiry and restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import hvac
import pytest

from tests.integration.secrets.core.vault_test_backends import Events, make_registry
from tests.integration.secrets.socle_vault_server import VaultServer


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def server(vault_server_factory: Callable[..., VaultServer], events: Events) -> VaultServer:
    server = vault_server_factory(registry=make_registry(events))
    server.client().sys.enable_secrets_engine("leasing", path="db")
    return server


def _creds(client: hvac.Client, role: str = "ro", **params: str) -> dict[str, Any]:
    result: dict[str, Any] = client.adapter.get(f"/v1/db/creds/{role}", params=params)
    return result


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_lease_lookup_renew_revoke(server: VaultServer, events: Events) -> None:
    client = server.client()
    secret = _creds(client, ttl="60")
    lease_id = secret["lease_id"]
    assert lease_id.startswith("db/creds/ro/") and len(lease_id) > len("db/creds/ro/") + 16
    assert secret["lease_duration"] == 60 and secret["renewable"] is True
    looked = client.sys.read_lease(lease_id)["data"]
    assert looked["id"] == lease_id and 58 <= looked["ttl"] <= 60 and looked["renewable"]
    renewed = client.sys.renew_lease(lease_id, increment=120)
    assert renewed["lease_id"] == lease_id and renewed["lease_duration"] == 120
    assert events.renewed == [secret["data"]["username"]]
    client.sys.revoke_lease(lease_id)
    assert events.revoked == [secret["data"]["username"]]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.read_lease(lease_id)
    client.sys.revoke_lease(lease_id)  # idempotent


def test_leases_expire_on_time(server: VaultServer, events: Events) -> None:
    secret = _creds(server.client(), ttl="1")
    user = secret["data"]["username"]
    assert user not in events.revoked
    _wait_for(lambda: user in events.revoked)


def test_revoking_a_token_revokes_its_leases(server: VaultServer, events: Events) -> None:
    root = server.client()
    root.sys.create_or_update_policy("db", 'path "db/creds/*" { capabilities = ["read"] }')
    token = root.auth.token.create(policies=["db"], ttl="1h")["auth"]["client_token"]
    app = server.client(token)
    users = [_creds(app, ttl="600")["data"]["username"] for _ in range(3)]
    other = _creds(root, ttl="600")["data"]["username"]
    root.auth.token.revoke(token)
    assert sorted(events.revoked) == sorted(users) and other not in events.revoked


def test_leases_never_outlive_their_token(server: VaultServer, events: Events) -> None:
    root = server.client()
    root.sys.create_or_update_policy("db", 'path "db/creds/*" { capabilities = ["read"] }')
    token = root.auth.token.create(policies=["db"], ttl="1s")["auth"]["client_token"]
    secret = _creds(server.client(token), ttl="600")
    assert secret["lease_duration"] <= 1
    _wait_for(lambda: secret["data"]["username"] in events.revoked)


def test_revoke_prefix_needs_sudo(server: VaultServer, events: Events) -> None:
    root = server.client()
    users = [_creds(root, role, ttl="600")["data"]["username"] for role in ("a", "b")]
    root.sys.create_or_update_policy("ops", 'path "sys/leases/*" { capabilities = ["update"] }')
    ops = server.client(root.auth.token.create(policies=["ops"])["auth"]["client_token"])
    with pytest.raises(hvac.exceptions.Forbidden):
        ops.sys.revoke_prefix("db/creds")
    root.sys.revoke_prefix("db/creds")
    assert sorted(events.revoked) == sorted(users)


def test_failing_backend_keeps_the_lease_unless_forced(server: VaultServer, events: Events) -> None:
    client = server.client()
    lease_id = _creds(client, ttl="600")["lease_id"]
    events.fail_revoke = True
    with pytest.raises(hvac.exceptions.InternalServerError):
        client.sys.revoke_lease(lease_id)
    assert client.sys.read_lease(lease_id)["data"]["id"] == lease_id
    client.sys.revoke_force("db/creds")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.read_lease(lease_id)


def test_unmount_revokes_leases(server: VaultServer, events: Events) -> None:
    user = _creds(server.client(), ttl="600")["data"]["username"]
    server.client().sys.disable_secrets_engine("db")
    assert events.revoked == [user]


def test_expiry_survives_a_restart(
    vault_server_factory: Callable[..., VaultServer], events: Events
) -> None:
    first = vault_server_factory(registry=make_registry(events))
    first.client().sys.enable_secrets_engine("leasing", path="db")
    soon = _creds(first.client(), ttl="1")["data"]["username"]
    later = _creds(first.client(), ttl="3")["data"]["username"]
    first.stop()
    time.sleep(1.1)  # "soon" expires while the server is down
    vault_server_factory(previous=first)  # unseals; the expiry task takes over
    _wait_for(lambda: soon in events.revoked, timeout=2)
    assert later not in events.revoked
    _wait_for(lambda: later in events.revoked)
