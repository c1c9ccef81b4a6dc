"""The dev root token goes only to this home's own server: not to a process that took
the port named in a stale ``server.json``, even when ``SOCLE_ADDR`` names that URL."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from socle.cli.secrets import is_local, resolve_address
from socle.errors import SocleError


@pytest.fixture
def squatted_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A home whose server.json names a dead control plane's port, now held by this test
    process (the "app" that took it)."""
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    url = f"http://127.0.0.1:{squatter.getsockname()[1]}"
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    # The pid of a live process that does not hold the port (the control plane's pid
    # recorded before its crash, reused since).
    (home / "server.json").write_text(json.dumps({"url": url, "pid": os.getppid()}))
    monkeypatch.setenv("SOCLE_HOME", str(home))
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    monkeypatch.delenv("SOCLE_ADDR", raising=False)
    try:
        yield url
    finally:
        squatter.close()


def test_no_address_given_the_squatter_is_refused(squatted_home: str) -> None:
    assert is_local(None)  # this home's server, as far as the settings say...
    with pytest.raises(SocleError, match="held by a process other than the control plane"):
        resolve_address(None)  # ...but the address is only used once its holder is checked


def test_socle_addr_naming_the_same_url_does_not_skip_the_check(
    squatted_home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCLE_ADDR", squatted_home)
    with pytest.raises(SocleError, match="held by a process other than the control plane"):
        is_local(None)


def test_another_address_is_never_local(
    squatted_home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCLE_ADDR", "http://127.0.0.1:1")
    assert is_local(None) is False
