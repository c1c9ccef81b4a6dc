"""Ciphertext only, across every engine and auth path, through the whole server.

A real ``socle server --dev`` is given marker values through KV v2, KV v1, cubbyhole,
transit, PKI, the database engine (against a real PostgreSQL when this machine can start
one), AppRole, tokens and policies, with a file audit device on. Then every file under
SOCLE_HOME (state.db and its -wal/-shm, keys, logs, run dir, the audit log) is scanned for
each marker as raw bytes and in base64 and hex forms, once while the server runs (the WAL
still holds the fresh pages) and once after it stopped. Nothing may be found.

What may legitimately be on disk is checked to *be* there, so a scan that reads nothing
cannot pass: a policy's name (names are not secret: they appear in storage keys and audit
lines), and in the audit log the HMAC of a secret value, computed by ``sys/audit-hash``.
The dev key file holds the root token and the unseal key by design (dev mode only).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.e2e.socle_fixture import SOCLE, SocleServer
from tests.support.pg_server import PgServer, running_postgres, skip_reason

DEV_KEY_FILE = "secrets-dev-unseal.key"


def marker(label: str) -> str:
    return f"{label}-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer | None]:
    """A real PostgreSQL, or None where this machine cannot start one (not root, no binaries):
    the database engine is then configured without verifying the connection."""
    if skip_reason() is not None:
        yield None
        return
    with running_postgres() as server:
        yield server


def forms(value: bytes) -> list[bytes]:
    """The value as raw bytes, base64 (standard, URL-safe, unpadded) and hex."""
    b64 = base64.b64encode(value)
    return [
        value,
        b64,
        b64.rstrip(b"="),
        base64.urlsafe_b64encode(value).rstrip(b"="),
        value.hex().encode(),
        value.hex().upper().encode(),
    ]


def pem_needles(pem: str) -> list[bytes]:
    """A private key's PEM body lines, its whole body, and its secret scalar in every form."""
    lines = [line for line in pem.strip().splitlines() if not line.startswith("-----")]
    key = load_pem_private_key(pem.encode(), password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        scalar = key.private_numbers().private_value
    else:
        assert isinstance(key, rsa.RSAPrivateKey)
        scalar = key.private_numbers().d
    raw = scalar.to_bytes((scalar.bit_length() + 7) // 8, "big")
    return [line.encode() for line in lines] + ["".join(lines).encode()] + forms(raw)


class Markers:
    """Every secret value handed to the server, by label, with the forms to look for."""

    def __init__(self) -> None:
        self.needles: dict[str, list[bytes]] = {}

    def add(self, label: str, value: str) -> str:
        self.add_bytes(label, value.encode())
        return value

    def add_bytes(self, label: str, value: bytes) -> None:
        self.needles.setdefault(label, []).extend(forms(value))

    def add_pem(self, label: str, pem: str) -> None:
        self.needles.setdefault(label, []).extend(pem_needles(pem))


def scan(home: Path, markers: Markers) -> list[tuple[str, str]]:
    """(file, label) for every marker form found in any file under ``home``."""
    found: list[tuple[str, str]] = []
    files = [p for p in home.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "state.db" for p in files)
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for label, needles in markers.needles.items():
            if path.name == DEV_KEY_FILE and label in ("root token", "unseal key"):
                continue  # dev mode stores exactly these two in its 0600 key file
            if any(needle in data for needle in needles):
                found.append((str(path.relative_to(home)), label))
    return found


def printable_strings(data: bytes, minimum: int = 4) -> list[bytes]:
    """What ``strings -a`` prints: runs of printable ASCII of at least ``minimum`` bytes."""
    return re.findall(rb"[\x20-\x7e]{%d,}" % minimum, data)


def test_every_engine_leaves_only_ciphertext(
    dev_server: SocleServer, postgres: PgServer | None
) -> None:
    home = dev_server.home
    keys = json.loads((home / DEV_KEY_FILE).read_text())
    root_token = keys["root_token"]
    client = hvac.Client(url=dev_server.url, token=root_token)
    client.adapter.strict_http = True  # LIST as GET ?list=true
    m = Markers()
    m.add("root token", root_token)
    m.add_bytes("unseal key", base64.b64decode(keys["unseal_key"]))

    audit_log = home / "audit" / "audit.log"
    client.sys.enable_audit_device("file", options={"file_path": str(audit_log)})

    # Policies: the name may be stored and logged in clear, the rules may not.
    policy_name = marker("policy-name-visible").lower()
    policy_rule = m.add("policy body", marker("policy-body"))
    client.sys.create_or_update_policy(
        policy_name, f'# {policy_rule}\npath "secret/data/app/*" {{ capabilities = ["read"] }}'
    )

    # KV v2 and KV v1 values, cubbyhole.
    kv2 = m.add("kv v2 value", marker("kv2-value"))
    client.secrets.kv.v2.create_or_update_secret("app/db", {"password": kv2}, mount_point="secret")
    client.secrets.kv.v2.create_or_update_secret(
        "app/db", {"password": m.add("kv v2 value v2", marker("kv2-second"))}, mount_point="secret"
    )
    client.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    client.secrets.kv.v1.create_or_update_secret(
        "app/db", {"password": m.add("kv v1 value", marker("kv1-value"))}, mount_point="kv1"
    )
    client.write("cubbyhole/note", value=m.add("cubbyhole value", marker("cubby-value")))

    # Transit: a plaintext it encrypted, a data key it generated, and exported key material.
    client.sys.enable_secrets_engine("transit")
    plaintext = m.add("transit plaintext", marker("transit-plaintext"))
    encrypted = client.secrets.transit.encrypt_data(
        "orders", plaintext=base64.b64encode(plaintext.encode()).decode()
    )
    assert encrypted["data"]["ciphertext"].startswith("vault:v1:")
    datakey = client.secrets.transit.generate_data_key("orders", key_type="plaintext")
    m.add_bytes("transit data key", base64.b64decode(datakey["data"]["plaintext"]))
    client.secrets.transit.create_key("exportable", exportable=True)
    exported = client.secrets.transit.export_key("exportable", key_type="encryption-key")
    for material in exported["data"]["keys"].values():
        m.add_bytes("transit key material", base64.b64decode(material))

    # PKI: an exported root's private key, and an issued certificate's private key.
    client.sys.enable_secrets_engine("pki")
    root = client.secrets.pki.generate_root(
        "exported", "Socle At-Rest Root", extra_params={"key_type": "ec", "key_bits": 256}
    )
    m.add_pem("pki root private key", root["data"]["private_key"])
    client.secrets.pki.create_or_update_role(
        "web",
        extra_params={
            "allowed_domains": ["example.test"],
            "allow_subdomains": True,
            "key_type": "ec",
            "key_bits": 256,
        },
    )
    issued = client.secrets.pki.generate_certificate("web", "api.example.test")
    m.add_pem("pki issued private key", issued["data"]["private_key"])

    # Database: the connection's root password, and a dynamic credential's password.
    client.sys.enable_secrets_engine("database")
    db_password = m.add("database root password", marker("db-root-pw"))
    if postgres is not None:
        postgres.psql(f"CREATE ROLE socle_at_rest LOGIN SUPERUSER PASSWORD '{db_password}'")
        port = postgres.port
    else:
        port = 5432
    client.secrets.database.configure(
        "pg",
        "postgresql-database-plugin",
        verify_connection=postgres is not None,
        allowed_roles=["reader"],
        connection_url=f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{port}/postgres",
        username="socle_at_rest",
        password=db_password,
    )
    if postgres is not None:
        client.secrets.database.create_role(
            "reader",
            "pg",
            ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
             "VALID UNTIL '{{expiration}}';"],
            default_ttl="1h",
        )  # fmt: skip
        creds = client.secrets.database.generate_credentials("reader")
        m.add("database dynamic password", creds["data"]["password"])

    # AppRole: the role id, a secret id (with metadata), and the token a login returns.
    client.sys.enable_auth_method("approle")
    client.auth.approle.create_or_update_approle("deployer", token_policies=[policy_name])
    role_id = client.auth.approle.read_role_id("deployer")["data"]["role_id"]
    m.add("approle role id", role_id)
    issued_id = client.auth.approle.generate_secret_id(
        "deployer", metadata={"note": m.add("approle metadata", marker("approle-meta"))}
    )["data"]
    m.add("approle secret id", issued_id["secret_id"])
    m.add("approle secret id accessor", issued_id["secret_id_accessor"])
    login = hvac.Client(url=dev_server.url).auth.approle.login(
        role_id, issued_id["secret_id"], use_token=False
    )
    m.add("approle login token", login["auth"]["client_token"])
    m.add("approle login accessor", login["auth"]["accessor"])

    # Tokens: a child of the root token, with metadata.
    child = client.auth.token.create(
        policies=[policy_name], meta={"note": m.add("token metadata", marker("token-meta"))}
    )["auth"]
    m.add("child token", child["client_token"])
    m.add("child token accessor", child["accessor"])
    reader = hvac.Client(url=dev_server.url, token=child["client_token"])
    read = reader.secrets.kv.v2.read_secret_version(
        "app/db", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"]["password"].startswith("kv2-second-")

    kv2_hmac = client.adapter.post("/v1/sys/audit-hash/file", json={"input": kv2})["data"]["hash"]

    live = scan(home, m)
    assert live == [], f"plaintext while running: {live}"

    dev_server.stop()

    stopped = scan(home, m)
    assert stopped == [], f"plaintext at rest: {stopped}"

    everything = b"".join(
        p.read_bytes() for p in home.rglob("*") if p.is_file() and not p.is_symlink()
    )
    assert policy_name.encode() in everything, "the scan must see what is stored in clear"

    audit = audit_log.read_bytes()
    assert kv2_hmac.encode() in audit, "the audit log records secret values as HMACs"
    assert b'"path":"secret/data/app/db"' in audit
    verify = subprocess.run(
        [SOCLE, "audit", "verify", str(audit_log)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    db = (home / "state.db").read_bytes()
    strings = printable_strings(db)
    assert any(b"secrets/b/token/id/" in s for s in strings), "strings sees the storage keys"
    assert not [s for s in strings if root_token.encode() in s]
    leaked = [s for s in strings if re.search(rb"hvs\.[A-Za-z0-9_-]{20}", s)]
    assert leaked == [], "no token of any kind in the database"
