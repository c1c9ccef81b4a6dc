"""State-store conformance suite: written once, run against every backend.

Every test takes ``store`` (and, for races between processes, ``other_store``: a second,
independent instance on the same data), parametrized over the in-memory store, SQLite and a real PostgreSQL
server (see ``pg_server.py``; the PostgreSQL half skips without root). Stores are opened
through :func:`socle.state.registry.open_store`, as the server does. Tests at the end of the
file cover what only PostgreSQL has: a DSN with a password, a server that goes away, a table
made by someone else.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from socle.errors import ConflictError, StoreError
from socle.state.postgres import KEY_LOCKS, PostgresStore, lock_id
from socle.state.registry import StoreRegistry, default_registry, open_store
from socle.state.store import Delete, Op, Put, StateStore
from tests.support.pg_server import PgServer
from tests.support.pg_server import pg_server as pg_server  # session fixture


@dataclass(frozen=True)
class Backend:
    """Where one test's data lives, so that several store instances can share it."""

    name: str
    location: str
    registry: StoreRegistry | None = None
    """In-memory stores share data only through one registry: the test's own."""

    async def open(self) -> StateStore:
        return await open_store(self.location, registry=self.registry)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.root)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memory":
        return Backend("memory", "memory://conformance", default_registry())
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite://{tmp_path}/state.db")
    server: PgServer = request.getfixturevalue("pg_server")
    return Backend("postgres", server.new_database())


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[StateStore]:
    opened = await backend.open()
    yield opened
    await opened.close()


@pytest.fixture
async def other_store(backend: Backend) -> AsyncIterator[StateStore]:
    """A second store on the same data, as another Socle process would open it."""
    opened = await backend.open()
    yield opened
    await opened.close()


def known_bug_on(request: pytest.FixtureRequest, backend: Backend, name: str, why: str) -> None:
    """Mark the running test as an expected failure on one backend (strict: fixing it shows)."""
    if backend.name == name:
        request.applymarker(pytest.mark.xfail(reason=why, strict=True))


# --- the contract -------------------------------------------------------------------------


async def test_put_get_versions(store: StateStore) -> None:
    assert await store.get("a") is None
    assert await store.put("a", b"1") == 1
    assert await store.put("a", b"2") == 2
    record = await store.get("a")
    assert record is not None and record.value == b"2" and record.version == 2


async def test_compare_and_swap(store: StateStore) -> None:
    assert await store.put("k", b"x", expect_version=0) == 1
    with pytest.raises(ConflictError):
        await store.put("k", b"y", expect_version=0)
    with pytest.raises(ConflictError):
        await store.delete("k", expect_version=5)
    assert await store.put("k", b"y", expect_version=1) == 2
    assert await store.delete("k", expect_version=2)
    assert not await store.delete("k")


async def test_scan_is_prefix_exact_and_sorted(store: StateStore) -> None:
    for key in ["apps/b", "apps/a", "appsx", "apps/a/sub", "other"]:
        await store.put(key, key.encode())
    assert [r.key for r in await store.scan("apps/")] == ["apps/a", "apps/a/sub", "apps/b"]
    assert await store.keys("apps/a") == ["apps/a", "apps/a/sub"]


async def test_commit_is_all_or_nothing(store: StateStore) -> None:
    await store.put("x", b"1")
    with pytest.raises(ConflictError):
        await store.commit([Put("y", b"new"), Delete("x", expect_version=9)])
    assert await store.get("y") is None
    assert (await store.get("x")) is not None
    await store.commit([Put("y", b"new", expect_version=0), Delete("x", expect_version=1)])
    assert await store.get("x") is None
    assert (await store.get("y")) is not None


async def test_binary_values_round_trip(store: StateStore) -> None:
    blob = bytes(range(256)) * 4
    await store.put("bin", blob)
    record = await store.get("bin")
    assert record is not None and record.value == blob


async def test_a_deleted_key_starts_again_at_version_1(store: StateStore) -> None:
    await store.put("k", b"1")
    await store.put("k", b"2")
    assert await store.delete("k", expect_version=2)
    assert await store.get("k") is None
    with pytest.raises(ConflictError):
        await store.delete("k", expect_version=2)
    assert await store.delete("k", expect_version=0) is False
    assert await store.put("k", b"3", expect_version=0) == 1


async def test_conflict_leaves_the_record_unchanged(store: StateStore) -> None:
    await store.put("k", b"first")
    with pytest.raises(ConflictError, match="version 1"):
        await store.put("k", b"second", expect_version=7)
    record = await store.get("k")
    assert record is not None and (record.value, record.version) == (b"first", 1)


async def test_scan_and_keys_agree(store: StateStore) -> None:
    for key in ["b", "a/2", "a/1", "c"]:
        await store.put(key, key.encode() * 2)
    records = await store.scan("")
    assert [r.key for r in records] == ["a/1", "a/2", "b", "c"]
    assert [r.value for r in records] == [b"a/1a/1", b"a/2a/2", b"bb", b"cc"]
    assert all(r.version == 1 for r in records)
    assert await store.keys("") == [r.key for r in records]
    assert await store.scan("zzz") == []
    assert await store.keys("zzz") == []


async def test_prefix_scan_treats_like_wildcards_as_text(store: StateStore) -> None:
    keys = ["a%b", "a%", "a_c", "a_", "aXc", "ab", "a\\", "a\\b", "a[x]", "a*"]
    for key in keys:
        await store.put(key, b"")
    assert await store.keys("a%") == ["a%", "a%b"]
    assert await store.keys("a_") == ["a_", "a_c"]
    assert await store.keys("a\\") == ["a\\", "a\\b"]
    assert await store.keys("a[") == ["a[x]"]
    assert await store.keys("a*") == ["a*"]
    assert [r.key for r in await store.scan("a%")] == ["a%", "a%b"]
    assert await store.keys("a") == sorted(keys)


async def test_unicode_keys_sort_by_code_point(store: StateStore) -> None:
    keys = [
        "apps/café",
        "apps/cafe",
        "apps/Cafe",
        "apps/日本",
        "apps/\U0001f600",
        "apps/\uffff",
        "apps/\U00010000",
        "apps/\ud7ff",
        "apps/\ud7ffx",
        "apps/\ue000",
        "apps/é/x",
        "apps/ä",
    ]
    for key in keys:
        await store.put(key, key.encode())
    # Code-point order: what Python's sort gives, and what UTF-8 bytes compare to.
    assert await store.keys("apps/") == sorted(keys)
    assert await store.keys("apps/\ud7ff") == ["apps/\ud7ff", "apps/\ud7ffx"]
    assert await store.keys("apps/é") == ["apps/é/x"]
    assert await store.keys("apps/caf") == ["apps/cafe", "apps/café"]
    record = await store.get("apps/日本")
    assert record is not None and record.value == "apps/日本".encode()


async def test_keys_with_the_last_code_point(
    request: pytest.FixtureRequest, backend: Backend, store: StateStore
) -> None:
    keys = ["z", "z\U0010ffff", "z\U0010ffffa", "z\U0010ffff\U0010ffff"]
    for key in keys:
        await store.put(key, b"")
    assert await store.keys("z") == keys
    assert await store.keys("z\U0010ffff") == keys[1:]


async def test_large_values(store: StateStore) -> None:
    big = os.urandom(1024 * 1024)
    assert await store.put("big", big) == 1
    record = await store.get("big")
    assert record is not None and record.value == big
    assert [r.value for r in await store.scan("bi")] == [big]
    await store.commit([Put("big", big[::-1], expect_version=1), Put("big2", big)])
    record = await store.get("big")
    assert record is not None and record.value == big[::-1] and record.version == 2


async def test_empty_value_is_not_a_missing_key(store: StateStore) -> None:
    assert await store.put("empty", b"") == 1
    record = await store.get("empty")
    assert record is not None and record.value == b"" and record.version == 1
    assert await store.scan("empty") == [record]
    with pytest.raises(ConflictError):
        await store.put("empty", b"x", expect_version=0)
    assert await store.delete("empty", expect_version=1)


async def test_commit_of_many_ops(store: StateStore) -> None:
    count = 1000
    await store.commit(
        [Put(f"many/{i:04d}", str(i).encode(), expect_version=0) for i in range(count)]
    )
    assert len(await store.keys("many/")) == count
    ops: list[Op] = []
    for i in range(count):
        key = f"many/{i:04d}"
        ops.append(Delete(key, expect_version=1) if i % 2 else Put(key, b"v2", expect_version=1))
    await store.commit(ops)
    records = await store.scan("many/")
    assert [r.key for r in records] == [f"many/{i:04d}" for i in range(0, count, 2)]
    assert {(r.value, r.version) for r in records} == {(b"v2", 2)}
    # One stale expectation at the very end undoes the whole batch.
    batch: list[Op] = [Put(f"many/{i:04d}", b"v3") for i in range(0, count, 2)]
    with pytest.raises(ConflictError):
        await store.commit([*batch, Put("many/0000", b"late", expect_version=1)])
    assert {r.value for r in await store.scan("many/")} == {b"v2"}


async def test_commit_of_more_keys_than_a_lock_table_holds(store: StateStore) -> None:
    """30,000 keys: more than PostgreSQL's lock table holds at default settings."""
    count = 30_000
    await store.commit([Put(f"bulk/{i:05d}", b"", expect_version=0) for i in range(count)])
    assert len(await store.keys("bulk/")) == count
    await store.commit([Delete(f"bulk/{i:05d}", expect_version=1) for i in range(count)])
    assert await store.keys("bulk/") == []


async def test_big_commit_races_small_writers(store: StateStore, other_store: StateStore) -> None:
    """A commit too big for per-key locks still serialises with single-key writers."""
    for round_ in range(5):
        keys = [f"big/{round_}/{i:03d}" for i in range(100)]
        big = store.commit([Put(key, b"big", expect_version=0) for key in keys])
        smalls = [other_store.put(key, b"small", expect_version=0) for key in keys[::25]]
        results = await asyncio.gather(big, *smalls, return_exceptions=True)
        assert not [r for r in results if not isinstance(r, int | ConflictError | None)]
        if results[0] is None:  # the big commit won: every small write lost
            assert all(isinstance(r, ConflictError) for r in results[1:]), results
        else:  # a small write got in first: the big commit wrote nothing
            assert isinstance(results[0], ConflictError), results
            assert len(await store.keys(f"big/{round_}/")) == sum(r == 1 for r in results[1:])


async def test_commit_plays_ops_in_order(store: StateStore) -> None:
    await store.commit(
        [
            Put("k", b"1", expect_version=0),
            Put("k", b"2", expect_version=1),
            Delete("k", expect_version=2),
            Put("k", b"3", expect_version=0),
            Put("j", b"x"),
            Delete("j"),
        ]
    )
    record = await store.get("k")
    assert record is not None and (record.value, record.version) == (b"3", 1)
    assert await store.get("j") is None
    await store.commit([])


async def test_concurrent_cas_from_two_tasks_one_wins(store: StateStore) -> None:
    results = await asyncio.gather(
        store.put("lock", b"task-1", expect_version=0),
        store.put("lock", b"task-2", expect_version=0),
        return_exceptions=True,
    )
    assert sorted(map(type, results), key=str) == sorted([int, ConflictError], key=str)
    winner = b"task-1" if results[0] == 1 else b"task-2"
    record = await store.get("lock")
    assert record is not None and record.value == winner and record.version == 1


async def test_two_instances_race_to_create(store: StateStore, other_store: StateStore) -> None:
    for round_ in range(20):
        key = f"race/{round_}"
        results = await asyncio.gather(
            store.put(key, b"first", expect_version=0),
            other_store.put(key, b"second", expect_version=0),
            return_exceptions=True,
        )
        wins = [r for r in results if r == 1]
        losses = [r for r in results if isinstance(r, ConflictError)]
        assert len(wins) == 1 and len(losses) == 1, results


async def test_two_instances_lose_no_update(store: StateStore, other_store: StateStore) -> None:
    """Read-modify-write with CAS and retry from 8 workers: every increment lands once."""
    per_worker = 10

    async def worker(target: StateStore) -> None:
        done = 0
        while done < per_worker:
            record = await target.get("counter")
            current = int(record.value) if record else 0
            try:
                await target.put(
                    "counter",
                    str(current + 1).encode(),
                    expect_version=record.version if record else 0,
                )
            except ConflictError:
                await asyncio.sleep(0)
                continue
            done += 1

    await asyncio.gather(*(worker(s) for s in [store, other_store] * 4))
    record = await store.get("counter")
    assert record is not None
    assert int(record.value) == 8 * per_worker and record.version == 8 * per_worker


async def test_two_instances_cannot_both_claim_absent_keys(
    store: StateStore, other_store: StateStore
) -> None:
    """Write skew trap: each commit needs the other's key absent; only one may succeed.

    Row locks alone do not catch this (there is no row to lock), so it checks that a store
    serialises writers on keys that do not exist yet.
    """
    for round_ in range(20):
        a, b = f"skew/{round_}/a", f"skew/{round_}/b"
        results = await asyncio.gather(
            store.commit([Delete(b, expect_version=0), Put(a, b"1")]),
            other_store.commit([Delete(a, expect_version=0), Put(b, b"1")]),
            return_exceptions=True,
        )
        assert sum(isinstance(r, ConflictError) for r in results) == 1, results
        assert len(await store.keys(f"skew/{round_}/")) == 1


async def test_two_instances_see_each_others_writes(
    store: StateStore, other_store: StateStore
) -> None:
    await store.put("shared", b"from-one")
    record = await other_store.get("shared")
    assert record is not None and record.value == b"from-one"
    assert await other_store.put("shared", b"from-two", expect_version=1) == 2
    with pytest.raises(ConflictError):
        await store.put("shared", b"stale", expect_version=1)


async def test_closed_store_refuses_calls(request: pytest.FixtureRequest, backend: Backend) -> None:
    opened = await backend.open()
    await opened.close()
    with pytest.raises(StoreError):
        await opened.get("k")


# --- PostgreSQL only --------------------------------------------------------------------


@pytest.fixture
def pg(pg_server: PgServer) -> PgServer:
    return pg_server


async def test_postgres_wrong_password_does_not_leak(pg: PgServer) -> None:
    dsn = pg.dsn(password="Sup3r-Secret-Pw")
    with pytest.raises(StoreError) as caught:
        await PostgresStore.open(dsn)
    shown = f"{caught.value} {caught.value.hint} {caught.value.to_dict()}"
    assert "Sup3r-Secret-Pw" not in shown
    assert f"127.0.0.1:{pg.port}" in str(caught.value)
    assert "PostgreSQL is running" in (caught.value.hint or "")


async def test_postgres_repr_hides_password(pg: PgServer) -> None:
    dsn = pg.new_database()
    opened = await PostgresStore.open(dsn)
    try:
        assert pg.password not in repr(opened)
        assert "postgres@127.0.0.1" in repr(opened)
    finally:
        await opened.close()


async def test_postgres_reconnects_after_the_server_drops_it(pg: PgServer) -> None:
    dsn = pg.new_database()
    dbname = dsn.rsplit("/", 1)[1]
    opened = await PostgresStore.open(dsn)
    try:
        await opened.put("k", b"before")
        pg.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{dbname}' AND application_name = 'socle'"
        )
        # The call that finds the connection dead may fail (it cannot know if a write
        # happened); the one after must work on a fresh connection.
        try:
            await opened.get("k")
        except StoreError as exc:
            assert exc.hint and "PostgreSQL is running" in exc.hint
        record = await opened.get("k")
        assert record is not None and record.value == b"before"
        assert await opened.put("k", b"after", expect_version=1) == 2
    finally:
        await opened.close()


async def test_postgres_cancelled_write_leaves_the_store_usable(pg: PgServer) -> None:
    """A write stuck behind another process's key lock can be cancelled, then retried."""
    dsn = pg.new_database()
    opened = await PostgresStore.open(dsn)
    holder = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        await holder.execute("SELECT pg_advisory_lock(%s, %s)", (KEY_LOCKS, lock_id("k")))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(opened.put("k", b"stuck"), 0.5)
        assert await opened.put("other", b"v") == 1  # other keys are not blocked
        await holder.execute("SELECT pg_advisory_unlock(%s, %s)", (KEY_LOCKS, lock_id("k")))
        assert await opened.put("k", b"after", expect_version=0) == 1
    finally:
        await holder.close()
        await opened.close()


async def test_postgres_two_instances_create_the_table_at_once(pg: PgServer) -> None:
    dsn = pg.new_database()
    stores = await asyncio.gather(*(PostgresStore.open(dsn) for _ in range(4)))
    try:
        assert await stores[0].put("k", b"v") == 1
        assert await stores[3].get("k") is not None
    finally:
        for opened in stores:
            await opened.close()


async def test_postgres_refuses_a_table_without_c_collation(pg: PgServer) -> None:
    """A key column in the database's collation could sort by locale: refuse, say how to fix."""
    dsn = pg.new_database()
    pg.psql(
        "CREATE TABLE socle_kv (key text PRIMARY KEY, value bytea NOT NULL, "
        "version bigint NOT NULL)",
        dbname=dsn.rsplit("/", 1)[1],
    )
    with pytest.raises(StoreError, match="collation") as caught:
        await PostgresStore.open(dsn)
    assert caught.value.hint and 'COLLATE "C"' in caught.value.hint


async def test_postgres_refuses_keys_it_cannot_store(pg: PgServer) -> None:
    opened = await PostgresStore.open(pg.new_database())
    try:
        for key in ["nul\x00key", "lone\ud800surrogate"]:
            with pytest.raises(StoreError):
                await opened.put(key, b"v")
            with pytest.raises(StoreError):
                await opened.get(key)
        assert await opened.put("fine", b"v") == 1  # the connection survived
    finally:
        await opened.close()
