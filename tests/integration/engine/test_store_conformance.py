"""State-store conformance suite: written once, run against every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from socle.engine.store import Delete, Put, StateStore
from socle.engine.store_sqlite import SqliteStore
from socle.errors import ConflictError


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    backend = await SqliteStore.open(tmp_path / "state.db")
    yield backend
    await backend.close()


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
