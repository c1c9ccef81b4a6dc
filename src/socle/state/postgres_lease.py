"""The leader lease on PostgreSQL: a session-level advisory lock on a dedicated connection.

Why this shape:

- **A session-level advisory lock** (``pg_try_advisory_lock``) is held for as long as the
  session lives and released by the server the moment the session ends, whatever the
  reason: a ``kill -9`` of the leader frees the lease as soon as PostgreSQL sees the socket
  close. No expiry clock to tune, no home-made consensus.
- **A dedicated connection.** The store's own connection is dropped and re-opened on errors
  (see :mod:`socle.state.postgres`), which would silently drop a lock taken on it. The lease
  has its own connection that is never re-opened: once it breaks, the lease is lost for
  good and :meth:`PostgresLease.check` says so.
- **The holder is recorded in a row** (``socle_leader``) written by the leader right after
  it takes the lock, so that a refused control plane can say who holds it. The row is only
  informative: the lock decides.
- **Polling, not a blocking lock**, for a standby: ``pg_try_advisory_lock`` every
  ``retry_seconds`` can be interrupted at any time (SIGTERM of a standby) without leaving a
  query running on the server.

The lock id is in Socle's own advisory-lock class (:data:`~socle.state.postgres.STORE_LOCKS`),
apart from the store's key and schema locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from socle.errors import LeaseHeld, StoreError
from socle.state.lease import Holder
from socle.state.postgres import (
    CONNECTION_HINT,
    DEFAULT_CONNECT_TIMEOUT_S,
    STORE_LOCKS,
    check_dsn,
    redact_dsn,
    scrub,
)

log = logging.getLogger("socle.state.lease")

LEADER_LOCK = 2
"""Store-wide lock id of the leader lease (0 and 1 are the store's schema and writers locks)."""

SCHEMA_LOCK = 0
"""The store's schema lock, also taken to create ``socle_leader``."""

CHECK_TIMEOUT_S = 10.0
"""A lease check that takes longer than this counts as lost: a leader that cannot reach the
database cannot know whether it still leads."""

_CREATE = """
CREATE TABLE IF NOT EXISTS socle_leader (
    id integer PRIMARY KEY CHECK (id = 1),
    host text NOT NULL,
    pid integer NOT NULL,
    address text NOT NULL,
    home text NOT NULL,
    backend_pid integer NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
)
"""

_RECORD = """
INSERT INTO socle_leader (id, host, pid, address, home, backend_pid, since)
VALUES (1, %s, %s, %s, %s, pg_backend_pid(), now())
ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
    address = excluded.address, home = excluded.home,
    backend_pid = excluded.backend_pid, since = excluded.since
"""

_HELD = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
  AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2
"""


class PostgresLease:
    """:class:`~socle.state.lease.LeaderLease` on one PostgreSQL database."""

    def __init__(self, dsn: str, me: Holder) -> None:
        check_dsn(dsn)
        self._dsn = dsn
        self._where = redact_dsn(dsn)
        self._me = me
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._held = False
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresLease({self._where!r})"

    async def _connect(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        params = conninfo_to_dict(self._dsn)
        extra: dict[str, Any] = {
            "client_encoding": "UTF8",
            # Notice a dead server (or network) within about half a minute even when idle.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        if "connect_timeout" not in params:
            extra["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_S
        if "application_name" not in params:
            extra["application_name"] = "socle-leader"
        return await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, **extra)

    def _error(self, exc: psycopg.Error) -> StoreError:
        return StoreError(
            f"leader lease on {self._where}: {scrub(str(exc).strip(), self._dsn)}",
            hint=CONNECTION_HINT,
        )

    async def _try(self) -> bool:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await self._conn.close()
            self._conn = await self._connect()
            async with self._conn.transaction():
                # As for the store's table: CREATE IF NOT EXISTS races with itself.
                await self._conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", (STORE_LOCKS, SCHEMA_LOCK)
                )
                await self._conn.execute(_CREATE)
        cursor = await self._conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (STORE_LOCKS, LEADER_LOCK)
        )
        row = await cursor.fetchone()
        if not (row and row[0]):
            return False
        me = self._me
        await self._conn.execute(_RECORD, (me.host, me.pid, me.address, me.home))
        return True

    async def acquire(self, *, wait: bool, retry_seconds: float = 1.0) -> None:
        said = False
        while True:
            async with self._lock:
                try:
                    if await self._try():
                        self._held = True
                        if said:
                            log.warning(
                                "leader lease on %s taken: this control plane leads now",
                                self._where,
                            )
                        return
                except psycopg.Error as exc:
                    if not wait:
                        raise self._error(exc) from exc
                    log.warning("leader lease: %s; retrying", self._error(exc).message)
                    await self._drop()
            holder = await self.holder() if not said or not wait else None
            if not wait:
                who = str(holder) if holder else "another control plane (not recorded)"
                raise LeaseHeld(
                    f"another control plane leads on {self._where}: {who}",
                    hint="stop it first, or start this one with --standby to take over "
                    "when it stops",
                )
            if not said:
                log.warning(
                    "standby: %s leads on %s; waiting to take over",
                    holder or "another control plane",
                    self._where,
                )
                said = True
            await asyncio.sleep(retry_seconds)

    async def check(self) -> bool:
        if not self._held:
            return False
        async with self._lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                self._held = False
                return False
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    cursor = await conn.execute(_HELD, (STORE_LOCKS, LEADER_LOCK))
                    row = await cursor.fetchone()
            except (psycopg.Error, TimeoutError) as exc:
                log.error("leader lease check failed: %s", exc)
                self._held = False
                await self._drop()
                return False
            self._held = bool(row and row[0])
            return self._held

    async def holder(self) -> Holder | None:
        try:
            conn = await self._connect()
        except psycopg.Error:
            return None
        try:
            cursor = await conn.execute(
                "SELECT host, pid, address, home FROM socle_leader WHERE id = 1"
            )
            row = await cursor.fetchone()
        except psycopg.Error:
            return None
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
        return Holder(str(row[0]), int(row[1]), str(row[2]), str(row[3])) if row else None

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def release(self) -> None:
        async with self._lock:
            self._held = False
            await self._drop()  # ending the session releases the lock


__all__ = ["LEADER_LOCK", "PostgresLease"]
