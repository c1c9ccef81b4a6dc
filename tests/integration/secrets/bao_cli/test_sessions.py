"""The differential suite: every session in ``sessions/`` against OpenBao and Socle.

A failure prints, for each step where the peers disagree, both outputs side by side after
normalisation. Fix Socle, never the expectation: the expectation is OpenBao's behaviour.
"""

from __future__ import annotations

import pytest

from tests.integration.secrets.bao_cli.conftest import Peers
from tests.integration.secrets.bao_cli.harness import (
    Session,
    differences,
    normalise_all,
    run_steps,
)
from tests.integration.secrets.bao_cli.sessions import ALL_SESSIONS


def _run(peers: Peers, session: Session) -> None:
    theirs = run_steps(peers.binary, peers.openbao, session.steps)
    ours = run_steps(peers.binary, peers.socle, session.steps)
    reports = differences(
        session,
        normalise_all(session.steps, theirs, {"root": peers.openbao.token}),
        normalise_all(session.steps, ours, {"root": peers.socle.token}),
    )
    assert not reports, "\n\n".join(reports)


LIVE = [s for s in ALL_SESSIONS if not s.sealed]
SEALED = [s for s in ALL_SESSIONS if s.sealed]


@pytest.mark.parametrize("session", LIVE, ids=[s.name for s in LIVE])
def test_session(peers: Peers, session: Session) -> None:
    _run(peers, session)


@pytest.mark.parametrize("session", SEALED, ids=[s.name for s in SEALED])
def test_sealed_session(sealed_peers: Peers, session: Session) -> None:
    _run(sealed_peers, session)
