"""Audit devices write only under SOCLE_HOME/audit/, an allowed folder, or stdout.

Everything else (another path, ``..``, a symbolic link on the way, controls) is refused
with 400 and nothing is created, opened for writing or chmodded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import hvac
import pytest

from tests.integration.secrets.socle_vault_server import VaultServer


def _refused(client: hvac.Client, file_path: str, reason: str) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest) as info:
        client.sys.enable_audit_device("file", path="x", options={"file_path": file_path})
    assert reason in str(info.value), info.value
    assert "x/" not in client.sys.list_enabled_audit_devices()["data"]


def test_only_the_home_audit_folder_by_default(
    vault_server_factory: Callable[..., VaultServer], tmp_path: Path
) -> None:
    server = vault_server_factory(audit_dirs=())
    client = server.client()
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.conf"
    victim.write_text("keep me\n")
    victim.chmod(0o644)
    audit = server.home / "audit"

    _refused(client, str(outside / "new.log"), "outside the folders")
    assert not (outside / "new.log").exists()
    _refused(client, str(victim), "outside the folders")
    _refused(client, str(audit / ".." / "state.log"), "no '..'")
    _refused(client, "relative.log", "absolute path")
    _refused(client, str(audit) + "/a\nb.log", "control characters")
    assert not audit.exists()  # nothing created by refusals

    # A link planted in the audit folder, to a file or a folder elsewhere.
    audit.mkdir(mode=0o700)
    (audit / "link.log").symlink_to(victim)
    _refused(client, str(audit / "link.log"), "symbolic link")
    (audit / "sub").symlink_to(outside)
    _refused(client, str(audit / "sub" / "x.log"), "symbolic link")
    assert victim.read_text() == "keep me\n"
    assert victim.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in outside.iterdir()) == ["victim.conf"]

    client.sys.enable_audit_device("file", path="ok", options={"file_path": str(audit / "a.log")})
    client.sys.enable_audit_device("file", path="out", options={"file_path": "stdout"})
    client.sys.create_or_update_policy("p", 'path "a" { capabilities = ["read"] }')
    assert (audit / "a.log").stat().st_mode & 0o777 == 0o600
    assert "sys/polic" in (audit / "a.log").read_text()


def test_home_audit_folder_made_private_and_not_a_link(
    vault_server_factory: Callable[..., VaultServer], tmp_path: Path
) -> None:
    server = vault_server_factory(audit_dirs=())
    client = server.client()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (server.home / "audit").symlink_to(elsewhere)
    _refused(client, str(server.home / "audit" / "a.log"), "symbolic link")
    assert list(elsewhere.iterdir()) == []
    (server.home / "audit").unlink()
    client.sys.enable_audit_device(
        "file", path="ok", options={"file_path": str(server.home / "audit" / "a.log")}
    )
    assert (server.home / "audit").stat().st_mode & 0o777 == 0o700


def test_an_operator_allowed_folder(
    vault_server_factory: Callable[..., VaultServer], tmp_path: Path
) -> None:
    allowed = tmp_path / "var-log-socle"
    allowed.mkdir()
    server = vault_server_factory(audit_dirs=[allowed])
    client = server.client()
    client.sys.enable_audit_device("file", options={"file_path": str(allowed / "vault.log")})
    assert (allowed / "vault.log").is_file()
    _refused(client, str(tmp_path / "vault.log"), "SOCLE_AUDIT_DIRS")


def test_a_device_from_before_the_rule_fails_closed_after_restart(
    vault_server_factory: Callable[..., VaultServer], tmp_path: Path
) -> None:
    first = vault_server_factory(audit_dirs=[tmp_path])
    first.client().sys.enable_audit_device("file", options={"file_path": str(tmp_path / "old.log")})
    first.stop()
    second = vault_server_factory(previous=first, audit_dirs=())
    device = second.core.services.audit.devices["file/"] if second.core.services else None
    assert device is not None and device.failing
    size = os.path.getsize(tmp_path / "old.log")
    with pytest.raises(hvac.exceptions.VaultError):
        second.client().sys.create_or_update_policy("p", 'path "a" { capabilities = ["read"] }')
    assert os.path.getsize(tmp_path / "old.log") == size
