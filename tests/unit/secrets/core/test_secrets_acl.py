"""ACL decisions: a table of paths and what each policy set may do there."""

from __future__ import annotations

import pytest

from socle.secrets.backend import Operation
from socle.secrets.core.policy import ACL, parse_policy

R, L, C, U, D = Operation.READ, Operation.LIST, Operation.CREATE, Operation.UPDATE, Operation.DELETE

POLICY = """
path "secret/*"                 { capabilities = ["read", "list"] }
path "secret/data/team/*"       { capabilities = ["create", "read", "update"] }
path "secret/data/team/admin"   { capabilities = ["deny"] }
path "secret/data/+/config"     { capabilities = ["read", "update"] }
path "secret/data/+/+/deep"     { capabilities = ["delete"] }
path "exact/path"               { capabilities = ["read"] }
path "prefix/foo*"              { capabilities = ["read"] }
path "prefix/*"                 { capabilities = ["update"] }
path "sys/mounts"               { capabilities = ["read"] }
path "denied/*"                 { capabilities = ["deny"] }
path "denied/but/allowed"       { capabilities = ["read"] }
path "list/exact"               { capabilities = ["list"] }
"""

CASES = [
    # (path, operation, allowed)
    ("secret/data/app", R, True),
    ("secret/data/app", U, False),
    ("secret/metadata/", L, True),
    ("secret/data/team/x", U, True),  # the longer glob wins over secret/*
    ("secret/data/team/x", D, False),
    ("secret/data/team/admin", R, False),  # exact deny beats every glob
    ("secret/data/team/admin/", R, False),  # trailing slash cannot step around the deny
    ("secret/data/team/admin2", R, True),
    ("secret/data/web/config", U, True),  # '+' matches one segment
    ("secret/data/web/config", D, False),
    ("secret/data/a/b/config", U, False),  # '+' never matches two segments: secret/* applies
    ("secret/data/a/b/config", R, True),
    ("secret/data/a/b/deep", D, True),
    ("exact/path", R, True),
    ("exact/path/", R, False),
    ("exact/pathx", R, False),
    ("exact", R, False),
    ("EXACT/path", R, False),  # case-sensitive
    ("prefix/foobar", R, True),  # prefix/foo* is more specific than prefix/*
    ("prefix/foobar", U, False),
    ("prefix/other", U, True),
    ("prefix/other", R, False),
    ("sys/mounts", R, True),
    ("sys/mounts/kv", R, False),
    ("denied/x", R, False),
    ("denied/but/allowed", R, True),  # exact beats the glob deny
    ("list/exact/", L, True),  # LIST on "x/" matches an exact "x" rule
    ("list/exact", R, False),
    ("nothing/here", R, False),  # default deny
    ("", R, False),
]


@pytest.mark.parametrize(("path", "operation", "allowed"), CASES)
def test_acl_table(path: str, operation: Operation, allowed: bool) -> None:
    acl = ACL([parse_policy("p", POLICY)])
    assert acl.allows(path, operation) is allowed


def test_rules_with_the_same_pattern_merge_and_deny_wins() -> None:
    a = parse_policy("a", 'path "kv/x" { capabilities = ["read"] }')
    b = parse_policy("b", 'path "kv/x" { capabilities = ["update"] }')
    c = parse_policy("c", 'path "kv/x" { capabilities = ["deny"] }')
    assert ACL([a, b]).allows("kv/x", R) and ACL([a, b]).allows("kv/x", U)
    assert not ACL([a, b, c]).allows("kv/x", R)


def test_priority_rules_from_vaults_documentation() -> None:
    # 1. the first wildcard occurs later -> higher priority
    acl = ACL(
        [
            parse_policy(
                "p",
                'path "a/+/c" { capabilities = ["deny"] }\n'
                'path "a/b/+" { capabilities = ["read"] }',
            )
        ]
    )
    assert acl.allows("a/b/c", R)
    # 2. ending in * is lower priority than not
    acl = ACL(
        [
            parse_policy(
                "p",
                'path "a/+/c*" { capabilities = ["deny"] }\n'
                'path "a/+/c" { capabilities = ["read"] }',
            )
        ]
    )
    assert acl.allows("a/b/c", R)
    # 3. more + segments is lower priority
    acl = ACL(
        [
            parse_policy(
                "p",
                'path "a/+/+/d" { capabilities = ["deny"] }\n'
                'path "a/+/c/d" { capabilities = ["read"] }',
            )
        ]
    )
    assert acl.allows("a/b/c/d", R)
    # 4. shorter is lower priority
    acl = ACL(
        [
            parse_policy(
                "p",
                'path "a/b*" { capabilities = ["deny"] }\npath "a/bc*" { capabilities = ["read"] }',
            )
        ]
    )
    assert acl.allows("a/bcd", R)
    # rule 1 comes first: a later wildcard wins even over a longer, glob-free pattern
    acl = ACL(
        [
            parse_policy(
                "p",
                'path "a/+/ccccc" { capabilities = ["deny"] }\n'
                'path "a/b/*" { capabilities = ["read"] }',
            )
        ]
    )
    assert acl.allows("a/b/ccccc", R)


def test_root_allows_everything_and_sudo() -> None:
    acl = ACL([parse_policy("root", "")])
    assert acl.allows("anything/at/all", D, sudo=True)


def test_sudo_is_required_when_asked() -> None:
    plain = ACL([parse_policy("p", 'path "sys/audit/*" { capabilities = ["update"] }')])
    sudo = ACL([parse_policy("p", 'path "sys/audit/*" { capabilities = ["update", "sudo"] }')])
    assert not plain.allows("sys/audit/file", U, sudo=True)
    assert sudo.allows("sys/audit/file", U, sudo=True)


def test_parameter_constraints() -> None:
    acl = ACL(
        [
            parse_policy(
                "p",
                """
path "transit/encrypt/*" {
  capabilities = ["update"]
  allowed_parameters = { "plaintext" = [] "context" = ["ctx-*"] }
  required_parameters = ["plaintext"]
}
path "kv/*" {
  capabilities = ["create", "update"]
  denied_parameters = { "admin" = [] "role" = ["root"] }
}
""",
            )
        ]
    )
    assert acl.allows("transit/encrypt/k", U, {"plaintext": "x"})
    assert acl.allows("transit/encrypt/k", U, {"plaintext": "x", "context": "ctx-1"})
    assert not acl.allows("transit/encrypt/k", U, {"plaintext": "x", "context": "other"})
    assert not acl.allows("transit/encrypt/k", U, {"plaintext": "x", "extra": 1})
    assert not acl.allows("transit/encrypt/k", U, {"context": "ctx-1"})
    assert acl.allows("kv/a", C, {"role": "user"})
    assert not acl.allows("kv/a", C, {"role": "root"})
    assert not acl.allows("kv/a", C, {"admin": True})


def test_decisions_are_cached_per_path() -> None:
    acl = ACL([parse_policy("p", POLICY)])
    assert acl.allows("secret/data/app", R)
    assert "secret/data/app" in acl._cache
