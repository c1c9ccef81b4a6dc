"""Every engine field, fed every JSON type: the answer is a success or a 4xx, never a crash.

A crash (``TypeError``, ``AttributeError``...) would surface as a 500 and usually means a
missing validation; this sweep finds them for all write paths at once.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from socle.secrets.backend import Backend, Operation, SecretsError
from socle.secrets.engines.database import DatabaseBackend
from socle.secrets.engines.kv_v2 import KVv2Backend
from socle.secrets.engines.pki import PkiBackend
from socle.secrets.engines.transit import TransitBackend
from tests.unit.secrets.engines.enginekit import FakeClock, call, mount
from tests.unit.secrets.engines.memstorage import MemStorage
from tests.unit.secrets.engines.test_database_engine import RecordingPlugin

VALUES: list[Any] = [
    None,
    0,
    -1,
    2**70,
    1.5,
    float("inf"),
    True,
    "",
    "x",
    "A" * 5000,
    [],
    ["a"],
    [1, None],
    {},
    {"a": 1},
    {"a": {"b": []}},
]


async def kv_setup() -> Backend:
    backend = KVv2Backend(MemStorage(), mount(options={"version": "2"}), clock=FakeClock())
    await call(backend, "create", "data/k", {"data": {"a": 1}})
    return backend


async def transit_setup() -> Backend:
    # An all-zero "random" source makes the key (and so CIPHERTEXT below) predictable.
    backend = TransitBackend(
        MemStorage(), mount("transit/", "transit"), clock=FakeClock(), random=bytes
    )
    await call(backend, "create", "keys/k", {})
    return backend


async def pki_setup() -> Backend:
    backend = PkiBackend(MemStorage(), mount("pki/", "pki"))
    await call(
        backend, "update", "root/generate/internal", {"common_name": "Root", "key_type": "ec"}
    )
    await call(backend, "create", "roles/r", {"allow_any_name": True, "key_type": "ec"})
    return backend


async def db_setup() -> Backend:
    plugin = RecordingPlugin()
    backend = DatabaseBackend(
        MemStorage(),
        mount("database/", "database"),
        clock=FakeClock(),
        plugins={"postgresql-database-plugin": lambda: plugin},
    )
    await call(
        backend,
        "create",
        "config/pg",
        {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://h/db",
            "allowed_roles": "*",
        },
    )
    await call(
        backend,
        "create",
        "roles/r",
        {"db_name": "pg", "creation_statements": "CREATE ROLE {{name}}"},
    )
    return backend


PLAINTEXT = base64.b64encode(b"x").decode()
CIPHERTEXT = (
    "vault:v1:"
    + base64.b64encode(bytes(12) + AESGCM(bytes(32)).encrypt(bytes(12), b"x", None)).decode()
)
_CSR_KEY = ec.generate_private_key(ec.SECP256R1())
CSR = (
    x509.CertificateSigningRequestBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.com")]))
    .sign(_CSR_KEY, hashes.SHA256())
    .public_bytes(serialization.Encoding.PEM)
    .decode()
)
CASES: list[tuple[str, Callable[[], Awaitable[Backend]], str, str, dict[str, Any]]] = [
    ("kv", kv_setup, "update", "data/k", {"data": {"a": 1}, "options": {"cas": 1}}),
    ("kv", kv_setup, "update", "data/new", {"data": {"a": 1}, "options": {"cas": 0}}),
    ("kv", kv_setup, "patch", "data/k", {"data": {"a": 2}}),
    (
        "kv",
        kv_setup,
        "update",
        "metadata/k",
        {
            "max_versions": 3,
            "cas_required": False,
            "delete_version_after": "1h",
            "custom_metadata": {"a": "b"},
        },
    ),
    (
        "kv",
        kv_setup,
        "update",
        "config",
        {"max_versions": 3, "cas_required": False, "delete_version_after": "1h"},
    ),
    ("kv", kv_setup, "update", "delete/k", {"versions": [1]}),
    ("kv", kv_setup, "read", "subkeys/k", {"version": 1, "depth": 1}),
    (
        "transit",
        transit_setup,
        "update",
        "keys/k2",
        {"type": "aes256-gcm96", "exportable": True, "auto_rotate_period": "2h"},
    ),
    (
        "transit",
        transit_setup,
        "update",
        "keys/k/config",
        {"min_decryption_version": 1, "deletion_allowed": True, "auto_rotate_period": 0},
    ),
    (
        "transit",
        transit_setup,
        "update",
        "encrypt/k",
        {"plaintext": PLAINTEXT, "key_version": 1, "associated_data": PLAINTEXT},
    ),
    (
        "transit",
        transit_setup,
        "update",
        "encrypt/k",
        {"batch_input": [{"plaintext": PLAINTEXT}], "partial_failure_response_code": 207},
    ),
    ("transit", transit_setup, "update", "decrypt/k", {"ciphertext": CIPHERTEXT}),
    (
        "transit",
        transit_setup,
        "update",
        "rewrap/k",
        {"ciphertext": CIPHERTEXT, "key_version": 1},
    ),
    ("transit", transit_setup, "update", "datakey/plaintext/k", {"bits": 256}),
    ("transit", transit_setup, "update", "hmac/k", {"input": PLAINTEXT, "algorithm": "sha2-256"}),
    ("transit", transit_setup, "update", "verify/k", {"input": PLAINTEXT, "hmac": "vault:v1:AAAA"}),
    ("transit", transit_setup, "update", "random", {"bytes": 8, "format": "hex"}),
    (
        "transit",
        transit_setup,
        "update",
        "hash",
        {"input": PLAINTEXT, "format": "hex", "algorithm": "sha2-256"},
    ),
    (
        "pki",
        pki_setup,
        "update",
        "roles/r2",
        {
            "allowed_domains": "a.com",
            "allow_subdomains": True,
            "ttl": "1h",
            "max_ttl": "2h",
            "key_type": "ec",
            "key_bits": 256,
            "key_usage": ["DigitalSignature"],
            "organization": "O",
        },
    ),
    (
        "pki",
        pki_setup,
        "update",
        "issue/r",
        {
            "common_name": "a.b.com",
            "alt_names": "c.com",
            "ip_sans": "10.0.0.1",
            "ttl": "1h",
            "format": "pem",
            "exclude_cn_from_sans": False,
            "private_key_format": "der",
            "not_after": "",
        },
    ),
    ("pki", pki_setup, "update", "sign/r", {"csr": CSR, "common_name": "a.com"}),
    ("pki", pki_setup, "update", "revoke", {"serial_number": "aa:bb", "certificate": ""}),
    (
        "pki",
        pki_setup,
        "update",
        "config/urls",
        {"issuing_certificates": "http://a", "crl_distribution_points": [], "ocsp_servers": []},
    ),
    ("pki", pki_setup, "update", "config/crl", {"expiry": "72h", "disable": False}),
    (
        "pki",
        pki_setup,
        "update",
        "tidy",
        {"tidy_cert_store": True, "tidy_revoked_certs": True, "safety_buffer": "1h"},
    ),
    (
        "db",
        db_setup,
        "update",
        "config/pg",
        {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://h/db",
            "username": "u",
            "password": "p",
            "allowed_roles": "*",
            "verify_connection": True,
            "root_rotation_statements": [],
            "max_open_connections": 4,
        },
    ),
    (
        "db",
        db_setup,
        "update",
        "roles/r",
        {
            "db_name": "pg",
            "creation_statements": ["CREATE ROLE {{name}}"],
            "revocation_statements": [],
            "renew_statements": [],
            "rollback_statements": [],
            "default_ttl": "1h",
            "max_ttl": "2h",
        },
    ),
]


@pytest.mark.parametrize(
    ("engine", "setup", "operation", "path", "good"), CASES, ids=[f"{c[0]}:{c[3]}" for c in CASES]
)
async def test_every_field_with_every_type(
    engine: str,
    setup: Callable[[], Awaitable[Backend]],
    operation: str,
    path: str,
    good: dict[str, Any],
) -> None:
    backend = await setup()
    await _expect_no_crash(backend, operation, path, good)
    for field in good:
        for value in VALUES:
            await _expect_no_crash(backend, operation, path, {**good, field: value})


async def _expect_no_crash(
    backend: Backend, operation: str, path: str, body: dict[str, Any]
) -> None:
    try:
        await call(
            backend,
            Operation(operation),
            path,
            body,
            query={k: str(v) for k, v in body.items() if isinstance(v, int | str)}
            if operation == "read"
            else None,
        )
    except SecretsError as exc:
        assert exc.status < 500, f"{path} {body!r}: {exc.status} {exc.errors}"
