"""The differential suite: every session in ``sessions/`` against OpenBao and Socle.

A failure prints, for each step where the peers disagree, both outputs side by side after
normalisation. Fix Socle, never the expectation: the expectation is OpenBao's behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.secrets.bao_cli.conftest import Peers
from tests.integration.secrets.bao_cli.harness import (
    Session,
    differences,
    normalise_all,
    run_steps,
)
from tests.integration.secrets.bao_cli.sessions import ALL_SESSIONS
from tests.support.pg_server import PgServer, running_postgres


def _run(peers: Peers, session: Session, given: dict[str, str] | None = None) -> None:
    theirs, their_vars = run_steps(peers.binary, peers.openbao, session.steps, given)
    ours, our_vars = run_steps(peers.binary, peers.socle, session.steps, given)
    reports = differences(
        session,
        normalise_all(session.steps, theirs, their_vars),
        normalise_all(session.steps, ours, our_vars),
    )
    assert not reports, "\n\n".join(reports)


# Two servers and dozens of CLI runs per session on a shared 2-core machine: generous.
pytestmark = pytest.mark.timeout(600)

LIVE = [s for s in ALL_SESSIONS if not s.sealed and not s.needs_postgres]
WITH_POSTGRES = [s for s in ALL_SESSIONS if s.needs_postgres]
SEALED = [s for s in ALL_SESSIONS if s.sealed]


@pytest.mark.parametrize("session", LIVE, ids=[s.name for s in LIVE])
def test_session(peers: Peers, session: Session) -> None:
    _run(peers, session)


@pytest.mark.parametrize("session", SEALED, ids=[s.name for s in SEALED])
def test_sealed_session(sealed_peers: Peers, session: Session) -> None:
    _run(sealed_peers, session)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


@pytest.mark.parametrize("session", WITH_POSTGRES, ids=[s.name for s in WITH_POSTGRES])
def test_postgres_session(peers: Peers, postgres: PgServer, session: Session) -> None:
    """Both peers manage roles in the same real PostgreSQL (each its own role names)."""
    url = f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{postgres.port}/postgres"
    _run(peers, session, {"pg_url": url, "pg_user": "postgres", "pg_password": postgres.password})
