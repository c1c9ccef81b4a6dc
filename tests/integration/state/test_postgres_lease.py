"""The PostgreSQL leader lease against a real server (the e2e test drives two processes)."""

from __future__ import annotations

import asyncio

import pytest

from socle.errors import LeaseHeld
from socle.state.lease import Holder
from socle.state.postgres_lease import PostgresLease
from tests.support.pg_server import PgServer
from tests.support.pg_server import pg_server as pg_server  # session fixture

pytestmark = pytest.mark.root

ONE = Holder(host="node-a", pid=101, address="http://127.0.0.1:7001", home="/srv/a")
TWO = Holder(host="node-b", pid=202, address="http://127.0.0.1:7002", home="/srv/b")


async def test_one_leader_the_other_is_refused_with_its_name(pg_server: PgServer) -> None:
    dsn = pg_server.new_database()
    first, second = PostgresLease(dsn, ONE), PostgresLease(dsn, TWO)
    try:
        await first.acquire(wait=False)
        assert await first.check()
        with pytest.raises(LeaseHeld) as caught:
            await second.acquire(wait=False)
        message = caught.value.message
        assert "pid 101 on node-a" in message and "http://127.0.0.1:7001" in message
        assert pg_server.password not in message
        assert "--standby" in (caught.value.hint or "")
        assert not await second.check()
        assert await second.holder() == ONE
    finally:
        await first.release()
        await second.release()


async def test_a_standby_takes_over_when_the_leader_releases(pg_server: PgServer) -> None:
    dsn = pg_server.new_database()
    first, second = PostgresLease(dsn, ONE), PostgresLease(dsn, TWO)
    try:
        await first.acquire(wait=False)
        waiting = asyncio.ensure_future(second.acquire(wait=True, retry_seconds=0.05))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await first.release()
        await asyncio.wait_for(waiting, 30)
        assert await second.check()
        assert await second.holder() == TWO
        assert not await first.check()
    finally:
        await first.release()
        await second.release()


async def test_a_cut_session_is_a_lost_lease(pg_server: PgServer) -> None:
    dsn = pg_server.new_database()
    lease = PostgresLease(dsn, ONE)
    try:
        await lease.acquire(wait=False)
        dbname = dsn.rsplit("/", 1)[1]
        pg_server.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = 'socle-leader' AND datname = '{dbname}'"
        )
        assert not await lease.check()
        assert not await lease.check()  # lost for good: never silently re-taken
        # The lock went with the session: someone else can lead now.
        other = PostgresLease(dsn, TWO)
        await other.acquire(wait=False)
        await other.release()
    finally:
        await lease.release()


async def test_a_cancelled_standby_leaves_nothing_behind(pg_server: PgServer) -> None:
    dsn = pg_server.new_database()
    first, second = PostgresLease(dsn, ONE), PostgresLease(dsn, TWO)
    try:
        await first.acquire(wait=False)
        waiting = asyncio.ensure_future(second.acquire(wait=True, retry_seconds=0.05))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await second.release()
        assert await first.check()
    finally:
        await first.release()
