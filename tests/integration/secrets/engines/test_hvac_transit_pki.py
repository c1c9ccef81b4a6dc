"""Transit and PKI through the real HTTP server with hvac."""

from __future__ import annotations

import base64

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hvac.exceptions import InvalidPath, InvalidRequest

from tests.integration.secrets.conftest import VaultServer


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def client(vault_server: VaultServer) -> hvac.Client:
    client = vault_server.client()
    client.adapter.strict_http = True  # LIST as GET ?list=true (httptools refuses LIST)
    return client


def test_transit_lifecycle(client: hvac.Client) -> None:
    client.sys.enable_secrets_engine("transit")
    transit = client.secrets.transit
    transit.create_key("orders", key_type="aes256-gcm96")
    assert transit.read_key("orders")["data"]["latest_version"] == 1
    assert transit.list_keys()["data"]["keys"] == ["orders"]

    old = transit.encrypt_data("orders", b64(b"card 4242"))["data"]["ciphertext"]
    assert old.startswith("vault:v1:")
    assert transit.decrypt_data("orders", old)["data"]["plaintext"] == b64(b"card 4242")

    transit.rotate_key("orders")
    new = transit.rewrap_data("orders", old)["data"]["ciphertext"]
    assert new.startswith("vault:v2:")
    transit.update_key_configuration("orders", min_decryption_version=2)
    with pytest.raises(InvalidRequest, match="disallowed by policy"):
        transit.decrypt_data("orders", old)
    assert transit.decrypt_data("orders", new)["data"]["plaintext"] == b64(b"card 4242")

    batch = transit.encrypt_data(
        "orders", batch_input=[{"plaintext": b64(b"a")}, {"plaintext": b64(b"b")}]
    )
    assert len(batch["data"]["batch_results"]) == 2

    with pytest.raises(InvalidRequest, match="deletion is not allowed"):
        transit.delete_key("orders")
    transit.update_key_configuration("orders", deletion_allowed=True)
    transit.delete_key("orders")
    with pytest.raises(InvalidPath):
        transit.read_key("orders")


def test_transit_upsert_random_hash_datakey(client: hvac.Client) -> None:
    client.sys.enable_secrets_engine("transit")
    transit = client.secrets.transit
    ciphertext = transit.encrypt_data("auto", b64(b"x"))["data"]["ciphertext"]
    assert transit.decrypt_data("auto", ciphertext)["data"]["plaintext"] == b64(b"x")
    assert (
        len(base64.b64decode(transit.generate_random_bytes(n_bytes=16)["data"]["random_bytes"]))
        == 16
    )
    assert transit.hash_data(b64(b"abc"), algorithm="sha2-256")["data"]["sum"].startswith(
        "ba7816bf"
    )
    key = transit.generate_data_key("auto", key_type="plaintext")["data"]
    assert transit.decrypt_data("auto", key["ciphertext"])["data"]["plaintext"] == key["plaintext"]
    with pytest.raises(InvalidRequest, match="no prefix"):
        transit.decrypt_data("auto", "garbage")
    with pytest.raises(InvalidRequest, match="illegal base64"):
        transit.encrypt_data("auto", "***")


def test_pki_issue_revoke_crl(client: hvac.Client) -> None:
    client.sys.enable_secrets_engine("pki")
    pki = client.secrets.pki
    root = pki.generate_root(
        "internal", "Socle Root", extra_params={"ttl": "8760h", "key_type": "ec"}
    )
    ca = x509.load_pem_x509_certificate(root["data"]["certificate"].encode())
    assert x509.load_pem_x509_certificate(pki.read_ca_certificate().encode()) == ca

    pki.create_or_update_role(
        "web",
        extra_params={
            "allowed_domains": "example.com",
            "allow_subdomains": True,
            "max_ttl": "72h",
            "key_type": "ec",
        },
    )
    assert pki.read_role("web")["data"]["allow_subdomains"] is True
    assert pki.list_roles()["data"]["keys"] == ["web"]

    issued = pki.generate_certificate(
        "web", "www.example.com", extra_params={"alt_names": "api.example.com", "ttl": "1h"}
    )
    cert = x509.load_pem_x509_certificate(issued["data"]["certificate"].encode())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["www.example.com", "api.example.com"]
    assert issued["data"]["private_key_type"] == "ec"

    with pytest.raises(InvalidRequest, match=r"common name evil\.org not allowed by this role"):
        pki.generate_certificate("web", "evil.org")

    serial = issued["data"]["serial_number"]
    revoked = pki.revoke_certificate(serial)
    assert revoked["data"]["revocation_time"] > 0
    crl = x509.load_pem_x509_crl(pki.read_crl().encode())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert (
        pki.read_certificate(serial)["data"]["revocation_time"]
        == revoked["data"]["revocation_time"]
    )
    assert serial in pki.list_certificates()["data"]["keys"]


def test_pki_sign_csr(client: hvac.Client) -> None:
    client.sys.enable_secrets_engine("pki")
    pki = client.secrets.pki
    pki.generate_root("internal", "Root", extra_params={"key_type": "ec"})
    pki.create_or_update_role(
        "svc",
        extra_params={"allowed_domains": "svc.local", "allow_subdomains": True, "key_type": "ec"},
    )
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.svc.local")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    signed = pki.sign_certificate("svc", csr, "api.svc.local")
    cert = x509.load_pem_x509_certificate(signed["data"]["certificate"].encode())
    assert cert.public_key() == key.public_key()
