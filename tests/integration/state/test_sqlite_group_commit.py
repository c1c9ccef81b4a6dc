"""Group commit in the SQLite store: concurrent writers share one COMMIT (one WAL fsync),
each caller still gets its own answer, and nothing is acknowledged before it is committed.

To make a group deterministic the store's single SQLite thread is held busy with an event
while writes queue up behind it; releasing it lets one drain take them all.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from socle.errors import ConflictError, StoreError
from socle.state.sqlite import SqliteStore
from socle.state.store import Put


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "state.db")
    try:
        yield opened
    finally:
        await opened.close()


def hold_thread(store: SqliteStore) -> threading.Event:
    """Keep the SQLite thread busy until the returned event is set."""
    release = threading.Event()
    store._executor.submit(release.wait, 30)
    return release


async def queued(store: SqliteStore, count: int) -> None:
    """Wait until ``count`` writes sit in the queue (the writers' tasks have run)."""
    for _ in range(2000):
        if len(store._queue) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"only {len(store._queue)} writes queued, expected {count}")


def read_back(path: Path) -> dict[str, tuple[bytes, int]]:
    """What another connection (another process, after a restart) sees on disk."""
    conn = sqlite3.connect(path)
    try:
        return {k: (bytes(v), ver) for k, v, ver in conn.execute("SELECT * FROM kv")}
    finally:
        conn.close()


def test_full_sync_is_on(store: SqliteStore) -> None:
    # 2 = FULL: every COMMIT fsyncs the WAL (NORMAL = 1 would not).
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_concurrent_writers_share_one_commit(store: SqliteStore, tmp_path: Path) -> None:
    before = store.group_commits
    release = hold_thread(store)
    tasks = [asyncio.create_task(store.put(f"k/{i}", b"v%d" % i)) for i in range(40)]
    await queued(store, 40)
    assert not any(t.done() for t in tasks)  # nothing acknowledged before its commit
    assert read_back(tmp_path / "state.db") == {}
    release.set()
    assert await asyncio.gather(*tasks) == [1] * 40
    assert store.group_commits == before + 1
    on_disk = read_back(tmp_path / "state.db")
    assert on_disk == {f"k/{i}": (b"v%d" % i, 1) for i in range(40)}


async def test_a_conflict_fails_only_its_caller(store: SqliteStore, tmp_path: Path) -> None:
    await store.put("taken", b"old")
    release = hold_thread(store)
    first = asyncio.create_task(store.put("a", b"1"))
    loser = asyncio.create_task(
        store.commit([Put("b", b"2"), Put("taken", b"new", expect_version=0)])
    )
    last = asyncio.create_task(store.put("c", b"3"))
    await queued(store, 3)
    release.set()
    assert await first == 1
    with pytest.raises(ConflictError, match="taken is at version 1, expected 0"):
        await loser
    assert await last == 1
    on_disk = read_back(tmp_path / "state.db")
    # The loser's earlier op ("b") was undone with it: commit stays all-or-nothing.
    assert on_disk == {"taken": (b"old", 1), "a": (b"1", 1), "c": (b"3", 1)}


async def test_writes_in_one_group_see_each_other(store: SqliteStore) -> None:
    release = hold_thread(store)
    tasks = [asyncio.create_task(store.put("same", b"%d" % i)) for i in range(5)]
    cas = asyncio.create_task(store.put("same", b"cas", expect_version=5))
    await queued(store, 6)
    release.set()
    assert await asyncio.gather(*tasks) == [1, 2, 3, 4, 5]
    assert await cas == 6
    record = await store.get("same")
    assert record is not None
    assert (record.value, record.version) == (b"cas", 6)


async def test_an_unstorable_key_fails_only_its_caller(store: SqliteStore) -> None:
    release = hold_thread(store)
    good = asyncio.create_task(store.put("good", b"1"))
    bad = asyncio.create_task(store.put("bad-\ud800", b"x"))
    await queued(store, 2)
    release.set()
    assert await good == 1
    with pytest.raises(StoreError, match="state store"):
        await bad
    assert await store.keys("") == ["good"]


async def test_a_cancelled_caller_does_not_cancel_the_group(store: SqliteStore) -> None:
    release = hold_thread(store)
    kept = asyncio.create_task(store.put("kept", b"1"))
    dropped = asyncio.create_task(store.put("dropped", b"2"))
    await queued(store, 2)
    dropped.cancel()
    release.set()
    assert await kept == 1
    with pytest.raises(asyncio.CancelledError):
        await dropped
    # The write was already queued: it commits; its caller merely never heard back.
    assert await store.keys("") == ["dropped", "kept"]


async def test_close_commits_what_was_queued(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    release = hold_thread(store)
    write = asyncio.create_task(store.put("late", b"1"))
    await queued(store, 1)
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0)
    release.set()
    await closing
    assert await write == 1
    assert read_back(tmp_path / "state.db") == {"late": (b"1", 1)}
    with pytest.raises(StoreError, match="closed"):
        await store.put("after", b"x")


async def test_reads_do_not_wait_for_the_writer(store: SqliteStore) -> None:
    await store.put("k", b"committed")
    release = hold_thread(store)  # the writer thread is busy (as during a long fsync)
    try:
        pending = asyncio.create_task(store.put("k", b"pending"))
        await queued(store, 1)
        record = await asyncio.wait_for(store.get("k"), 30)  # answered by the reader thread
        assert record is not None and record.value == b"committed"
        assert await asyncio.wait_for(store.keys(""), 30) == ["k"]
    finally:
        release.set()
    assert await pending == 2
    record = await store.get("k")
    assert record is not None and (record.value, record.version) == (b"pending", 2)


async def test_the_wal_is_checkpointed_beside_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await SqliteStore.open(path, checkpoint_bytes=64 * 1024)
    try:
        # Automatic checkpoints are off on the writer: they would stall the commit.
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        for i in range(200):
            await store.put(f"big/{i}", bytes([i % 256]) * 4000)
        for _ in range(2000):
            if store.checkpoints:
                break
            await asyncio.sleep(0.005)
        assert store.checkpoints >= 1
        await store.put("last", b"x")  # a writer after a full checkpoint restarts the WAL
        wal = path.with_name("state.db-wal").stat().st_size
        assert wal <= 16 * 64 * 1024 + 64 * 1024, wal  # bounded, not 800 kB of frames
        assert path.stat().st_size > 400 * 1024  # the frames reached the database file
    finally:
        await store.close()
    on_disk = read_back(path)
    assert len(on_disk) == 201 and on_disk["big/7"] == (bytes([7]) * 4000, 1)
    assert (
        not path.with_name("state.db-wal").exists()
        or not path.with_name("state.db-wal").stat().st_size
    )


async def test_a_callers_bad_value_fails_only_that_caller(store: SqliteStore) -> None:
    """Any error a caller's own ops raise (here a value SQLite cannot bind: a programming
    error in that caller) is its own: the others in the group still commit."""
    release = hold_thread(store)
    good = asyncio.create_task(store.put("good", b"1"))
    bad = asyncio.create_task(store.put("bad", 2**70))  # type: ignore[arg-type]
    after = asyncio.create_task(store.put("after", b"2"))
    await queued(store, 3)
    release.set()
    assert await good == 1
    with pytest.raises(OverflowError):
        await bad
    assert await after == 1
    assert await store.keys("") == ["after", "good"]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: the WAL append of a COMMIT runs out of space there."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode()[:200]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_commit_the_disk_refuses_is_never_acknowledged(tiny_disk: Path) -> None:
    """Groups of writers fill the disk: every write that was acknowledged is on disk
    afterwards, every other caller got a StoreError, and none is left without answer."""
    path = tiny_disk / "state.db"
    store = await SqliteStore.open(path)
    acknowledged: dict[str, int] = {}
    failures = 0
    try:
        for round_ in range(40):
            release = hold_thread(store)
            keys = [f"r{round_:02d}-{i}" for i in range(8)]
            tasks = {k: asyncio.create_task(store.put(k, k.encode() * 2000)) for k in keys}
            await queued(store, len(keys))
            release.set()
            for key, task in tasks.items():
                try:
                    acknowledged[key] = await task
                except StoreError:
                    failures += 1
            if failures >= 8:
                break
    finally:
        await store.close()
    assert failures, "the disk never filled up: the test proved nothing"
    assert acknowledged, "nothing was written at all"
    on_disk = read_back(path)
    for key, version in acknowledged.items():
        assert key in on_disk and on_disk[key] == (key.encode() * 2000, version), key
