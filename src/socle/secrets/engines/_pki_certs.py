"""X.509 building blocks for the PKI engine, on ``cryptography.x509``.

Key generation, the root CA certificate, leaf certificates (from a generated key or a CSR)
and CRLs, plus the serial-number and PEM conventions Vault clients expect: serials print
as lowercase colon-separated hex (``39:dd:2e:...``) and are stored with hyphens.
No I/O here; the engine decides what to store.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

RSA_BITS = (2048, 3072, 4096, 8192)
EC_CURVES: dict[int, ec.EllipticCurve] = {
    224: ec.SECP224R1(),
    256: ec.SECP256R1(),
    384: ec.SECP384R1(),
    521: ec.SECP521R1(),
}
DEFAULT_BITS = {"rsa": 2048, "ec": 256, "ed25519": 0}


class CertError(Exception):
    """Bad certificate parameters, worded for the API caller (answered as 400)."""


def normalize_key(key_type: str, key_bits: int) -> tuple[str, int]:
    """Validate a (key_type, key_bits) pair; 0 bits means the type's default."""
    if key_type not in DEFAULT_BITS:
        raise CertError(f"unknown key type {key_type[:32]}")
    bits = key_bits or DEFAULT_BITS[key_type]
    if key_type == "rsa" and bits not in RSA_BITS:
        raise CertError(f"unsupported bit length for RSA key: {bits}")
    if key_type == "ec" and bits not in EC_CURVES:
        raise CertError(f"unsupported bit length for EC key: {bits}")
    if key_type == "ed25519":
        bits = 0
    return key_type, bits


def generate_key(key_type: str, key_bits: int) -> PrivateKey:
    key_type, bits = normalize_key(key_type, key_bits)
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if key_type == "ec":
        return ec.generate_private_key(EC_CURVES[bits])
    return ed25519.Ed25519PrivateKey.generate()


def key_type_of(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ec"
    return "ed25519"


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384() if key.curve.key_size == 384 else hashes.SHA512()
    return hashes.SHA256()


def private_key_pem(key: PrivateKey, form: str = "") -> str:
    """Vault's default: PKCS#1 for RSA, SEC1 for EC; ``pkcs8`` on request (ed25519 always)."""
    if form == "pkcs8" or isinstance(key, ed25519.Ed25519PrivateKey):
        fmt = serialization.PrivateFormat.PKCS8
    else:
        fmt = serialization.PrivateFormat.TraditionalOpenSSL
    pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    return pem.decode().strip()


def load_private_key(pem: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise CertError("unsupported CA key type")
    return key


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode().strip()


def colon_serial(number: int) -> str:
    raw = number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")
    return ":".join(f"{byte:02x}" for byte in raw)


def normalize_serial(text: str) -> str:
    """Storage form of a serial given with colons, hyphens, or either case."""
    return text.strip().lower().replace(":", "-")


class Issuer:
    """A mount's CA as stored: its certificate and private key (``ca`` in storage)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.cert = x509.load_pem_x509_certificate(raw["certificate"].encode())
        self.key: PrivateKey = load_private_key(raw["private_key"])
        self.pem = cert_pem(self.cert)
        self.serial = normalize_serial(colon_serial(self.cert.serial_number))
        self.parents = [x509.load_pem_x509_certificate(p.encode()) for p in raw.get("chain", [])]
        """The certificates above this CA, nearest first (empty for a root)."""

    @property
    def chain(self) -> list[x509.Certificate]:
        """This CA and every certificate above it: what a client needs to reach a root."""
        return [self.cert, *self.parents]

    @property
    def not_after(self) -> float:
        return self.cert.not_valid_after_utc.timestamp()


@dataclass
class Subject:
    common_name: str
    organization: Sequence[str] = ()
    ou: Sequence[str] = ()
    country: Sequence[str] = ()

    def name(self) -> x509.Name:
        """The X.509 name; a value X.509 cannot hold (a 65-character CN) is a 400."""
        fields = [
            *((NameOID.COUNTRY_NAME, v) for v in self.country),
            *((NameOID.ORGANIZATION_NAME, v) for v in self.organization),
            *((NameOID.ORGANIZATIONAL_UNIT_NAME, v) for v in self.ou),
        ]
        if self.common_name:
            fields.append((NameOID.COMMON_NAME, self.common_name))
        try:
            return x509.Name([x509.NameAttribute(oid, value) for oid, value in fields])
        except ValueError as exc:
            raise CertError(f"invalid subject: {exc}") from None


@dataclass
class Urls:
    issuing_certificates: list[str] = field(default_factory=list)
    crl_distribution_points: list[str] = field(default_factory=list)
    ocsp_servers: list[str] = field(default_factory=list)


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC)


def build_root(
    key: PrivateKey,
    subject: Subject,
    now: float,
    ttl: float,
    max_path_length: int = -1,
    urls: Urls | None = None,
) -> x509.Certificate:
    name = subject.name()
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - 30))
        .not_valid_after(_utc(now + ttl))
        .add_extension(
            x509.BasicConstraints(
                ca=True, path_length=None if max_path_length < 0 else max_path_length
            ),
            critical=True,
        )
        .add_extension(_key_usage(digital_signature=True, cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    builder = _add_urls(builder, urls)
    return builder.sign(key, signature_hash(key))


def build_csr(key: PrivateKey, subject: Subject) -> x509.CertificateSigningRequest:
    """An intermediate CA's request: its name and key, asking to be a CA."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject.name())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, signature_hash(key))
    )


def sign_intermediate(
    public: PublicKey,
    name: x509.Name,
    issuer: Issuer,
    not_before: float,
    not_after: float,
    max_path_length: int,
    urls: Urls | None = None,
) -> x509.Certificate:
    """A CA certificate for ``public`` signed by ``issuer`` (``root/sign-intermediate``).

    The path length is the one asked, else one less than the issuer's (a CA cannot allow
    more below it than it is allowed itself)."""
    parent = issuer.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if parent.path_length == 0:
        raise CertError("the issuing CA has a path length of 0: it cannot sign another CA")
    allowed = None if parent.path_length is None else parent.path_length - 1
    length = allowed if max_path_length < 0 else max_path_length
    if allowed is not None and length is not None and length > allowed:
        length = allowed
    ca_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(x509.BasicConstraints(ca=True, path_length=length), critical=True)
        .add_extension(_key_usage(digital_signature=True, cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    builder = _add_urls(builder, urls)
    return builder.sign(issuer.key, signature_hash(issuer.key))


@dataclass
class LeafRequest:
    subject: Subject
    public_key: PublicKey
    dns_names: list[str]
    ip_addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address]
    emails: list[str]
    not_before: float
    not_after: float
    server: bool = True
    client: bool = True
    key_usage: Sequence[str] = ("DigitalSignature", "KeyAgreement", "KeyEncipherment")


def issue_leaf(
    request: LeafRequest, ca_cert: x509.Certificate, ca_key: PrivateKey, urls: Urls | None = None
) -> x509.Certificate:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(request.subject.name())
        .issuer_name(ca_cert.subject)
        .public_key(request.public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(request.not_before))
        .not_valid_after(_utc(request.not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(request.key_usage), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(request.public_key), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    usages = []
    if request.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if request.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in request.dns_names]
    sans += [x509.IPAddress(ip) for ip in request.ip_addresses]
    sans += [x509.RFC822Name(e) for e in request.emails]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    builder = _add_urls(builder, urls)
    return builder.sign(ca_key, signature_hash(ca_key))


def build_crl(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    revoked: Sequence[tuple[int, float]],
    now: float,
    expiry: float,
    number: int,
) -> x509.CertificateRevocationList:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(_utc(now))
        .next_update(_utc(now + expiry))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(_utc(when))
            .build()
        )
    return builder.sign(ca_key, signature_hash(ca_key))


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


LEAF_KEY_USAGES = {
    "digitalsignature": "digital_signature",
    "contentcommitment": "content_commitment",
    "keyencipherment": "key_encipherment",
    "dataencipherment": "data_encipherment",
    "keyagreement": "key_agreement",
}


def _leaf_key_usage(names: Sequence[str]) -> x509.KeyUsage:
    flags = dict.fromkeys(LEAF_KEY_USAGES.values(), False)
    for name in names:
        flag = LEAF_KEY_USAGES.get(name.lower())
        if flag is None:
            raise CertError(f"unsupported key usage {name[:32]}")
        flags[flag] = True
    return x509.KeyUsage(
        key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False, **flags
    )


def _add_urls(builder: x509.CertificateBuilder, urls: Urls | None) -> x509.CertificateBuilder:
    if urls is None:
        return builder
    access: list[x509.AccessDescription] = []
    for url in urls.ocsp_servers:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url)
            )
        )
    for url in urls.issuing_certificates:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url)
            )
        )
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    if urls.crl_distribution_points:
        points = [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
            for url in urls.crl_distribution_points
        ]
        builder = builder.add_extension(x509.CRLDistributionPoints(points), critical=False)
    return builder
