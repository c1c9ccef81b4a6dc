"""Hostile HTTP: bad bodies, oversized bodies, path tricks, tokens, and ACL bypass attempts."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest

from tests.integration.secrets.core.vault_test_backends import make_registry
from tests.integration.secrets.socle_vault_server import VaultServer


@pytest.fixture
def server(vault_server_factory: Callable[..., VaultServer]) -> VaultServer:
    server = vault_server_factory(registry=make_registry())
    root = server.client()
    root.sys.enable_secrets_engine("memkv", path="kv")
    root.write("kv/open/x", value="open")
    root.write("kv/admin", value="top-secret")
    root.write("kv/Admin", value="other-case")
    root.sys.create_or_update_policy(
        "limited",
        'path "kv/open/*" { capabilities = ["read", "create", "update"] }\n'
        'path "kv/*" { capabilities = ["read"] }\n'
        'path "kv/admin" { capabilities = ["deny"] }\n',
    )
    return server


def _token(server: VaultServer) -> str:
    return str(server.client().auth.token.create(policies=["limited"])["auth"]["client_token"])


def _raw(server: VaultServer, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (httpx would normalise the path)."""
    with socket.create_connection(("127.0.0.1", server.runner.port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):  # "Connection: close": read the whole answer
            data += chunk
        status = int(data.split(b" ", 2)[1])
        return status, data


def _get(server: VaultServer, raw_path: str, token: str) -> int:
    request = (
        f"GET {raw_path} HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {token}\r\nConnection: close\r\n\r\n"
    ).encode()
    return _raw(server, request)[0]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"a": 1', b"\xff\xfe", b'"a string"', b"[1, 2]", b"42"],
)
def test_bad_json_is_400(server: VaultServer, body: bytes) -> None:
    response = httpx.post(
        f"{server.url}/v1/kv/open/y",
        content=body,
        headers={"X-Vault-Token": server.root_token},
        timeout=5,
    )
    assert response.status_code == 400
    assert "failed to parse JSON input" in response.json()["errors"][0]


def test_null_body_is_an_empty_body(server: VaultServer) -> None:
    """``bao write -f PATH`` sends ``null``; Vault and OpenBao take it as no data."""
    response = httpx.post(
        f"{server.url}/v1/sys/rotate",
        content=b"null",
        headers={"X-Vault-Token": server.root_token},
        timeout=5,
    )
    assert response.status_code == 204, response.text


def test_oversized_body_is_413(server: VaultServer) -> None:
    big = b'{"value": "' + b"x" * (2 << 20) + b'"}'
    response = httpx.post(
        f"{server.url}/v1/kv/open/y",
        content=big,
        headers={"X-Vault-Token": server.root_token},
        timeout=10,
    )
    assert response.status_code == 413
    chunked = httpx.post(  # no Content-Length: refused while reading the chunks
        f"{server.url}/v1/kv/open/y",
        content=iter([big[: 1 << 19]] * 5),
        headers={"X-Vault-Token": server.root_token},
        timeout=10,
    )
    assert chunked.status_code == 413
    assert server.client().read("kv/open/y") is None


@pytest.mark.parametrize(
    "path",
    [
        "/v1/kv/open/../admin",
        "/v1/kv/open/%2e%2e/admin",
        "/v1/kv/open/%2E%2E/admin",
        "/v1/kv/open%2f..%2fadmin",
        "/v1/kv/open/..%2fadmin",
        "/v1/kv//admin",
        "/v1/kv/./admin",
        "/v1/kv/admin%00",
        "/v1/kv/admin%0a",
        "/v1/kv/%zz",
    ],
)
def test_traversal_variants_are_refused(server: VaultServer, path: str) -> None:
    assert _get(server, path, _token(server)) == 400
    assert _get(server, path, server.root_token) == 400


def test_acl_cannot_be_bypassed(server: VaultServer) -> None:
    token = _token(server)
    assert _get(server, "/v1/kv/open/x", token) == 200
    assert _get(server, "/v1/kv/admin", token) == 403
    assert _get(server, "/v1/kv/admin/", token) == 403  # trailing slash
    assert _get(server, "/v1/kv/admin?list=false", token) == 403
    assert _get(server, "/v1/kv/%61dmin", token) == 403  # percent-encoded letter
    assert _get(server, "/v1/KV/admin", token) == 403  # case: another path, no rule
    assert _get(server, "/v1/kv/Admin", token) == 200  # case-sensitive: a different secret
    body = _raw(
        server,
        (
            f"GET /v1/kv/Admin HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {token}\r\n"
            "Connection: close\r\n\r\n"
        ).encode(),
    )[1]
    assert b"other-case" in body and b"top-secret" not in body


def test_tokens_missing_wrong_or_malformed(server: VaultServer) -> None:
    url = f"{server.url}/v1/kv/open/x"
    for headers in (
        {},
        {"X-Vault-Token": "hvs.wrong"},
        {"X-Vault-Token": "x" * 5000},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer hvs.wrong"},
    ):
        response = httpx.get(url, headers=headers, timeout=5)
        assert response.status_code == 403
        assert response.json() == {"errors": ["permission denied"]}


def test_methods_and_unknown_routes(server: VaultServer) -> None:
    headers = {"X-Vault-Token": server.root_token}
    assert (
        httpx.request(
            "OPTIONS", f"{server.url}/v1/kv/open/x", headers=headers, timeout=5
        ).status_code
        == 405
    )
    assert (
        httpx.request("HEAD", f"{server.url}/v1/kv/open/x", headers=headers, timeout=5).status_code
        == 405
    )
    response = httpx.get(f"{server.url}/v1/nowhere/x", headers=headers, timeout=5)
    assert response.status_code == 404 and response.json()["errors"]
    assert httpx.get(f"{server.url}/v1/sys/nothing", headers=headers, timeout=5).status_code == 404
    assert httpx.post(f"{server.url}/v1/sys/health", headers=headers, timeout=5).status_code == 405
    wrapped = httpx.get(
        f"{server.url}/v1/kv/open/x", headers={**headers, "X-Vault-Wrap-TTL": "60"}, timeout=5
    )
    assert wrapped.status_code == 200 and wrapped.json()["wrap_info"]["token"]


def test_list_forms_and_empty_answers(server: VaultServer) -> None:
    headers = {"X-Vault-Token": server.root_token}
    via_query = httpx.get(f"{server.url}/v1/kv/open?list=true", headers=headers, timeout=5)
    via_method = httpx.request("LIST", f"{server.url}/v1/kv/open/", headers=headers, timeout=5)
    assert via_query.json()["data"] == via_method.json()["data"] == {"keys": ["x"]}
    written = httpx.post(f"{server.url}/v1/kv/open/z", json={"a": "b"}, headers=headers, timeout=5)
    assert written.status_code == 204 and written.content == b""
    envelope = httpx.get(f"{server.url}/v1/kv/open/z", headers=headers, timeout=5).json()
    assert set(envelope) >= {
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    }


def test_error_status_with_data_keeps_the_envelope(server: VaultServer) -> None:
    headers = {"X-Vault-Token": server.root_token}
    response = httpx.get(f"{server.url}/v1/kv/tombstone", headers=headers, timeout=5)
    assert response.status_code == 404 and response.json()["data"] == {"deleted": True}
    assert response.headers["content-type"] == "application/json"
