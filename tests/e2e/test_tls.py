"""TLS for anything beyond loopback: refused without it, served and verified with it."""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.socle_fixture import SOCLE, SocleServer


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "api.pem", tmp_path / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_listening_beyond_loopback_needs_tls(socle_env: dict[str, str], tmp_path: Path) -> None:
    srv = SocleServer(home=tmp_path / "h", env=socle_env)
    result = srv.cli("server", "--listen", "0.0.0.0:0", check=False, timeout=30)
    assert result.returncode == 1
    assert "without TLS" in result.stderr and "SOCLE_TLS_CERT" in result.stderr
    half = srv.cli("server", "--tls-cert", str(tmp_path / "missing.pem"), check=False, timeout=30)
    assert half.returncode == 1 and "SOCLE_TLS_KEY" in half.stderr


def test_api_over_tls_is_verified(socle_env: dict[str, str], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    env = dict(socle_env, SOCLE_TLS_CERT=str(cert), SOCLE_TLS_KEY=str(key), SOCLE_CA=str(cert))
    srv = SocleServer(home=tmp_path / "home", env=env, verify=str(cert))
    srv.start()
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        assert json.loads(srv.cli("status", "--json").stdout)["apps"] == []
        untrusted = dict(env)
        del untrusted["SOCLE_CA"]
        result = subprocess.run(
            [SOCLE, "status"], env=untrusted, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 1 and "certificate" in result.stderr.lower()
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/healthz", timeout=5)
    finally:
        srv.cleanup()
