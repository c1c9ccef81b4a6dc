"""The Source kind refuses what could be read as an option, escape the repository or hold
a credential in the manifest."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from socle.model.source import Source


def source(**spec: Any) -> dict[str, Any]:
    base = {"repo": "https://git.example/platform.git", "branch": "main", "env": "dev"}
    return {"apiVersion": "socle/v1", "kind": "Source", "metadata": {"name": "platform"},
            "spec": {**base, **spec}}  # fmt: skip


def test_defaults() -> None:
    spec = Source.model_validate(source()).spec
    assert (spec.path, spec.auto_sync, spec.prune, spec.self_heal, spec.interval) == (
        ".", True, False, False, 60.0,
    )  # fmt: skip
    assert Source.model_validate(source(path="deploy/./apps/")).spec.path == "deploy/apps"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"repo": "--upload-pack=touch /tmp/x"}, "invalid repository"),
        ({"repo": "https://x/\nevil"}, "control"),
        ({"branch": "-x"}, "invalid git ref"),
        ({"branch": "a..b"}, "invalid git ref"),
        ({"branch": None}, "exactly one of branch or ref"),
        ({"ref": "v1"}, "exactly one of branch or ref"),
        ({"path": "../outside"}, "invalid path"),
        ({"path": "/abs"}, "invalid path"),
        ({"env": "Prod"}, "invalid environment"),
        ({"interval": "0s"}, "at least 1s"),
        ({"credentials": "secret/../sys"}, "invalid secrets path"),
        ({"token": "abc"}, "Extra inputs"),
    ],
)
def test_refused(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Source.model_validate(source(**spec))


SSH_LINE = "dev@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDq2xJ8iXlOm8vZ5v6r1oF5lE2m3n4p5q6r7s8t9u0v1"
GPG_BLOCK = (
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ0abcdYJKwYBBAHaRw8BAQdA\n=ab12\n"
    "-----END PGP PUBLIC KEY BLOCK-----\n"
)


def test_signing_keys_and_allowed_signers() -> None:
    assert not Source.model_validate(source()).spec.signed_commits
    spec = Source.model_validate(source(signingKeys=[GPG_BLOCK], allowedSigners=[SSH_LINE])).spec
    assert spec.signed_commits
    assert spec.signing_keys == [GPG_BLOCK.strip()] and spec.allowed_signers == [SSH_LINE]
    with_options = f'dev@example.com namespaces="git" {SSH_LINE.split(" ", 1)[1]}'
    assert Source.model_validate(source(allowedSigners=[with_options])).spec.signed_commits


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"signingKeys": ["not a key"]}, "signing key 1 is not one ASCII-armored"),
        (
            {"signingKeys": [GPG_BLOCK.replace("PUBLIC", "PRIVATE")]},
            "signing key 1 is not one ASCII-armored",
        ),
        ({"signingKeys": [GPG_BLOCK + GPG_BLOCK]}, "signing key 1"),
        ({"allowedSigners": ["ssh-ed25519 AAAA"]}, "allowed signer 1 is not"),
        ({"allowedSigners": [SSH_LINE + "\nevil ssh-rsa AAAA"]}, "allowed signer 1 is not"),
        ({"allowedSigners": ["dev@x ssh-dss AAAA"]}, "allowed signer 1 is not"),
        ({"allowedSigners": [SSH_LINE + " \x1b[2J"]}, "control"),
    ],
)
def test_bad_signing_settings_are_refused(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Source.model_validate(source(**spec))
