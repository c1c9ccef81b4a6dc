"""The HCL subset parser and policy documents: good files, and errors with line numbers."""

from __future__ import annotations

import pytest

from socle.secrets.core import hcl
from socle.secrets.core.policy import (
    CREATE,
    DELETE,
    DENY,
    LIST,
    READ,
    SUDO,
    UPDATE,
    PolicyError,
    parse_policy,
)

GOOD = """
# A comment
// another comment
/* a block
   comment */
path "secret/data/*" {
  capabilities = ["read", "list",]
}

path "secret/data/admin" { capabilities = ["deny"] }

path "sys/mounts/*" {
    policy = "write"   # legacy shorthand
}

path "transit/encrypt/+" {
  capabilities = ["update"]
  allowed_parameters = {
    "plaintext" = []
    "context"   = ["a", "b*"]
  }
  denied_parameters = { "key_version" = [] }
  required_parameters = ["plaintext"]
}
"""


def test_parses_a_realistic_policy() -> None:
    policy = parse_policy("app", GOOD)
    rules = {r.pattern: r for r in policy.rules}
    assert rules["secret/data/*"].caps == READ | LIST
    assert rules["secret/data/admin"].caps == DENY
    assert rules["sys/mounts/*"].caps == CREATE | READ | UPDATE | DELETE | LIST
    transit = rules["transit/encrypt/+"]
    assert transit.allowed == {"plaintext": (), "context": ("a", "b*")}
    assert transit.denied == {"key_version": ()}
    assert transit.required == ("plaintext",)
    assert policy.raw == GOOD


def test_legacy_sudo_and_escapes() -> None:
    policy = parse_policy("x", 'path "a\\"b" { policy = "sudo" }')
    assert policy.rules[0].pattern == 'a"b'
    assert policy.rules[0].caps & SUDO


def test_json_form() -> None:
    policy = parse_policy(
        "j", '{"path": {"secret/*": {"capabilities": ["read"]}, "sys/x": {"policy": "deny"}}}'
    )
    assert {r.pattern: r.caps for r in policy.rules} == {"secret/*": READ, "sys/x": DENY}


def test_deny_swallows_other_capabilities() -> None:
    policy = parse_policy("d", 'path "a" { capabilities = ["read", "deny"] }')
    assert policy.rules[0].caps == DENY


def test_ignored_keys_warn() -> None:
    policy = parse_policy("w", 'path "a" {\n capabilities = ["read"]\n min_wrapping_ttl = "1s"\n}')
    assert policy.warnings and "line 3" in policy.warnings[0]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('path "a" {\n  capabilities = ["read"\n}\n', 3, "expected ',' or ']'"),
        ('path "a" {\n  capabilities = ["fly"]\n}', 2, "invalid capability 'fly'"),
        ('\n\npath "a" {\n  capabilities = ["read"]\n', 3, "unclosed '{'"),
        ('path "a" {\n  colour = "red"\n}', 2, "invalid key 'colour'"),
        ('\nfoo "a" { capabilities = ["read"] }', 2, "invalid key 'foo'"),
        ('path "a" {\n\n  capabilities = ["read]\n}', 3, "unterminated string"),
        ("/* never closed\n\n", 1, "unterminated /* comment"),
        ('path "a" {\n policy = "fly"\n}', 2, "policy must be one of"),
        ('path "a" {\n}', 1, "no capabilities"),
        ('path {\n capabilities = ["read"]\n}', 1, 'expected path "<pattern>"'),
        ('path "a" { capabilities = "read" }', 1, "must be a list"),
        ('path "a" {\n capabilities = ["read"]\n} $', 3, "unexpected character '$'"),
        ('path "a" {\n x = <<EOF\nhi\nEOF\n}', 2, "heredoc"),
    ],
)
def test_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("bad", text)
    message = str(caught.value)
    assert f"line {line}" in message, message
    assert words in message, message


def test_json_errors_have_line_numbers() -> None:
    with pytest.raises(PolicyError, match="line 2"):
        parse_policy("bad", '{"path":\n  {"a": [}}')


def test_hcl_generic_values() -> None:
    body = hcl.parse('a = 1\nb = -2.5\nc = true\nd = [1, "x", false]\ne = { f = "g" }\n')
    values = {item.key: item.value for item in body.items}
    assert values["a"] == 1 and values["b"] == -2.5 and values["c"] is True
    assert values["d"] == [1, "x", False]
    inner = values["e"]
    assert isinstance(inner, hcl.Body) and inner.items[0].value == "g"
