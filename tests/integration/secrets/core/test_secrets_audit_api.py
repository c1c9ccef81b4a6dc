"""Audit devices through hvac: HMAC'd lines, hash chain, audit-hash, fail closed."""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import pytest

from socle.secrets.core.audit_chain import verify_file
from tests.integration.secrets.socle_vault_server import VaultServer

MARKER = "audit-marker-value-8c1f"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_are_hmacd_and_chained(vault_server: VaultServer, tmp_path: Path) -> None:
    log = tmp_path / "audit" / "vault.log"
    log.parent.mkdir()
    client = vault_server.client()
    client.sys.enable_audit_device("file", options={"file_path": str(log)})
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    devices = client.sys.list_enabled_audit_devices()["data"]
    assert devices["file/"]["options"]["file_path"] == str(log)

    client.sys.create_or_update_policy("m", f'path "x" {{ capabilities = ["read"] }} # {MARKER}')
    token = client.auth.token.create(policies=["m"], meta={"k": MARKER})["auth"]["client_token"]
    client.sys.read_policy("m")
    text = log.read_text()
    assert MARKER not in text and vault_server.root_token not in text and token not in text

    entries = _lines(log)
    kinds = [(e["type"], e["request"]["path"]) for e in entries]
    assert ("request", "sys/policy/m") in kinds and ("response", "sys/policy/m") in kinds
    request = next(
        e for e in entries if e["type"] == "request" and e["request"]["path"] == "sys/policy/m"
    )
    assert request["auth"]["policies"] == ["root"]
    assert request["auth"]["client_token"].startswith("hmac-sha256:")
    assert request["request"]["data"]["policy"].startswith("hmac-sha256:")
    expected = client.sys.calculate_hash("file", vault_server.root_token)["data"]["hash"]
    assert request["auth"]["client_token"] == expected
    created = next(
        e
        for e in entries
        if e["type"] == "response" and e["request"]["path"] == "auth/token/create"
    )
    assert created["response"]["auth"]["client_token"].startswith("hmac-sha256:")
    assert verify_file(log).ok


def test_denied_requests_are_audited(vault_server: VaultServer, tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    vault_server.client().sys.enable_audit_device("file", options={"file_path": str(log)})
    with pytest.raises(hvac.exceptions.Forbidden):
        vault_server.client("hvs.bogus").sys.list_policies()
    errors = [e.get("error") for e in _lines(log)]
    assert "permission denied" in errors


def test_fail_closed_when_the_file_cannot_be_written(
    vault_server: VaultServer, tmp_path: Path
) -> None:
    folder = tmp_path / "audit"
    folder.mkdir()
    log = folder / "vault.log"
    client = vault_server.client()
    client.sys.enable_audit_device("file", options={"file_path": str(log)})
    client.sys.create_or_update_policy("before", 'path "a" { capabilities = ["read"] }')
    shutil.rmtree(folder)  # the open file is unlinked; reopening the path must fail
    with pytest.raises(hvac.exceptions.InternalServerError):
        client.sys.create_or_update_policy("during", 'path "a" { capabilities = ["read"] }')
    with pytest.raises(hvac.exceptions.InternalServerError):
        client.lookup_token()
    folder.mkdir()
    log.mkdir()  # a directory where the file should be: still failing
    with pytest.raises(hvac.exceptions.InternalServerError):
        client.sys.list_policies()
    log.rmdir()  # the path is writable again: the device recovers
    names = client.sys.list_policies()["data"]["policies"]
    assert "before" in names and "during" not in names  # nothing was done while failing
    assert verify_file(log).ok


def test_one_working_device_is_enough(vault_server: VaultServer, tmp_path: Path) -> None:
    client = vault_server.client()
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    client.sys.enable_audit_device(
        "file", path="a", options={"file_path": str(broken_dir / "a.log")}
    )
    client.sys.enable_audit_device("file", path="b", options={"file_path": str(tmp_path / "b.log")})
    shutil.rmtree(broken_dir)
    client.sys.create_or_update_policy("ok", 'path "a" { capabilities = ["read"] }')
    client.sys.disable_audit_device("a")
    assert set(client.sys.list_enabled_audit_devices()["data"]) == {"b/"}


def test_enable_errors(vault_server: VaultServer, tmp_path: Path) -> None:
    client = vault_server.client()
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.enable_audit_device("syslog")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.enable_audit_device("file", options={"file_path": "relative.log"})
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.enable_audit_device("file", options={"file_path": str(tmp_path / "no" / "x")})
    root_only = client.auth.token.create(policies=["default"])["auth"]["client_token"]
    with pytest.raises(hvac.exceptions.Forbidden):
        vault_server.client(root_only).sys.enable_audit_device(
            "file", options={"file_path": str(tmp_path / "x.log")}
        )


def test_chain_continues_across_restarts(
    vault_server_factory: Callable[..., VaultServer], tmp_path: Path
) -> None:
    log = tmp_path / "audit.log"
    first = vault_server_factory()
    first.client().sys.enable_audit_device("file", options={"file_path": str(log)})
    first.client().sys.list_policies()
    first.stop()
    second = vault_server_factory(previous=first)
    second.client().sys.list_policies()
    result = verify_file(log)
    assert result.ok and result.lines >= 4
