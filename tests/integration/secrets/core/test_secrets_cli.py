"""The `socle operator`, `socle secrets` and `socle audit verify` commands against a server."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from socle.cli.main import cli
from tests.integration.secrets.socle_vault_server import VaultServer


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    home = tmp_path / "user"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("VAULT_ADDR", "VAULT_TOKEN", "SOCLE_ADDR", "SOCLE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SOCLE_HOME", str(tmp_path / "socle-home"))
    return {"HOME": str(home)}


def _run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    return result.exit_code, result.output


def test_operator_lifecycle(sealed_vault_server: VaultServer, env: dict[str, str]) -> None:
    url = sealed_vault_server.url
    code, out = _run(
        "operator",
        "init",
        "--address",
        url,
        "--key-shares",
        "3",
        "--key-threshold",
        "2",
        "--json",
        "--save-root-token",
    )
    assert code == 0, out
    result = json.loads(out)
    token_file = Path(env["HOME"]) / ".vault-token"
    assert token_file.read_text() == result["root_token"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    code, out = _run("operator", "unseal", "--address", url, result["keys"][0], "--json")
    assert code == 0 and json.loads(out)["progress"] == 1
    code, out = _run("operator", "unseal", "--address", url, input=result["keys"][1] + "\n")
    assert code == 0, out
    assert result["keys"][1] not in out  # prompted without echo
    code, out = _run("operator", "status", "--address", url, "--json")
    assert json.loads(out)["sealed"] is False

    code, out = _run("operator", "rotate", "--address", url, "--json")
    assert code == 0 and json.loads(out)["term"] == 2
    code, out = _run("operator", "seal", "--address", url)
    assert code == 0, out
    code, out = _run("operator", "rotate", "--address", url)
    assert code == 1 and "sealed" in out


def test_kv_commands(
    vault_server: VaultServer, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "kv" not in vault_server.registry.secrets:
        pytest.skip("the kv engine is not registered")
    vault_server.client().sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    monkeypatch.setenv("VAULT_ADDR", vault_server.url)
    monkeypatch.setenv("VAULT_TOKEN", vault_server.root_token)
    pem = tmp_path / "key.pem"
    pem.write_text("-----BEGIN-----\n")
    code, out = _run("secrets", "put", "app/db", "user=admin", "password=s3=cret", f"key=@{pem}")
    assert code == 0 and "version 1" in out, out
    _run("secrets", "put", "app/db", "user=other")
    code, out = _run("secrets", "get", "app/db", "--field", "user")
    assert (code, out) == (0, "other\n")
    code, out = _run("secrets", "get", "app/db", "--version", "1", "--json")
    assert json.loads(out)["data"]["password"] == "s3=cret"
    code, out = _run("secrets", "list", "app", "--json")
    assert json.loads(out) == ["db"]
    code, out = _run("secrets", "delete", "app/db")
    assert code == 0
    code, out = _run("secrets", "get", "app/db")
    assert code == 1
    code, out = _run("secrets", "put", "app/db", "novalue")
    assert code == 1 and "KEY=VALUE" in out


def test_errors_are_clear(vault_server: VaultServer, env: dict[str, str]) -> None:
    code, out = _run("secrets", "get", "x", "--address", vault_server.url, "--token", "hvs.bad")
    assert code == 1 and "permission denied" in out
    code, out = _run("secrets", "get", "x", "--address", "http://127.0.0.1:9", "--token", "t")
    assert code == 1 and "cannot reach" in out
    code, out = _run("secrets", "get", "x")
    assert code == 1 and "no secrets server address" in out


def test_address_from_server_json(
    vault_server: VaultServer, env: dict[str, str], tmp_path: Path
) -> None:
    home = tmp_path / "socle-home"
    home.mkdir()
    # the CLI checks that the port is served by the PID server.json names (here: this test)
    (home / "server.json").write_text(json.dumps({"url": vault_server.url, "pid": os.getpid()}))
    code, out = _run("operator", "status", "--json")
    assert code == 0 and json.loads(out)["initialized"] is True
