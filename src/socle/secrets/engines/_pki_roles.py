"""PKI roles: what a role allows, and the name checks issuance runs against it.

The checks follow Vault's documented role semantics (``allowed_domains`` with
``allow_bare_domains``, ``allow_subdomains``, ``allow_glob_domains``, ``allow_localhost``,
``allow_any_name``, ``enforce_hostnames``, wildcards in the left-most label only) and its
error wording, e.g. ``common name x not allowed by this role``. Pure functions of data so
that the table of allowed and refused names is tested without any certificate work.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from socle.secrets.engines._params import get_bool, get_duration, get_int, get_str, get_str_list
from socle.secrets.engines._pki_certs import CertError, normalize_key

_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
HOSTNAME = re.compile(rf"^(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}\.?$")
LEFT_WILDCARD_LABEL = re.compile(rf"^(?:\*|\*{_LABEL}|{_LABEL}\*|{_LABEL}\*{_LABEL})$")


# Role fields Socle does not implement, answered with Vault's defaults so a role reads the
# same as on Vault/OpenBao. Each default is the behaviour Socle has (e.g. no PSS, no other
# SANs, no code-signing flag, no issuer other than the mount's one).
_FIXED_FIELDS: dict[str, Any] = {
    "allow_globs_in_identity_templates": False,
    "allow_token_displayname": False,
    "allowed_domains_template": False,
    "allowed_ip_sans_cidr": [],
    "allowed_other_sans": [],
    "allowed_serial_numbers": [],
    "allowed_uri_sans": [],
    "allowed_uri_sans_template": False,
    "allowed_user_ids": [],
    "basic_constraints_valid_for_non_ca": False,
    "cn_validations": ["email", "hostname"],
    "code_signing_flag": False,
    "email_protection_flag": False,
    "ext_key_usage": [],
    "ext_key_usage_oids": [],
    "generate_lease": False,
    "issuer_ref": "default",
    "locality": [],
    "not_after": "",
    "not_after_bound": "permit",
    "not_before": "",
    "not_before_bound": "permit",
    "policy_identifiers": [],
    "postal_code": [],
    "province": [],
    "signature_bits": 0,
    "street_address": [],
    "use_pss": False,
}


@dataclass
class PkiRole:
    ttl: float = 0.0
    max_ttl: float = 0.0
    allow_localhost: bool = True
    allowed_domains: list[str] = field(default_factory=list)
    allow_bare_domains: bool = False
    allow_subdomains: bool = False
    allow_glob_domains: bool = False
    allow_wildcard_certificates: bool = True
    allow_any_name: bool = False
    enforce_hostnames: bool = True
    allow_ip_sans: bool = True
    server_flag: bool = True
    client_flag: bool = True
    key_type: str = "rsa"
    key_bits: int = 2048
    key_usage: list[str] = field(
        default_factory=lambda: ["DigitalSignature", "KeyAgreement", "KeyEncipherment"]
    )
    use_csr_common_name: bool = True
    use_csr_sans: bool = True
    require_cn: bool = True
    organization: list[str] = field(default_factory=list)
    ou: list[str] = field(default_factory=list)
    country: list[str] = field(default_factory=list)
    no_store: bool = False
    not_before_duration: float = 30.0

    @classmethod
    def from_request(cls, data: dict[str, Any], current: PkiRole | None = None) -> PkiRole:
        """A role from a write; fields left out keep their current (or default) value."""
        role = PkiRole(**asdict(current)) if current is not None else PkiRole()
        for name in ("ttl", "max_ttl", "not_before_duration"):
            if name in data:
                setattr(role, name, get_duration(data, name))
        for name, value in asdict(role).items():
            if isinstance(value, bool) and name in data:
                setattr(role, name, get_bool(data, name))
        for name in ("allowed_domains", "key_usage", "organization", "ou", "country"):
            items = get_str_list(data, name)
            if items is not None:
                setattr(role, name, items)
        key_type = get_str(data, "key_type", role.key_type) or "rsa"
        key_bits = get_int(data, "key_bits", 0 if "key_type" in data else role.key_bits)
        if key_type != "any":
            try:
                key_type, key_bits = normalize_key(key_type, key_bits)
            except CertError as exc:
                raise ValueError(str(exc)) from None
        role.key_type, role.key_bits = key_type, key_bits
        if role.max_ttl and role.ttl > role.max_ttl:
            raise ValueError('"ttl" value must be less than "max_ttl" value')
        return role

    def describe(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            k: list(v) if isinstance(v, list) else v for k, v in _FIXED_FIELDS.items()
        }
        data.update(asdict(self))
        for name in ("ttl", "max_ttl", "not_before_duration"):
            data[name] = int(data[name])
        return data

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PkiRole:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _to_ascii(name: str) -> str | None:
    """IDNA form of a host name, or ``None`` when it cannot be one (bad label, too long)."""
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _glob(pattern: str, name: str) -> bool:
    """Glob where ``*`` matches any run of characters (including dots), like go-glob."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, name, re.DOTALL) is not None


def bad_name(role: PkiRole, name: str) -> bool:
    """Whether ``name`` (a host name, wildcard or e-mail) is refused by the role."""
    reduced = name
    email_domain = ""
    is_email = "@" in name
    wildcard_label = ""
    if is_email:
        parts = name.split("@")
        if len(parts) != 2:
            return True
        reduced = email_domain = parts[1]
    is_wildcard = "*" in reduced
    if is_wildcard:
        if not role.allow_wildcard_certificates or reduced.count("*") > 1 or is_email:
            return True
        wildcard_label, _, reduced = reduced.partition(".")
        if "*" in reduced:
            return True
    if role.enforce_hostnames:
        if reduced:
            converted = _to_ascii(reduced)
            if converted is None or not HOSTNAME.match(converted):
                return True
        if is_wildcard and not LEFT_WILDCARD_LABEL.match(wildcard_label):
            return True
    if role.allow_any_name:
        return False
    lowered = reduced.lower()
    if role.allow_localhost:
        if lowered in ("localhost", "localdomain"):
            return False
        if role.allow_subdomains and (
            lowered.endswith((".localhost", ".localdomain"))
            or (is_wildcard and lowered in ("localhost", "localdomain"))
        ):
            return False
    for domain in role.allowed_domains:
        base = domain.lower()
        if not base:
            continue
        if role.allow_bare_domains and (name.lower() == base or email_domain.lower() == base):
            return False
        if role.allow_subdomains and (
            lowered.endswith("." + base) or (is_wildcard and lowered == base)
        ):
            return False
        if role.allow_glob_domains and "*" in base and _glob(base, name.lower()):
            return False
    return True


def is_hostname(name: str) -> bool:
    converted = _to_ascii(name)
    return converted is not None and HOSTNAME.match(converted) is not None
