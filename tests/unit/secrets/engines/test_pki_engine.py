"""PKI engine: root CA, roles, issuance checked with ``cryptography``, CRL, a real TLS handshake."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from socle.secrets.engines.pki import PkiBackend
from tests.unit.secrets.engines.enginekit import FakeClock, call, exists, fails, mount
from tests.unit.secrets.engines.memstorage import MemStorage

DAY = 86400


@pytest.fixture
def clock() -> FakeClock:
    import time

    return FakeClock(time.time_ns())


@pytest.fixture
async def pki(clock: FakeClock) -> PkiBackend:
    backend = PkiBackend(MemStorage(), mount("pki/", "pki"), clock=clock)
    await call(
        backend,
        "update",
        "root/generate/internal",
        {"common_name": "Socle Test Root", "ttl": "8760h", "key_type": "ec", "key_bits": 256},
    )
    await call(
        backend,
        "create",
        "roles/web",
        {
            "allowed_domains": "example.com",
            "allow_subdomains": True,
            "max_ttl": "72h",
            "key_type": "ec",
        },
    )
    return backend


async def ca_cert(pki: PkiBackend) -> x509.Certificate:
    response = await call(pki, "read", "ca/pem")
    assert response.raw_body is not None
    return x509.load_pem_x509_certificate(response.raw_body)


async def issue(pki: PkiBackend, role: str = "web", **fields: object) -> dict[str, object]:
    response = await call(
        pki, "update", f"issue/{role}", {"common_name": "www.example.com", **fields}
    )
    assert response.data is not None
    return response.data


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = ext.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return dns, ips


async def test_root_generate_shapes(clock: FakeClock) -> None:
    backend = PkiBackend(MemStorage(), mount("pki/", "pki"), clock=clock)
    response = await call(
        backend,
        "update",
        "root/generate/exported",
        {"common_name": "Root", "ttl": "24h", "key_type": "rsa"},
    )
    data = response.data
    assert data is not None
    assert data["private_key_type"] == "rsa"
    assert str(data["private_key"]).startswith("-----BEGIN RSA PRIVATE KEY-----")
    cert = x509.load_pem_x509_certificate(str(data["certificate"]).encode())
    assert data["issuing_ca"] == data["certificate"]
    assert data["serial_number"] == ":".join(
        f"{b:02x}" for b in cert.serial_number.to_bytes(20, "big").lstrip(b"\0")
    )
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is True
    cert.verify_directly_issued_by(cert)
    assert abs(data["expiration"] - (clock.now_ns / 1e9 + DAY)) < 5
    # A second root on the same mount is refused with what to do next.
    again = await fails(backend, "update", "root/generate/internal", {"common_name": "Root 2"})
    assert again.status == 400 and "DELETE pki/root" in again.errors[0]
    await call(backend, "delete", "root")
    internal = await call(backend, "update", "root/generate/internal", {"common_name": "Root 2"})
    assert internal.data is not None and "private_key" not in internal.data


async def test_issue_chains_to_ca_and_has_sans(pki: PkiBackend) -> None:
    data = await issue(
        pki, alt_names="api.example.com,www.example.com", ip_sans="127.0.0.1,::1", ttl="1h"
    )
    ca = await ca_cert(pki)
    cert = x509.load_pem_x509_certificate(str(data["certificate"]).encode())
    cert.verify_directly_issued_by(ca)
    assert data["issuing_ca"] == data["ca_chain"][0]  # type: ignore[index]
    assert data["private_key_type"] == "ec"
    key = serialization.load_pem_private_key(str(data["private_key"]).encode(), None)
    assert key.public_key() == cert.public_key()  # type: ignore[union-attr]
    dns, ips = sans(cert)
    assert dns == ["www.example.com", "api.example.com"]
    assert ips == ["127.0.0.1", "::1"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "www.example.com"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 3600 <= lifetime.total_seconds() <= 3600 + 31
    assert data["expiration"] == int(cert.not_valid_after_utc.timestamp())


async def test_ttl_clamped_to_role_max_and_ca_expiry(pki: PkiBackend) -> None:
    response = await call(
        pki, "update", "issue/web", {"common_name": "a.example.com", "ttl": "1000h"}
    )
    assert response.warnings and "maxTTL" in response.warnings[0]
    cert = x509.load_pem_x509_certificate(str(response.data["certificate"]).encode())  # type: ignore[index]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() <= 72 * 3600 + 31

    await call(
        pki, "create", "roles/long", {"allow_any_name": True, "max_ttl": "87600h", "key_type": "ec"}
    )
    response = await call(
        pki, "update", "issue/long", {"common_name": "x.example.com", "ttl": "20000h"}
    )
    cert = x509.load_pem_x509_certificate(str(response.data["certificate"]).encode())  # type: ignore[index]
    ca = await ca_cert(pki)
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc
    assert any("expiration of the CA" in w for w in response.warnings)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"common_name": "evil.org"}, "common name evil.org not allowed by this role"),
        ({"alt_names": "evil.org"}, "subject alternate name evil.org not allowed by this role"),
        ({"alt_names": "bad name!"}, "subject alternate name bad name! not allowed by this role"),
        ({"alt_names": "root@evil.org"}, "email address root@evil.org not allowed by this role"),
        ({"ip_sans": "not-an-ip"}, 'the value "not-an-ip" is not a valid IP address'),
        ({"common_name": ""}, "the common_name field is required"),
        ({"ttl": "soon"}, 'field "ttl"'),
        ({"format": "xml"}, "invalid format"),
        ({"common_name": "x" * 70 + ".example.com"}, "not allowed by this role"),
        ({"alt_names": ",".join(f"h{i}.example.com" for i in range(1001))}, "too many"),
    ],
)
async def test_refused_requests(pki: PkiBackend, fields: dict[str, object], message: str) -> None:
    body = {"common_name": "www.example.com", **fields}
    error = await fails(pki, "update", "issue/web", body)
    assert error.status == 400
    assert message in error.errors[0]


async def test_ip_sans_refused_when_role_disallows(pki: PkiBackend) -> None:
    await call(pki, "update", "roles/web", {"allow_ip_sans": False})
    error = await fails(
        pki, "update", "issue/web", {"common_name": "a.example.com", "ip_sans": "10.0.0.1"}
    )
    assert error.errors == [
        "IP Subject Alternative Names are not allowed in this role, but was provided [10.0.0.1]"
    ]


async def test_unknown_role_and_no_ca(clock: FakeClock) -> None:
    backend = PkiBackend(MemStorage(), mount("pki/", "pki"), clock=clock)
    assert (await fails(backend, "update", "issue/none", {"common_name": "a"})).errors == [
        "unknown role: none"
    ]
    await call(backend, "create", "roles/r", {"allow_any_name": True})
    error = await fails(backend, "update", "issue/r", {"common_name": "a.b"})
    assert error.errors == ["no default issuer currently configured"]
    assert (await call(backend, "read", "ca/pem")).status == 204


async def test_roles_crud_and_existence(pki: PkiBackend) -> None:
    assert await exists(pki, "roles/web")
    assert not await exists(pki, "roles/other")
    read = await call(pki, "read", "roles/web")
    assert read.data is not None
    assert read.data["allowed_domains"] == ["example.com"]
    assert read.data["max_ttl"] == 72 * 3600
    assert read.data["key_type"] == "ec" and read.data["key_bits"] == 256
    assert (await call(pki, "list", "roles")).data == {"keys": ["web"]}
    await call(pki, "delete", "roles/web")
    assert (await fails(pki, "read", "roles/web")).status == 404
    assert (await fails(pki, "list", "roles")).status == 404


async def test_revoke_and_crl(pki: PkiBackend) -> None:
    first = await issue(pki)
    second = await issue(pki)
    revoked = await call(pki, "update", "revoke", {"serial_number": first["serial_number"]})
    assert revoked.data is not None and revoked.data["revocation_time"] > 0
    assert revoked.data["state"] == "revoked"
    again = await call(pki, "update", "revoke", {"serial_number": first["serial_number"]})
    assert (
        again.data is not None and again.data["revocation_time"] == revoked.data["revocation_time"]
    )

    ca = await ca_cert(pki)
    pem = await call(pki, "read", "crl/pem")
    assert pem.content_type == "application/x-pem-file" and pem.raw_body is not None
    crl = x509.load_pem_x509_crl(pem.raw_body)
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.subject
    serials = {r.serial_number for r in crl}
    first_cert = x509.load_pem_x509_certificate(str(first["certificate"]).encode())
    second_cert = x509.load_pem_x509_certificate(str(second["certificate"]).encode())
    assert first_cert.serial_number in serials
    assert second_cert.serial_number not in serials
    der = await call(pki, "read", "crl")
    assert der.content_type == "application/pkix-crl"
    assert x509.load_der_x509_crl(der.raw_body or b"").get_revoked_certificate_by_serial_number(
        first_cert.serial_number
    )

    info = await call(pki, "read", f"cert/{first['serial_number']}")
    assert info.data is not None and info.data["revocation_time"] == revoked.data["revocation_time"]
    listed = await call(pki, "list", "certs/revoked")
    assert listed.data == {"keys": [str(first["serial_number"])]}  # colons, as OpenBao lists


async def test_revoke_refusals(pki: PkiBackend) -> None:
    assert (await fails(pki, "update", "revoke", {})).errors == [
        "The serial number must be provided"
    ]
    missing = await fails(pki, "update", "revoke", {"serial_number": "aa:bb"})
    assert missing.errors == ["certificate with serial aa:bb not found."]
    assert (await fails(pki, "update", "revoke", {"serial_number": "'; DROP--"})).status == 400
    ca = await ca_cert(pki)
    serial = ":".join(f"{b:02x}" for b in ca.serial_number.to_bytes(20, "big").lstrip(b"\0"))
    error = await fails(pki, "update", "revoke", {"serial_number": serial})
    assert "to its own CRL is not allowed" in error.errors[0]


async def test_cert_read_and_list(pki: PkiBackend) -> None:
    data = await issue(pki)
    serial = str(data["serial_number"])
    read = await call(pki, "read", f"cert/{serial.replace(':', '-')}")
    assert read.data is not None and read.data["certificate"] == data["certificate"]
    assert read.data["revocation_time"] == 0
    keys = (await call(pki, "list", "certs")).data["keys"]  # type: ignore[index]
    assert serial in keys and len(keys) == 2  # the CA and the leaf
    raw = await call(pki, "read", f"cert/{serial}/raw")
    assert raw.content_type == "application/pkix-cert"
    assert x509.load_der_x509_certificate(raw.raw_body or b"").serial_number
    ca = await call(pki, "read", "cert/ca")
    assert ca.data is not None and "BEGIN CERTIFICATE" in ca.data["certificate"]
    assert (await fails(pki, "read", "cert/00-11")).status == 404
    chain_json = await call(pki, "read", "cert/ca_chain")
    assert chain_json.data is not None and "BEGIN CERTIFICATE" in chain_json.data["certificate"]
    chain = await call(pki, "read", "ca_chain")
    assert chain.raw_body is not None and chain.raw_body.count(b"BEGIN CERTIFICATE") == 1
    der = await call(pki, "read", "ca")
    assert der.content_type == "application/pkix-cert"


async def test_sign_csr(pki: PkiBackend) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc.example.com")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("alt.example.com")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    response = await call(
        pki, "update", "sign/web", {"csr": pem, "common_name": "ignored.example.com"}
    )
    assert response.data is not None and "private_key" not in response.data
    cert = x509.load_pem_x509_certificate(str(response.data["certificate"]).encode())
    cert.verify_directly_issued_by(await ca_cert(pki))
    assert cert.public_key() == key.public_key()
    assert sans(cert)[0] == ["svc.example.com", "alt.example.com"]

    bad = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil.org")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    assert "not allowed" in (await fails(pki, "update", "sign/web", {"csr": bad})).errors[0]
    assert (await fails(pki, "update", "sign/web", {"csr": "garbage"})).status == 400


async def test_tidy_removes_expired(pki: PkiBackend, clock: FakeClock) -> None:
    data = await issue(pki, ttl="1h")
    await call(pki, "update", "revoke", {"serial_number": data["serial_number"]})
    clock.advance(4 * DAY)
    response = await call(
        pki, "update", "tidy", {"tidy_cert_store": True, "tidy_revoked_certs": True}
    )
    assert response.status == 202
    keys = (await call(pki, "list", "certs")).data["keys"]  # type: ignore[index]
    assert str(data["serial_number"]) not in keys
    assert (await fails(pki, "list", "certs/revoked")).status == 404


async def test_urls_go_into_certificates(pki: PkiBackend) -> None:
    await call(
        pki,
        "update",
        "config/urls",
        {
            "issuing_certificates": "http://127.0.0.1:8200/v1/pki/ca",
            "crl_distribution_points": ["http://127.0.0.1:8200/v1/pki/crl"],
        },
    )
    read = await call(pki, "read", "config/urls")
    assert read.data is not None and read.data["crl_distribution_points"] == [
        "http://127.0.0.1:8200/v1/pki/crl"
    ]
    cert = x509.load_pem_x509_certificate(str((await issue(pki))["certificate"]).encode())
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == "http://127.0.0.1:8200/v1/pki/crl"  # type: ignore[index]
    bad = await fails(pki, "update", "config/urls", {"ocsp_servers": "javascript:alert(1)"})
    assert bad.status == 400


async def test_mutual_tls_handshake_with_issued_certs(pki: PkiBackend, tmp_path: Path) -> None:
    """A server and a client, each with a certificate from this CA, complete mutual TLS."""
    server = await issue(pki, common_name="www.example.com", ip_sans="127.0.0.1")
    client = await issue(pki, common_name="client.example.com")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(str(server["issuing_ca"]))

    def context(purpose: ssl.Purpose, name: str, data: dict[str, object]) -> ssl.SSLContext:
        (tmp_path / f"{name}.crt").write_text(str(data["certificate"]))
        (tmp_path / f"{name}.key").write_text(str(data["private_key"]))
        ctx = ssl.create_default_context(purpose, cafile=str(ca_file))
        ctx.load_cert_chain(tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        return ctx

    server_ctx = context(ssl.Purpose.CLIENT_AUTH, "server", server)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = context(ssl.Purpose.SERVER_AUTH, "client", client)
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        seen.append(dict(x[0] for x in peer["subject"])["commonName"])
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="www.example.com"
        )
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"
        writer.close()
        # The client refuses the server when it expected another host name.
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="evil.org"
            )
    finally:
        listener.close()
        await listener.wait_closed()
    assert seen == ["client.example.com"]


@pytest.mark.parametrize(
    ("operation", "path", "status"),
    [
        ("read", "nothing", 404),
        ("update", "root/generate/kms", 404),
        ("read", "issue/web", 405),
        ("update", "roles/bad name", 404),
        ("update", "issue/missing", 400),
    ],
)
async def test_unknown_paths(pki: PkiBackend, operation: str, path: str, status: int) -> None:
    assert (await fails(pki, operation, path, {"common_name": "a.example.com"})).status == status


async def test_subject_limits_are_400s(pki: PkiBackend) -> None:
    await call(
        pki,
        "create",
        "roles/any",
        {"allow_any_name": True, "enforce_hostnames": False, "key_type": "ec"},
    )
    error = await fails(pki, "update", "issue/any", {"common_name": "n" * 65})
    assert error.status == 400 and "invalid subject" in error.errors[0]


async def test_root_ttl_is_clamped_to_mount_max(clock: FakeClock) -> None:
    backend = PkiBackend(MemStorage(), mount("pki/", "pki"), clock=clock)
    response = await call(
        backend,
        "update",
        "root/generate/internal",
        {"common_name": "R", "ttl": "87600h", "key_type": "ec"},
    )
    assert response.warnings and "maxTTL is being used" in response.warnings[0]
    assert response.data is not None
    assert abs(response.data["expiration"] - (clock.now_ns / 1e9 + 32 * DAY)) < 5
