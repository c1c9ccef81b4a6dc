"""`socle secrets grant` as pure functions: merging into app-<name>, KV v2 paths, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from socle.cli.secrets_policy import _api_path, _capabilities, merge_grant, render_policy
from socle.errors import ConfigError
from socle.secrets.core.policy import LIST, READ, UPDATE, parse_policy

MOUNTS: dict[str, Any] = {
    "secret/": {"type": "kv", "options": {"version": "2"}},
    "kv1/": {"type": "kv", "options": {"version": "1"}},
    "transit/": {"type": "transit", "options": None},
}


def caps(text: str) -> dict[str, int]:
    return {rule.pattern: rule.caps for rule in parse_policy("p", text).rules}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("secret/data/db", "secret/data/db"),
        ("secret/db", "secret/data/db"),
        ("secret/db#password", "secret/data/db"),
        ("/secret/team/api/", "secret/data/team/api"),
        ("secret/metadata/db", "secret/metadata/db"),
        ("secret/team/*", "secret/data/team/*"),
        ("kv1/db", "kv1/db"),
        ("transit/keys/k", "transit/keys/k"),
        ("unknown/db", "unknown/db"),
    ],
)
def test_paths_are_spelt_as_the_acl_sees_them(given: str, expected: str) -> None:
    assert _api_path(given, MOUNTS) == expected


def test_without_the_mount_table_paths_are_kept() -> None:
    assert _api_path("secret/db#k", None) == "secret/db"


@pytest.mark.parametrize("bad", ["", "#key", "secret/../sys", "secret//db", "secret/*/db", "./x"])
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="secret path"):
        _api_path(bad, MOUNTS)


def test_capabilities_default_to_read_and_accept_lists() -> None:
    assert _capabilities(()) == ["read"]
    assert _capabilities(("read,list", "update", "READ")) == ["read", "list", "update"]


@pytest.mark.parametrize("bad", ["reed", "deny", "read,,", "root"])
def test_unknown_capabilities_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="capability"):
        _capabilities((bad,))


def test_grant_creates_the_policy() -> None:
    text = merge_grant("app-web", None, ["secret/data/db"], ["read"])
    assert caps(text) == {"secret/data/db": READ}


def test_grant_merges_with_what_is_there() -> None:
    existing = (
        'path "secret/data/db" { capabilities = ["read"] }\n'
        'path "secret/data/other" {\n'
        '  capabilities = ["read", "update"]\n'
        '  allowed_parameters = { "k" = ["a", "b"] }\n'
        "}\n"
    )
    text = merge_grant("app-web", existing, ["secret/data/db", "secret/data/new"], ["list"])
    assert caps(text) == {
        "secret/data/db": READ | LIST,
        "secret/data/other": READ | UPDATE,
        "secret/data/new": LIST,
    }
    other = next(r for r in parse_policy("p", text).rules if r.pattern == "secret/data/other")
    assert other.allowed == {"k": ("a", "b")}  # what grant does not touch is kept


def test_grant_twice_changes_nothing() -> None:
    once = merge_grant("app-web", None, ["secret/data/db"], ["read"])
    assert merge_grant("app-web", once, ["secret/data/db"], ["read"]) == once


def test_grant_never_turns_a_deny_into_an_allow() -> None:
    existing = 'path "secret/data/db" { capabilities = ["deny"] }'
    with pytest.raises(ConfigError, match="denies secret/data/db"):
        merge_grant("app-web", existing, ["secret/data/db"], ["read"])


def test_a_policy_that_cannot_be_parsed_is_not_overwritten() -> None:
    with pytest.raises(ConfigError, match="line 1"):
        merge_grant("app-web", 'path "x" { capabilities = ["reed"] }', ["secret/data/db"], ["read"])


def test_rendered_strings_are_quoted() -> None:
    text = render_policy(
        "p", [parse_policy("p", 'path "a\\"b" { capabilities = ["read"] }').rules[0]]
    )
    assert caps(text) == {'a"b': READ}


@pytest.mark.parametrize(
    ("existing", "granted"),
    [
        ('path "secret/data/*" { capabilities = ["deny"] }', "secret/data/db"),
        ('path "secret/*" { capabilities = ["deny"] }', "secret/data/app/*"),
        ('path "secret/data/+/db" { capabilities = ["deny"] }', "secret/data/prod/db"),
    ],
)
def test_grant_never_lifts_a_wider_deny(existing: str, granted: str) -> None:
    """A more specific rule beats a glob in Vault's ACLs: granting an exact path under a
    denied glob would allow what the policy denies."""
    with pytest.raises(ConfigError, match=f"denies {granted}"):
        merge_grant("app-web", existing, [granted], ["read"])


def test_grant_beside_a_deny_elsewhere_is_fine() -> None:
    existing = 'path "secret/data/admin/*" { capabilities = ["deny"] }'
    text = merge_grant("app-web", existing, ["secret/data/db"], ["read"])
    assert "secret/data/admin/*" in text and '"secret/data/db"' in text
