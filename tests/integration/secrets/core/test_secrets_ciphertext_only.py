"""Nothing the core is given reaches the disk in plaintext: scan every file under home."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.integration.secrets.core.vault_test_backends import make_registry
from tests.integration.secrets.socle_vault_server import VaultServer

MARKER = "Zq8-plaintext-marker-7Wx"


def _scan(home: Path, needles: list[str]) -> list[tuple[str, str]]:
    found = []
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                if needle.encode() in data:
                    found.append((str(path), needle))
    return found


def test_no_plaintext_at_rest(vault_server_factory: Callable[..., VaultServer]) -> None:
    server = vault_server_factory(registry=make_registry())
    root = server.client()
    audit = server.home / "audit" / "audit.log"
    root.sys.enable_audit_device("file", options={"file_path": str(audit)})
    needles = [MARKER, server.root_token, *server.unseal_keys]

    # policies, tokens (meta, display name), cubbyhole, a mounted engine, approle, leases
    root.sys.create_or_update_policy("p", f'# {MARKER}\npath "kv/*" {{ capabilities = ["read"] }}')
    created = root.auth.token.create(policies=["p"], meta={"m": MARKER}, display_name="d")
    token = created["auth"]["client_token"]
    needles += [token, created["auth"]["accessor"]]
    root.write("cubbyhole/note", value=MARKER)
    root.sys.enable_secrets_engine("memkv", path="kv")
    root.write("kv/app", value=MARKER)
    if "kv" in server.registry.secrets:
        root.sys.enable_secrets_engine("kv", path="kv2", options={"version": "2"})
        root.secrets.kv.v2.create_or_update_secret("app", {"v": MARKER}, mount_point="kv2")
    root.sys.enable_auth_method("approle")
    root.auth.approle.create_or_update_approle("r", token_policies=["p"])
    role_id = root.auth.approle.read_role_id("r")["data"]["role_id"]
    secret = root.auth.approle.generate_secret_id("r", metadata={"m": MARKER})["data"]
    login = server.client("").auth.approle.login(role_id, secret["secret_id"], use_token=False)
    needles += [role_id, secret["secret_id"], login["auth"]["client_token"]]
    root.sys.enable_secrets_engine("leasing", path="db")
    leased = root.adapter.get("/v1/db/creds/ro", params={"ttl": "600"})
    needles.append(leased["data"]["password"])
    root.sys.rotate_encryption_key()
    root.write("kv/after-rotate", value=MARKER)

    server.stop()  # flush everything, close the WAL
    assert audit.exists() and MARKER not in audit.read_text()
    found = _scan(server.home, needles)
    assert found == [], found
