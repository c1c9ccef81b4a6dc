"""Hostile request paths are refused, never "cleaned" into something else."""

from __future__ import annotations

import pytest

from socle.secrets.backend import SecretsError
from socle.secrets.core.paths import api_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/v1/secret/data/app", "secret/data/app"),
        (b"/secret/data/app", "secret/data/app"),
        (b"/v1/secret/metadata/", "secret/metadata/"),
        (b"/v1/secret/data/a%20b", "secret/data/a b"),
        (b"/v1/secret/data/a.b", "secret/data/a.b"),
        (b"/v1/secret/data/a%2eb", "secret/data/a.b"),
        (b"/v1/Secret/Data/App", "Secret/Data/App"),
        (b"/v1/secret/data/caf%C3%A9", "secret/data/caf\u00e9"),
    ],
)
def test_accepted_paths(raw: bytes, expected: str) -> None:
    assert api_path(raw, "") == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1/secret/../sys/seal",
        b"/v1/secret/data/..",
        b"/v1/./secret",
        b"/v1/secret//data",
        b"/v1//secret",
        b"/v1/secret/%2e%2e/sys",
        b"/v1/secret/%2E%2E/sys",
        b"/v1/secret/%2e/x",
        b"/v1/secret%2fdata/x",
        b"/v1/secret%2Fdata/x",
        b"/v1/secret%5cdata",
        b"/v1/secret/%00",
        b"/v1/secret/a%0ab",
        b"/v1/secret/%zz",
        b"/v1/secret/%2",
        b"/v1/secret/%ff",
    ],
)
def test_refused_paths(raw: bytes) -> None:
    with pytest.raises(SecretsError) as caught:
        api_path(raw, "")
    assert caught.value.status == 400


def test_decoded_path_without_raw_path_is_checked_too() -> None:
    with pytest.raises(SecretsError):
        api_path(None, "/v1/secret/../x")
    assert api_path(None, "/v1/secret/x") == "secret/x"
