"""Hostile requests over HTTP: unknown paths, wrong verbs, wrong types, injection attempts."""

from __future__ import annotations

import hvac
import pytest

from tests.integration.secrets.conftest import VaultServer


@pytest.fixture
def client(vault_server: VaultServer) -> hvac.Client:
    client = vault_server.client()
    client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    client.sys.enable_secrets_engine("transit")
    client.sys.enable_secrets_engine("pki")
    client.sys.enable_secrets_engine("database")
    return client


def status(client: hvac.Client, method: str, path: str, body: object = None) -> int:
    response = client.adapter.request(method, f"/v1/{path}", json=body, raise_exception=False)
    return int(response.status_code)


CASES: list[tuple[str, str, object, int]] = [
    ("get", "transit/nothing-here", None, 404),
    ("get", "pki/issue/web", None, 405),
    ("delete", "transit/encrypt/k", None, 405),
    ("post", "transit/keys/k", {"type": ["aes256-gcm96"]}, 400),
    ("post", "transit/keys/k", {"exportable": {"yes": 1}}, 400),
    ("post", "transit/encrypt/k", {"plaintext": "%%%"}, 400),
    ("post", "transit/random", {"bytes": 10**12}, 400),
    ("post", "secret/data/k", {"data": {"a": 1}, "options": {"cas": "NaN"}}, 400),
    ("post", "secret/config", {"max_versions": 1e300}, 400),
    ("post", "pki/roles/r", {"ttl": "999999999h"}, 400),
    ("post", "pki/root/generate/internal", {"common_name": "x" * 100}, 400),
    ("post", "pki/root/generate/internal", {"common_name": "r", "key_bits": 123}, 400),
    ("post", "database/roles/x%27%3B%20DROP%20ROLE%20postgres%3B--", {"db_name": "a"}, 404),
    ("get", "database/creds/%22%3B%20DROP", None, 404),
    ("post", "database/config/pg", {"plugin_name": "evil-plugin", "connection_url": "x"}, 400),
    (
        "post",
        "database/roles/r",
        {"db_name": "pg", "creation_statements": "x", "default_ttl": [1]},
        400,
    ),
]


def test_hostile_requests(client: hvac.Client) -> None:
    """One server for the whole table (starting one per case would dominate the time)."""
    wrong = [
        (method, path, body, expected, got)
        for method, path, body, expected in CASES
        if (got := status(client, method, path, body)) != expected
    ]
    assert wrong == []


def test_no_leak_of_root_password_in_errors(client: hvac.Client) -> None:
    response = client.adapter.request(
        "post",
        "/v1/database/config/pg",
        json={
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/postgres",
            "username": "root",
            "password": "Sup3r-Secret-Value",
        },
        raise_exception=False,
    )
    assert response.status_code == 400
    assert "Sup3r-Secret-Value" not in response.text
