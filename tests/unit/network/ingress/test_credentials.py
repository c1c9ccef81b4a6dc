"""Route credentials against an in-memory secrets API: renewal at two thirds of the
lifetime, the policy used, htpasswd in a scheme nginx reads, errors without values."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from socle.errors import SecretUnavailable
from socle.model.route import Route
from socle.network.ingress.credentials import POLICY, RouteCredentials, ssha

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def pem_pair(host: str, serial: int) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(START)
        .not_valid_after(START + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


class Secrets:
    """The slice of the secrets API the ingress uses, in memory, with an ACL of one policy."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str, str, dict[str, Any] | None]] = []
        self.kv: dict[str, dict[str, Any]] = {}
        self.serial = 0

    async def call_as(
        self, policies: list[str], operation: str, path: str, data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self.calls.append((policies, operation, path, data))
        if policies != [POLICY]:
            raise SecretUnavailable("permission denied", status=403)
        if operation == "update" and path == "pki/issue/web":
            assert data is not None
            self.serial += 1
            cert, key = pem_pair(data["common_name"], self.serial)
            return {"certificate": cert, "private_key": key, "issuing_ca": cert}
        if operation == "read" and path in self.kv:
            return {"data": self.kv[path], "metadata": {"version": 1}}
        raise SecretUnavailable(f"no secret at {path!r}", status=404)


def route(**spec: Any) -> Route:
    spec.setdefault("host", "shop.example.test")
    spec.setdefault("target", {"app": "web", "port": "http"})
    return Route.model_validate(
        {"apiVersion": "socle/v1", "kind": "Route", "metadata": {"name": "shop"}, "spec": spec}
    )


async def test_issued_certificate_is_kept_then_renewed(tmp_path: Path) -> None:
    secrets = Secrets()
    now = [START.timestamp() + 86400]
    creds = RouteCredentials(secrets, tmp_path / "certs", tmp_path / "auth", clock=lambda: now[0])
    tls_route = route(tls={"issuer": "pki/issue/web"})
    first = await creds(tls_route)
    assert first.error is None and first.tls is not None and first.tls.serial == "1"
    assert secrets.calls[0][:3] == ([POLICY], "update", "pki/issue/web")
    assert first.certificate is not None and first.certificate["subject"] == "CN=shop.example.test"
    assert (tmp_path / "certs" / "shop.key").stat().st_mode & 0o077 == 0
    again = await creds(tls_route)
    assert again.tls == first.tls and len(secrets.calls) == 1
    # A new control plane finds the kept certificate instead of issuing another.
    fresh = RouteCredentials(secrets, tmp_path / "certs", tmp_path / "auth", clock=lambda: now[0])
    assert (await fresh(tls_route)).tls == first.tls and len(secrets.calls) == 1
    now[0] = START.timestamp() + 21 * 86400  # past two thirds of 30 days
    renewed = await creds(tls_route)
    assert renewed.tls is not None and renewed.tls.serial == "2" and len(secrets.calls) == 2


async def test_refusals_name_the_route_and_path_never_a_value(tmp_path: Path) -> None:
    secrets = Secrets()
    creds = RouteCredentials(secrets, tmp_path / "certs", tmp_path / "auth")
    missing = await creds(route(basicAuth={"secret": "secret/data/nope"}))
    assert missing.error is not None and "route shop" in missing.error
    assert "secret/data/nope" in missing.error
    none = RouteCredentials(None, tmp_path / "c", tmp_path / "a")
    assert "no secrets engine" in ((await none(route(tls={"secret": "kv/x"}))).error or "")


async def test_basic_auth_file_uses_salted_sha1(tmp_path: Path) -> None:
    secrets = Secrets()
    secrets.kv["secret/data/users"] = {"alice": "wonder-land", "bob": "builder"}
    (tmp_path / "auth").mkdir()
    creds = RouteCredentials(secrets, tmp_path / "certs", tmp_path / "auth")
    extras = await creds(route(basicAuth={"secret": "secret/data/users"}))
    assert extras.htpasswd is not None
    text = extras.htpasswd.read_text()
    assert "wonder-land" not in text and "builder" not in text
    assert extras.htpasswd.stat().st_mode & 0o077 == 0
    entries = dict(line.split(":", 1) for line in text.splitlines())
    raw = base64.b64decode(entries["alice"].removeprefix("{SSHA}"))
    digest, salt = raw[:20], raw[20:]
    assert hashlib.sha1(b"wonder-land" + salt, usedforsecurity=False).digest() == digest
    assert ssha("x") != ssha("x")  # salted


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (workers run as another user)")
async def test_basic_auth_file_is_read_only_for_the_workers() -> None:
    """As root the workers (``nobody``) read the htpasswd file through their group; they
    used to own it and its folder, so any process of that user could replace it and let
    itself in."""
    worker = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="socle-auth-test-"))
    try:
        os.chmod(base, 0o755)
        secrets = Secrets()
        secrets.kv["secret/data/users"] = {"alice": "wonder-land"}
        creds = RouteCredentials(secrets, base / "certs", base / "auth", auth_group=worker.pw_gid)
        extras = await creds(route(basicAuth={"secret": "secret/data/users"}))
        assert extras.htpasswd is not None
        info, folder = extras.htpasswd.stat(), (base / "auth").stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, worker.pw_gid, 0o640)
        assert (folder.st_uid, folder.st_mode & 0o777) == (0, 0o750)

        def as_worker(code: str) -> int:
            return subprocess.run(
                ["/usr/bin/python3", "-c", code, str(extras.htpasswd)],
                user=worker.pw_uid,
                group=worker.pw_gid,
                extra_groups=[],
                capture_output=True,
                check=False,
                timeout=60,
            ).returncode

        assert as_worker("import sys; open(sys.argv[1]).read()") == 0, "workers read it"
        assert as_worker("import sys; open(sys.argv[1], 'a').write('eve:x')") != 0
        replace = "import os, sys; open(sys.argv[1] + '.x', 'w'); os.replace(sys.argv[1] + '.x', sys.argv[1])"
        assert as_worker(replace) != 0
        assert "eve" not in extras.htpasswd.read_text()
    finally:
        shutil.rmtree(base)
