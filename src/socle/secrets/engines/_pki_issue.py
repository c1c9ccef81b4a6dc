"""What ``issue/<role>`` and ``sign/<role>`` put in a certificate, decided before signing.

Resolves the subject and alternative names from the request (or the CSR), checks each one
against the role, computes the validity window (role TTLs, mount limits, then the CA's own
expiry) and formats the response. Every refusal happens here, before any key is generated
or anything is stored.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from socle.secrets.backend import SecretsError
from socle.secrets.engines._params import get_bool, get_duration, get_str, get_str_list
from socle.secrets.engines._pki_certs import Subject, cert_pem, colon_serial
from socle.secrets.engines._pki_roles import PkiRole, bad_name, is_hostname
from socle.units import go_duration

MAX_SANS = 1000
"""Far above any real certificate; bounds the work and size of one request."""
CN_REQUIRED = (
    'the common_name field is required, or must be provided in a CSR with "use_csr_common_name" '
    'set to true, unless "require_cn" is set to false'
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class Names:
    subject: Subject
    dns: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    ips: list[IPAddress] = field(default_factory=list)


def _idna(name: str) -> str:
    return name.encode("idna").decode("ascii")


def resolve_names(
    role: PkiRole, data: dict[str, Any], csr: x509.CertificateSigningRequest | None = None
) -> Names:
    """Subject and SANs for the new certificate, every one allowed by the role."""
    common_name = ""
    if csr is not None and role.use_csr_common_name:
        attrs = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        common_name = str(attrs[0].value) if attrs else ""
    common_name = common_name or get_str(data, "common_name")
    if not common_name and role.require_cn:
        raise SecretsError(400, CN_REQUIRED)
    names = Names(
        subject=Subject(common_name, role.organization, role.ou, role.country),
    )
    csr_sans = _csr_sans(csr) if csr is not None and role.use_csr_sans else None
    if common_name and not get_bool(data, "exclude_cn_from_sans"):
        if "@" in common_name:
            names.emails.append(common_name)
        elif is_hostname(common_name):
            names.dns.append(_idna(common_name))
    if csr_sans is not None:
        names.dns += csr_sans.dns
        names.emails += csr_sans.emails
        requested_ips = [str(ip) for ip in csr_sans.ips]
    else:
        for alt in get_str_list(data, "alt_names") or []:
            if "@" in alt:
                names.emails.append(alt)
            elif is_hostname(alt):
                names.dns.append(_idna(alt))
            else:
                raise SecretsError(400, f"subject alternate name {alt} not allowed by this role")
        requested_ips = get_str_list(data, "ip_sans") or []
    if common_name and bad_name(role, common_name):
        raise SecretsError(400, f"common name {common_name} not allowed by this role")
    names.dns = list(dict.fromkeys(names.dns))
    names.emails = list(dict.fromkeys(names.emails))
    if len(names.dns) + len(names.emails) + len(requested_ips) > MAX_SANS:
        raise SecretsError(400, f"too many subject alternative names (at most {MAX_SANS})")
    for dns in names.dns:
        if bad_name(role, dns):
            raise SecretsError(400, f"subject alternate name {dns} not allowed by this role")
    for email in names.emails:
        if bad_name(role, email):
            raise SecretsError(400, f"email address {email} not allowed by this role")
    if requested_ips and not role.allow_ip_sans:
        shown = "[" + " ".join(requested_ips) + "]"
        raise SecretsError(
            400,
            f"IP Subject Alternative Names are not allowed in this role, but was provided {shown}",
        )
    for text in requested_ips:
        try:
            names.ips.append(ipaddress.ip_address(text.strip()))
        except ValueError:
            raise SecretsError(400, f'the value "{text}" is not a valid IP address') from None
    return names


def _csr_sans(csr: x509.CertificateSigningRequest) -> Names:
    found = Names(subject=Subject(""))
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return found
    found.dns = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    found.emails = [str(n) for n in sans.get_values_for_type(x509.RFC822Name)]
    found.ips = [
        ip
        for ip in sans.get_values_for_type(x509.IPAddress)
        if not isinstance(ip, ipaddress.IPv4Network | ipaddress.IPv6Network)
    ]
    return found


def validity(
    role: PkiRole,
    data: dict[str, Any],
    now: float,
    ca_not_after: float,
    mount_default: float,
    mount_max: float,
) -> tuple[float, float, list[str]]:
    """``(not_before, not_after, warnings)``: requested TTL, clamped to limits and the CA."""
    warnings: list[str] = []
    ttl = get_duration(data, "ttl")
    not_after_text = get_str(data, "not_after")
    if ttl and not_after_text:
        raise SecretsError(
            400,
            "Either ttl or not_after should be provided. Both should not be provided in the same request.",
        )
    ttl = ttl or role.ttl or mount_default
    max_ttl = role.max_ttl or mount_max
    if ttl > max_ttl:
        warnings.append(
            f'TTL "{go_duration(ttl)}" is longer than permitted maxTTL "{go_duration(max_ttl)}", '
            "so maxTTL is being used"
        )
        ttl = max_ttl
    not_after = now + ttl
    if not_after_text:
        try:
            not_after = datetime.fromisoformat(not_after_text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise SecretsError(
                400, f"invalid not_after {not_after_text[:40]!r}: expected RFC 3339"
            ) from None
        if not_after > now + max_ttl:
            raise SecretsError(400, "not_after is beyond the permitted maximum TTL")
    if not_after > ca_not_after:
        warnings.append(
            "requested TTL goes beyond the expiration of the CA certificate; "
            "the certificate expires with the CA"
        )
        not_after = ca_not_after
    if not_after <= now:
        raise SecretsError(400, "cannot satisfy request: the certificate would already be expired")
    return now - role.not_before_duration, not_after, warnings


def encode_cert(cert: x509.Certificate, form: str) -> str:
    if form == "der":
        return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    return cert_pem(cert)


def check_format(data: dict[str, Any]) -> str:
    form = get_str(data, "format", "pem") or "pem"
    if form not in ("pem", "der", "pem_bundle"):
        raise SecretsError(400, f'invalid format specified: "{form[:20]}"')
    return form


def certificate_response(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    form: str,
    private_key: tuple[str, str] | None = None,
    parents: Sequence[x509.Certificate] = (),
) -> dict[str, Any]:
    """The ``issue``/``sign`` data block; ``private_key`` is (pem, type) for ``issue``;
    ``parents``: the certificates above the issuing CA (an intermediate's chain)."""
    ca_text = encode_cert(ca_cert, form)
    certificate = encode_cert(cert, form)
    body: dict[str, Any] = {
        "serial_number": colon_serial(cert.serial_number),
        "expiration": int(cert.not_valid_after_utc.timestamp()),
        "not_before": int(cert.not_valid_before_utc.timestamp()),
        "issuing_ca": ca_text,
        "ca_chain": [ca_text, *(encode_cert(p, form) for p in parents)],
    }
    if private_key is not None:
        pem, key_type = private_key
        body["private_key_type"] = key_type
        body["private_key"] = pem
        if form == "der":
            der = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
            body["private_key"] = der
    if form == "pem_bundle":
        parts = [private_key[0]] if private_key is not None else []
        certificate = "\n".join([*parts, certificate, ca_text])
    body["certificate"] = certificate
    return body
