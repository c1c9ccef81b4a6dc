"""SQLite state store (WAL), the embedded default.

All SQLite calls run on one dedicated thread, so the event loop never blocks on disk and the
connection is never shared across threads.

Durability: ``synchronous=FULL`` makes every COMMIT fsync the WAL, so a write that returned
survives power loss (``NORMAL`` only syncs at checkpoints: a power cut can undo acknowledged
writes). One fsync per write would cap writes at the disk's flush rate, so writes use *group
commit*: callers queue their ops; the SQLite thread takes every queued write at once, plays
each inside its own SAVEPOINT (a conflict undoes only that caller's ops), then COMMITs once —
one fsync for the whole group — and only then wakes the callers. No write is acknowledged
before the fsync that covers it.

Checkpoints (copying the WAL back into the database file, with its own fsyncs) would stall
the commit that happens to trigger them, so SQLite's automatic checkpoint is off: once the
WAL passes ``checkpoint_bytes`` a third thread with its own connection runs a PASSIVE
checkpoint beside the writer. If the WAL still grows past 16 times that (checkpoints cannot
keep up), the writer checkpoints itself, so the file stays bounded.

Reads (get, scan, keys) run on a second thread with their own read-only connection: WAL lets
them read the last committed state while the writer thread waits for its fsync, so a read
never queues behind a disk flush. A write is acknowledged only after its COMMIT, so a read
that starts after the acknowledgement sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


CHECKPOINT_BYTES = 4 << 20
"""WAL size past which the checkpoint thread copies it back (SQLite's default is 1000 pages)."""

_STORE_HINT = "check that the disk is not full and no other program locks the file"


@dataclass(frozen=True)
class _Write:
    """One caller's ops waiting for the next group commit, and where to send the outcome."""

    ops: Sequence[Op]
    future: asyncio.Future[list[int]]
    loop: asyncio.AbstractEventLoop


Outcome = list[int] | BaseException


def _settle(answers: list[tuple[asyncio.Future[list[int]], Outcome]]) -> None:
    """Runs on the callers' loop (one wake-up per group, not per write): a cancelled caller
    simply misses its answer."""
    for future, outcome in answers:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class SqliteStore:
    def __init__(self, path: Path, *, checkpoint_bytes: int = CHECKPOINT_BYTES) -> None:
        self._path = path
        self._wal = path.with_name(path.name + "-wal")
        self._checkpoint_bytes = checkpoint_bytes
        self._checkpoint_executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="socle-sqlite-ckpt"
        )
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointing = threading.Event()
        self.checkpoints = 0
        """Checkpoints run (by the checkpoint thread or, as a backstop, the writer)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="socle-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="socle-sqlite-r")
        self._reader: sqlite3.Connection | None = None
        self._closed = False
        self._queue: list[_Write] = []
        self._queue_lock = threading.Lock()
        self._drain_scheduled = False
        self.group_commits = 0
        """COMMITs (hence WAL fsyncs) done by writes: fewer than writes when they group."""

    @classmethod
    async def open(cls, path: Path, *, checkpoint_bytes: int = CHECKPOINT_BYTES) -> SqliteStore:
        store = cls(path, checkpoint_bytes=checkpoint_bytes)
        await store._call(store._open)
        await store._read(store._open_reader)
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
        # FULL: each COMMIT fsyncs the WAL before it returns (see the module docstring).
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint thread does it
        conn.execute(f"PRAGMA journal_size_limit={16 * self._checkpoint_bytes}")
        conn.executescript(_SCHEMA)
        self._conn = conn
        checkpointer = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        checkpointer.execute("PRAGMA synchronous=FULL")
        checkpointer.execute("PRAGMA busy_timeout=5000")
        self._checkpointer = checkpointer

    def _open_reader(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
        conn.execute("PRAGMA busy_timeout=5000")
        self._reader = conn

    async def _read(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the reader thread (see the module docstring)."""
        loop = asyncio.get_running_loop()
        if self._closed:
            raise StoreError(f"state store {self._path} is closed")
        try:
            return await loop.run_in_executor(self._read_executor, fn)
        except (sqlite3.Error, UnicodeError) as exc:
            raise self._translate(exc) from exc

    @property
    def _rdb(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreError("state store is closed")
        return self._reader

    async def _call(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise StoreError(f"state store {self._path} is closed")
        try:
            return await loop.run_in_executor(self._executor, fn)
        except (sqlite3.Error, UnicodeError) as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.Error | UnicodeError):
            error = StoreError(f"state store {self._path}: {exc}", hint=_STORE_HINT)
            error.__cause__ = exc
            return error
        return exc

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("state store is closed")
        return self._conn

    async def get(self, key: str) -> Record | None:
        def run() -> Record | None:
            row = self._rdb.execute(
                "SELECT key, value, version FROM kv WHERE key = ?", (key,)
            ).fetchone()
            return Record(row[0], bytes(row[1]), row[2]) if row else None

        return await self._read(run)

    async def scan(self, prefix: str) -> list[Record]:
        def run() -> list[Record]:
            rows = self._rdb.execute(*_range("key, value, version", prefix)).fetchall()
            return [Record(k, bytes(v), ver) for k, v, ver in rows]

        return await self._read(run)

    async def keys(self, prefix: str) -> list[str]:
        def run() -> list[str]:
            rows = self._rdb.execute(*_range("key", prefix)).fetchall()
            return [k for (k,) in rows]

        return await self._read(run)

    async def put(self, key: str, value: bytes, *, expect_version: int | None = None) -> int:
        return (await self._write([Put(key, value, expect_version)]))[0]

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        return bool((await self._write([Delete(key, expect_version)]))[0])

    async def commit(self, ops: Sequence[Op]) -> None:
        await self._write(ops)

    async def _write(self, ops: Sequence[Op]) -> list[int]:
        """Queue ``ops`` for the next group commit; return once they are durable."""
        if self._closed:
            raise StoreError(f"state store {self._path} is closed")
        loop = asyncio.get_running_loop()
        write = _Write(list(ops), loop.create_future(), loop)
        with self._queue_lock:
            self._queue.append(write)
            # A drain is scheduled when the queue goes from empty to not: it takes every
            # write queued until it runs. The single thread keeps groups in order.
            schedule = not self._drain_scheduled
            self._drain_scheduled = True
        if schedule:
            self._executor.submit(self._drain)
        return await write.future

    def _drain(self) -> None:
        """On the SQLite thread: commit every queued write in one transaction, one fsync."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
            self._drain_scheduled = False
        if not batch:
            return
        outcomes = self._commit_group(batch)
        self._maybe_checkpoint()
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[int]], Outcome]]]
        by_loop = {}
        for write, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(write.loop, []).append((write.future, outcome))
        for loop, answers in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, answers)

    def _maybe_checkpoint(self) -> None:
        """On the writer thread, after a commit: hand a big WAL to the checkpoint thread."""
        try:
            size = self._wal.stat().st_size
        except OSError:
            return
        if size < self._checkpoint_bytes:
            return
        if size >= 16 * self._checkpoint_bytes and self._conn is not None:
            with contextlib.suppress(sqlite3.Error):  # a checkpoint running beside: fine
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self.checkpoints += 1
            return
        if not self._checkpointing.is_set() and self._checkpointer is not None:
            self._checkpointing.set()
            self._checkpoint_executor.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        """On the checkpoint thread: copy committed WAL frames into the database file."""
        try:
            if self._checkpointer is not None:
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
        except sqlite3.Error:
            pass  # busy or closing: the next commit asks again
        finally:
            self._checkpointing.clear()

    def _commit_group(self, batch: Sequence[_Write]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, StoreError) as exc:
            return [self._translate(exc) for _ in batch]
        try:
            for write in batch:
                results: list[int] = []
                db.execute("SAVEPOINT write")
                try:
                    self._apply(db, write.ops, results)
                except Exception as exc:  # this caller's ops: a conflict, a key or value
                    # SQLite refuses, even a bad type (a bug in that caller) -- never the group's
                    if not db.in_transaction:
                        raise  # SQLite undid the whole transaction: the group fails
                    db.execute("ROLLBACK TO write")
                    db.execute("RELEASE write")
                    outcomes.append(self._translate(exc))
                    continue
                db.execute("RELEASE write")
                outcomes.append(results)
            db.execute("COMMIT")
            self.group_commits += 1
        except BaseException as exc:  # every caller must get an answer
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            return [self._translate(exc) for _ in batch]
        return outcomes

    @staticmethod
    def _apply(db: sqlite3.Connection, ops: Sequence[Op], results: list[int]) -> None:
        """Play ``ops`` inside the open transaction; ConflictError on a version mismatch."""
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

    async def close(self) -> None:
        """Refuse new calls, let queued writes commit (the thread runs in order), close the
        reader and checkpoint connections, then the writer's last: the last connection to
        close checkpoints the WAL into the database file."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._drain)
        await loop.run_in_executor(self._read_executor, self._close_reader)
        self._read_executor.shutdown(wait=True)
        await loop.run_in_executor(self._checkpoint_executor, self._close_checkpointer)
        self._checkpoint_executor.shutdown(wait=True)
        await loop.run_in_executor(self._executor, self._close_conn)
        self._executor.shutdown(wait=True)

    def _close_checkpointer(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _close_conn(self) -> None:
        self._drain()  # writes queued before close was called still commit
        if self._conn is not None:
            self._conn.close()
            self._conn = None


__all__ = ["Delete", "Put", "SqliteStore"]
