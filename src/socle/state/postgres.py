"""PostgreSQL state store, for control planes that share state across machines.

Same contract as the SQLite store (see :mod:`socle.state.store`), kept in one table::

    socle_kv(key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL, version bigint NOT NULL)

created on first open in the first schema of the connection's ``search_path`` (pick another
schema with ``options=-csearch_path=...`` in the DSN).

Why the choices below:

- **One connection behind an asyncio.Lock.** ``psycopg_pool`` is not a dependency, and a
  store's operations are short, so one ``psycopg.AsyncConnection`` (autocommit, explicit
  transactions for writes) serialises this process's calls. If the connection breaks, the
  next call reconnects; the failed call is not retried, because a commit whose answer was
  lost may or may not have happened.
- **``COLLATE "C"`` on the key.** Ordering and prefix ranges must be by code point, as in
  SQLite and Python; a locale collation ignores punctuation and would make ``scan("apps/")``
  return ``appsx``. Prefix scans are half-open ranges ``[prefix, next(prefix))`` on the
  primary key, never ``LIKE``, so ``%`` and ``_`` in keys are plain characters.
- **Per-key advisory locks for writes.** ``SELECT ... FOR UPDATE`` locks only rows that
  exist, so two writers checking that the same *absent* key is absent (``expect_version=0``,
  or a delete that expects nothing) would both pass, and both insert. Each write
  transaction therefore first takes ``pg_advisory_xact_lock(KEY_LOCKS, hash(key))`` for all
  of its keys, in sorted order (no deadlocks), then reads the versions in a new statement
  (so it sees whatever the previous lock holder committed), checks every expectation, and
  writes. That makes read-check-write atomic across processes without SERIALIZABLE and its
  retries. A hash collision only makes two unrelated keys wait for each other.
- **A store-wide lock above the key locks.** Advisory locks live in a shared table sized by
  ``max_locks_per_transaction`` (64 x connections by default), so a commit of thousands of
  keys cannot lock each one. Every writer first takes the store-wide writers lock: shared
  when it then locks at most :data:`MAX_KEY_LOCKS` keys, exclusive (and no key locks) for a
  bigger commit, which thus runs alone. The order (store lock, then sorted key locks) is the
  same for everyone, so there is no deadlock.
- **Socle's own advisory-lock classes.** The two-integer lock space with class ids of our
  own keeps clear of applications (or other Socle parts) using the one-bigint form.
- **The DSN is a secret.** It may carry a password: errors and ``repr`` show a redacted
  ``postgresql://user@host:port/db``, and driver messages are scrubbed of the password.
  ``sslmode`` and every other libpq option are passed through as given.

Errors: a version mismatch raises :class:`~socle.errors.ConflictError`; anything the driver
raises becomes :class:`~socle.errors.StoreError` with a hint (``raise ... from exc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from socle.errors import ConfigError, ConflictError, StoreError
from socle.state.store import Delete, Op, Put, Record, prefix_end

T = TypeVar("T")

TABLE = "socle_kv"

KEY_LOCKS = 0x536F636C
"""Advisory-lock class ("Socl") of the per-key locks; the second integer is a key hash."""

STORE_LOCKS = KEY_LOCKS + 1
"""Advisory-lock class of the store-wide locks (:data:`_SCHEMA_LOCK`, :data:`_WRITERS_LOCK`)."""

MAX_KEY_LOCKS = 32
"""A commit touching more distinct keys takes the store-wide lock exclusively instead."""

DEFAULT_CONNECT_TIMEOUT_S = 10
"""Used when the DSN sets no ``connect_timeout``; libpq's own default is to wait ~2 minutes."""

CONNECTION_HINT = "check that PostgreSQL is running and the DSN is right"

_SCHEMA_LOCK = 0
"""Store-wide lock id that serialises table creation between processes."""

_WRITERS_LOCK = 1
"""Store-wide lock id: shared by commits that lock their keys, exclusive for big commits."""

_CREATE = """
CREATE TABLE IF NOT EXISTS socle_kv (
    key text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL,
    version bigint NOT NULL CHECK (version > 0)
)
"""

_KEY_COLLATION = """
SELECT c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
WHERE a.attrelid = 'socle_kv'::regclass AND a.attname = 'key'
"""

_SCAN = "SELECT key, value, version FROM socle_kv WHERE key >= %s AND key < %s ORDER BY key"
_SCAN_TO_END = "SELECT key, value, version FROM socle_kv WHERE key >= %s ORDER BY key"
_KEYS = "SELECT key FROM socle_kv WHERE key >= %s AND key < %s ORDER BY key"
_KEYS_TO_END = "SELECT key FROM socle_kv WHERE key >= %s ORDER BY key"


def lock_id(key: str) -> int:
    """A stable signed 32-bit hash of ``key``, the second half of its advisory-lock id."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


_URL_PASSWORD = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*:([^/@]*)@")
_KV_PASSWORD = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def _password_forms(dsn: str) -> list[str]:
    """Every spelling of the password the DSN contains (raw, URL-decoded, unquoted)."""
    forms: set[str] = set()
    for pattern in (_URL_PASSWORD, _KV_PASSWORD):
        for match in pattern.finditer(dsn):
            raw = match.group(1)
            forms.update({raw, raw.strip("'"), unquote(raw)})
    try:
        parsed = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        parsed = None
    if parsed:
        forms.add(str(parsed))
    # Longest first so that a password containing another form is replaced whole.
    return sorted((f for f in forms if len(f) >= 3), key=len, reverse=True)


def scrub(text: str, dsn: str) -> str:
    """``text`` with every spelling of the DSN's password replaced by ``***``."""
    for secret in _password_forms(dsn):
        text = text.replace(secret, "***")
    return text


def redact_dsn(dsn: str) -> str:
    """A DSN safe to print: ``postgresql://user@host:port/dbname``, never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "postgresql://<invalid DSN>"
    user = params.get("user")
    host = params.get("host") or params.get("hostaddr") or ""
    port = params.get("port")
    dbname = params.get("dbname") or ""
    where = f"{host}:{port}" if port else str(host)
    who = f"{user}@" if user else ""
    return f"postgresql://{who}{where}/{dbname}"


_QUOTED = re.compile(r'"([^"]*)"')


def check_dsn(dsn: str) -> None:
    """Raise :class:`ConfigError` if libpq cannot parse ``dsn``, without echoing secrets.

    libpq quotes the offending fragment (``missing "=" after "..."``), which may be part of
    the password; quoted fragments are blanked out and the original error is not chained.
    """
    try:
        conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        detail = _QUOTED.sub(
            lambda m: m.group(0) if m.group(1) == "=" else '"..."', scrub(str(exc).strip(), dsn)
        )
        raise ConfigError(
            f"invalid PostgreSQL DSN: {detail}",
            hint="use postgresql://user:password@host:port/dbname?sslmode=... "
            "(percent-encode special characters in the password)",
        ) from None


class PostgresStore:
    """The :class:`~socle.state.store.StateStore` on PostgreSQL (psycopg 3, async)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._where = redact_dsn(dsn)
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    @classmethod
    async def open(cls, dsn: str) -> PostgresStore:
        """Connect, check the server and create the table if it is missing."""
        check_dsn(dsn)
        store = cls(dsn)
        try:
            await store._run(store._prepare_schema)
        except BaseException:
            await store.close()
            raise
        return store

    async def _prepare_schema(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        encoding = conn.info.parameter_status("server_encoding")
        if encoding != "UTF8":
            raise StoreError(
                f"state store {self._where}: database encoding is {encoding}, not UTF8",
                hint="create the database with ENCODING 'UTF8' so that any key can be stored",
            )
        async with conn.transaction():
            # CREATE TABLE IF NOT EXISTS is not safe against a concurrent CREATE: serialise it.
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (STORE_LOCKS, _SCHEMA_LOCK))
            await conn.execute(_CREATE)
            cursor = await conn.execute(_KEY_COLLATION)
            row = await cursor.fetchone()
        if row is None or row[0] not in ("C", "POSIX"):
            raise StoreError(
                f"state store {self._where}: column {TABLE}.key has collation "
                f"{row[0] if row else '?'}, not C; prefix scans would be wrong",
                hint=f'ALTER TABLE {TABLE} ALTER COLUMN key TYPE text COLLATE "C"',
            )

    async def _connect(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        params = conninfo_to_dict(self._dsn)
        extra: dict[str, Any] = {"client_encoding": "UTF8"}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_S
        if "application_name" not in params:
            extra["application_name"] = "socle"
        return await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, **extra)

    async def _run(
        self, fn: Callable[[psycopg.AsyncConnection[tuple[Any, ...]]], Awaitable[T]]
    ) -> T:
        """Run ``fn`` on the connection, one call at a time, translating driver errors."""
        async with self._lock:
            if self._closed:
                raise StoreError(f"state store {self._where} is closed")
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    await self._drop_connection()
                    self._conn = await self._connect()
                return await fn(self._conn)
            except psycopg.Error as exc:
                raise self._translate(exc) from exc
            except UnicodeError as exc:
                raise StoreError(
                    f"state store {self._where}: {exc}",
                    hint="keys must be valid Unicode text (no lone surrogates)",
                ) from exc
            finally:
                # A cancelled or failed call may leave a transaction open or a query running:
                # start clean next time rather than guess the connection's state.
                conn = self._conn
                if conn is not None and (
                    conn.broken or conn.info.transaction_status != pq.TransactionStatus.IDLE
                ):
                    await self._drop_connection()

    def _translate(self, exc: psycopg.Error) -> StoreError:
        message = f"state store {self._where}: {scrub(str(exc).strip(), self._dsn)}"
        if isinstance(exc, psycopg.DataError):
            return StoreError(
                message, hint="keys are PostgreSQL text, which cannot hold NUL characters"
            )
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return StoreError(message, hint=CONNECTION_HINT)
        return StoreError(
            message,
            hint=f"{CONNECTION_HINT}, and that the user may create and write {TABLE}",
        )

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):  # already unusable: nothing to release
                await conn.close()

    async def get(self, key: str) -> Record | None:
        async def run(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> Record | None:
            cursor = await conn.execute(
                "SELECT value, version FROM socle_kv WHERE key = %s", (key,), binary=True
            )
            row = await cursor.fetchone()
            return Record(key, bytes(row[0]), row[1]) if row else None

        return await self._run(run)

    @staticmethod
    def _range(bounded: str, unbounded: str, prefix: str) -> tuple[str, tuple[str, ...]]:
        """The query and parameters for "key starts with prefix", as a key range."""
        end = prefix_end(prefix)
        return (unbounded, (prefix,)) if end is None else (bounded, (prefix, end))

    async def scan(self, prefix: str) -> list[Record]:
        query, params = self._range(_SCAN, _SCAN_TO_END, prefix)

        async def run(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> list[Record]:
            cursor = await conn.execute(query, params, binary=True)
            return [Record(k, bytes(v), ver) for k, v, ver in await cursor.fetchall()]

        return await self._run(run)

    async def keys(self, prefix: str) -> list[str]:
        query, params = self._range(_KEYS, _KEYS_TO_END, prefix)

        async def run(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> list[str]:
            cursor = await conn.execute(query, params, binary=True)
            return [k for (k,) in await cursor.fetchall()]

        return await self._run(run)

    async def put(self, key: str, value: bytes, *, expect_version: int | None = None) -> int:
        return (await self._commit([Put(key, value, expect_version)]))[0]

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        return bool((await self._commit([Delete(key, expect_version)]))[0])

    async def commit(self, ops: Sequence[Op]) -> None:
        await self._commit(ops)

    async def _commit(self, ops: Sequence[Op]) -> list[int]:
        """Apply ``ops`` in one transaction; per op, the new version (Put) or the old (Delete).

        Ops run in order against the state left by the previous ones (a commit may put and
        then delete the same key), exactly as in SQLite; only the final state of each key is
        written, with one INSERT and one DELETE.
        """
        ops = list(ops)
        if not ops:
            return []
        keys = sorted({op.key for op in ops})
        lock_ids = sorted({lock_id(key) for key in keys})
        alone = len(lock_ids) > MAX_KEY_LOCKS

        async def run(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> list[int]:
            async with conn.transaction():
                if alone:
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(%s, %s)", (STORE_LOCKS, _WRITERS_LOCK)
                    )
                else:
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock_shared(%s, %s)",
                        (STORE_LOCKS, _WRITERS_LOCK),
                    )
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(%s, id) "
                        "FROM unnest(%s::int4[]) WITH ORDINALITY AS u(id, n) ORDER BY n",
                        (KEY_LOCKS, lock_ids),
                    )
                cursor = await conn.execute(
                    "SELECT key, version FROM socle_kv WHERE key = ANY(%s) FOR UPDATE",
                    (keys,),
                )
                before: dict[str, int] = {k: v for k, v in await cursor.fetchall()}
                results, final = _apply(ops, before)
                upserts = [(k, kv) for k, kv in final.items() if kv is not None]
                deletes = [k for k, kv in final.items() if kv is None and k in before]
                if upserts:
                    await conn.execute(
                        "INSERT INTO socle_kv (key, value, version) "
                        "SELECT * FROM unnest(%s::text[], %s::bytea[], %s::int8[]) "
                        "ON CONFLICT (key) DO UPDATE "
                        "SET value = excluded.value, version = excluded.version",
                        (
                            [k for k, _ in upserts],
                            [kv[0] for _, kv in upserts],
                            [kv[1] for _, kv in upserts],
                        ),
                    )
                if deletes:
                    await conn.execute("DELETE FROM socle_kv WHERE key = ANY(%s)", (deletes,))
            return results

        return await self._run(run)

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            await self._drop_connection()


def _apply(
    ops: Sequence[Op], before: dict[str, int]
) -> tuple[list[int], dict[str, tuple[bytes, int] | None]]:
    """Play ``ops`` on the versions in ``before``: per-op results and each key's final state.

    Raises ConflictError on the first expectation that does not hold, before anything is
    written.
    """
    versions = dict(before)
    results: list[int] = []
    final: dict[str, tuple[bytes, int] | None] = {}
    for op in ops:
        current = versions.get(op.key, 0)
        if op.expect_version is not None and op.expect_version != current:
            raise ConflictError(
                f"{op.key} is at version {current}, expected {op.expect_version}",
                hint="another writer changed it; read it again and retry",
            )
        if isinstance(op, Put):
            versions[op.key] = current + 1
            final[op.key] = (op.value, current + 1)
            results.append(current + 1)
        else:
            versions[op.key] = 0
            final[op.key] = None
            results.append(current)
    return results, final


__all__ = ["PostgresStore", "check_dsn", "prefix_end", "redact_dsn", "scrub"]
