"""SQLite state store (WAL), the embedded default.

All SQLite calls run on one dedicated thread, so the event loop never blocks on disk and the
connection is never shared across threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from socle.errors import ConflictError, StoreError
from socle.fs import PRIVATE_FILE
from socle.state.store import Delete, Op, Put, Record, prefix_end

T = TypeVar("T")

SIDE_FILES = ("-wal", "-shm", "-journal")
"""Files SQLite keeps next to the database; they hold its data too."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    version INTEGER NOT NULL
);
"""


def _range(columns: str, prefix: str) -> tuple[str, tuple[str, ...]]:
    """A query for keys starting with ``prefix`` as an index range (never LIKE)."""
    end = prefix_end(prefix)
    if end is None:
        return f"SELECT {columns} FROM kv WHERE key >= ? ORDER BY key", (prefix,)  # noqa: S608
    return f"SELECT {columns} FROM kv WHERE key >= ? AND key < ? ORDER BY key", (prefix, end)  # noqa: S608


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="socle-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        store = cls(path)
        await store._call(store._open)
        return store

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # SQLite creates the -wal and -shm files with the database file's mode: make the
        # database private *before* it opens, and tighten what an older version left.
        os.close(os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))
        for path in (self._path, *(self._path.with_name(self._path.name + s) for s in SIDE_FILES)):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mode & 0o777 != PRIVATE_FILE:
                    path.chmod(PRIVATE_FILE)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def _call(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise StoreError(f"state store {self._path} is closed")
        try:
            return await loop.run_in_executor(self._executor, fn)
        except (sqlite3.Error, UnicodeError) as exc:
            raise StoreError(
                f"state store {self._path}: {exc}",
                hint="check that the disk is not full and no other program locks the file",
            ) from exc

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("state store is closed")
        return self._conn

    async def get(self, key: str) -> Record | None:
        def run() -> Record | None:
            row = self._db.execute(
                "SELECT key, value, version FROM kv WHERE key = ?", (key,)
            ).fetchone()
            return Record(row[0], bytes(row[1]), row[2]) if row else None

        return await self._call(run)

    async def scan(self, prefix: str) -> list[Record]:
        def run() -> list[Record]:
            rows = self._db.execute(*_range("key, value, version", prefix)).fetchall()
            return [Record(k, bytes(v), ver) for k, v, ver in rows]

        return await self._call(run)

    async def keys(self, prefix: str) -> list[str]:
        def run() -> list[str]:
            rows = self._db.execute(*_range("key", prefix)).fetchall()
            return [k for (k,) in rows]

        return await self._call(run)

    async def put(self, key: str, value: bytes, *, expect_version: int | None = None) -> int:
        versions: list[int] = []
        await self._call(lambda: self._commit([Put(key, value, expect_version)], versions))
        return versions[0]

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        existed: list[int] = []
        await self._call(lambda: self._commit([Delete(key, expect_version)], existed))
        return bool(existed[0])

    async def commit(self, ops: Sequence[Op]) -> None:
        await self._call(lambda: self._commit(ops, []))

    def _commit(self, ops: Sequence[Op], results: list[int]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                row = db.execute("SELECT version FROM kv WHERE key = ?", (op.key,)).fetchone()
                current = row[0] if row else 0
                if op.expect_version is not None and op.expect_version != current:
                    raise ConflictError(
                        f"{op.key} is at version {current}, expected {op.expect_version}",
                        hint="another writer changed it; read it again and retry",
                    )
                if isinstance(op, Put):
                    db.execute(
                        "INSERT INTO kv(key, value, version) VALUES (?, ?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                        "version = excluded.version",
                        (op.key, op.value, current + 1),
                    )
                    results.append(current + 1)
                else:
                    db.execute("DELETE FROM kv WHERE key = ?", (op.key,))
                    results.append(current)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._conn is not None:
            await self._call(self._db.close)
            self._conn = None
        self._closed = True
        self._executor.shutdown(wait=True)


__all__ = ["Delete", "Put", "SqliteStore"]
