"""PKI role name checks as a table: which names each kind of role allows."""

from __future__ import annotations

import pytest

from socle.secrets.engines._pki_roles import PkiRole, bad_name

EXAMPLE = {"allowed_domains": ["example.com"]}


def role(**fields: object) -> PkiRole:
    return PkiRole.from_request(dict(fields))


@pytest.mark.parametrize(
    ("fields", "name", "allowed"),
    [
        # allowed_domains alone allows nothing: it needs bare and/or subdomains.
        (EXAMPLE, "example.com", False),
        (EXAMPLE, "www.example.com", False),
        ({**EXAMPLE, "allow_bare_domains": True}, "example.com", True),
        ({**EXAMPLE, "allow_bare_domains": True}, "www.example.com", False),
        ({**EXAMPLE, "allow_subdomains": True}, "www.example.com", True),
        ({**EXAMPLE, "allow_subdomains": True}, "a.b.example.com", True),
        ({**EXAMPLE, "allow_subdomains": True}, "WWW.Example.COM", True),
        ({**EXAMPLE, "allow_subdomains": True}, "example.com", False),
        ({**EXAMPLE, "allow_subdomains": True}, "evilexample.com", False),
        ({**EXAMPLE, "allow_subdomains": True}, "example.com.evil.org", False),
        ({**EXAMPLE, "allow_subdomains": True}, "*.example.com", True),
        ({**EXAMPLE, "allow_subdomains": True}, "*.*.example.com", False),
        ({**EXAMPLE, "allow_subdomains": True}, "www.*.example.com", False),
        (
            {**EXAMPLE, "allow_subdomains": True, "allow_wildcard_certificates": False},
            "*.example.com",
            False,
        ),
        ({**EXAMPLE, "allow_subdomains": True}, "under_score.example.com", False),
        ({**EXAMPLE, "allow_subdomains": True}, "bad name.example.com", False),
        ({**EXAMPLE, "allow_subdomains": True}, ("x" * 64) + ".example.com", False),
        ({**EXAMPLE, "allow_subdomains": True}, "-lead.example.com", False),
        ({**EXAMPLE, "allow_subdomains": True}, "ops@example.com", False),
        ({**EXAMPLE, "allow_subdomains": True}, "ops@mail.example.com", True),
        ({**EXAMPLE, "allow_subdomains": True}, "a@b@example.com", False),
        ({**EXAMPLE, "allow_bare_domains": True}, "ops@example.com", True),
        # Globs: only with allow_glob_domains, and * crosses dots (like Vault's go-glob).
        ({"allowed_domains": ["*.svc"], "allow_glob_domains": True}, "api.ns.svc", True),
        ({"allowed_domains": ["*.svc"]}, "api.svc", False),
        (
            {"allowed_domains": ["web-*.example.com"], "allow_glob_domains": True},
            "web-1.example.com",
            True,
        ),
        (
            {"allowed_domains": ["web-*.example.com"], "allow_glob_domains": True},
            "db-1.example.com",
            False,
        ),
        # localhost is allowed by default, subdomains of it only with allow_subdomains.
        ({}, "localhost", True),
        ({"allow_localhost": False}, "localhost", False),
        ({}, "foo.localhost", False),
        ({"allow_subdomains": True}, "foo.localhost", True),
        # allow_any_name still enforces host names unless told otherwise.
        ({"allow_any_name": True}, "anything.at.all", True),
        ({"allow_any_name": True}, "Not A Hostname", False),
        ({"allow_any_name": True, "enforce_hostnames": False}, "Not A Hostname", True),
        # Internationalized names are checked in their IDNA form.
        (
            {"allowed_domains": ["bücher.example"], "allow_bare_domains": True},
            "bücher.example",
            True,
        ),
        (
            {"allowed_domains": ["example.com"], "allow_subdomains": True},
            "bücher.example.com",
            True,
        ),
        # Hostile strings never pass.
        ({**EXAMPLE, "allow_subdomains": True}, "x.example.com\x00.evil.org", False),
        ({**EXAMPLE, "allow_subdomains": True}, "x'; DROP TABLE certs;--.example.com", False),
        ({**EXAMPLE, "allow_subdomains": True}, "", False),
    ],
)
def test_role_name_table(fields: dict[str, object], name: str, allowed: bool) -> None:
    assert bad_name(role(**fields), name) is (not allowed)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"key_type": "dsa"}, "unknown key type"),
        ({"key_type": "rsa", "key_bits": 1024}, "unsupported bit length for RSA key: 1024"),
        ({"key_type": "ec", "key_bits": 2048}, "unsupported bit length for EC key: 2048"),
        ({"ttl": "2h", "max_ttl": "1h"}, '"ttl" value must be less than "max_ttl" value'),
        ({"allow_subdomains": "perhaps"}, "allow_subdomains"),
        ({"ttl": "forever"}, "ttl"),
        ({"allowed_domains": [{"nested": 1}]}, "allowed_domains"),
    ],
)
def test_role_validation(fields: dict[str, object], message: str) -> None:
    with pytest.raises(Exception, match=message):
        PkiRole.from_request(fields)


def test_role_defaults_and_partial_update() -> None:
    base = PkiRole.from_request({"allowed_domains": "a.com, b.com", "key_type": "ec"})
    assert base.allowed_domains == ["a.com", "b.com"]
    assert (base.key_type, base.key_bits) == ("ec", 256)
    assert base.allow_localhost and base.enforce_hostnames and base.allow_ip_sans
    updated = PkiRole.from_request({"max_ttl": "24h"}, base)
    assert updated.allowed_domains == ["a.com", "b.com"] and updated.max_ttl == 86400
    assert PkiRole.from_json(updated.describe()) == PkiRole.from_request({}, updated)
