"""The barrier: AES-GCM with the path as associated data, terms, tamper detection."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from socle.secrets.core.barrier import DATA_PREFIX, Barrier, InvalidUnsealKey, StorageView
from socle.secrets.core.errors import IntegrityError, SealedError
from socle.secrets.core.keyring import Keyring
from socle.state.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "state.db")
    yield store
    await store.close()


async def _unlocked(store: SqliteStore) -> tuple[Barrier, bytes]:
    barrier = Barrier(store)
    unseal_key = secrets.token_bytes(32)
    keyring = Keyring.new(secrets.token_bytes(32))
    version = await barrier.initialize(unseal_key, keyring)
    await barrier.commit_seal_config({"secret_shares": 1, "secret_threshold": 1})
    barrier.unlock_with(keyring, version)
    return barrier, unseal_key


async def test_roundtrip_and_ciphertext_at_rest(store: SqliteStore) -> None:
    barrier, _ = await _unlocked(store)
    await barrier.put("logical/x/secret", b"the-plaintext-marker")
    assert await barrier.get("logical/x/secret") == b"the-plaintext-marker"
    record = await store.get(DATA_PREFIX + "logical/x/secret")
    assert record is not None and b"the-plaintext-marker" not in record.value


async def test_fresh_nonce_per_write(store: SqliteStore) -> None:
    barrier, _ = await _unlocked(store)
    one = barrier.encrypt("a", b"same")
    two = barrier.encrypt("a", b"same")
    assert one != two


async def test_moving_a_ciphertext_to_another_path_fails(store: SqliteStore) -> None:
    barrier, _ = await _unlocked(store)
    await barrier.put("token/id/aaa", b"root token entry")
    record = await store.get(DATA_PREFIX + "token/id/aaa")
    assert record is not None
    await store.put(DATA_PREFIX + "token/id/bbb", record.value)
    fresh = Barrier(store)  # no cache: read what is really stored
    fresh.unlock_with(barrier._require(), 1)
    with pytest.raises(IntegrityError) as caught:
        await fresh.get("token/id/bbb")
    assert caught.value.status == 500 and "token/id/bbb" in caught.value.errors[0]


async def test_tampering_is_detected(store: SqliteStore) -> None:
    barrier, _ = await _unlocked(store)
    blob = barrier.encrypt("p", b"value")
    for index in (0, 3, 10, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        with pytest.raises(IntegrityError):
            barrier.decrypt("p", bytes(tampered))
    with pytest.raises(IntegrityError):
        barrier.decrypt("p", blob[:20])


async def test_rotation_keeps_old_entries_readable(store: SqliteStore) -> None:
    barrier, unseal_key = await _unlocked(store)
    await barrier.put("old", b"written with term 1")
    term = await barrier.rotate()
    assert term.term == 2 and barrier.key_status().term == 2
    await barrier.put("new", b"written with term 2")
    old = await store.get(DATA_PREFIX + "old")
    new = await store.get(DATA_PREFIX + "new")
    assert old is not None and new is not None
    assert int.from_bytes(old.value[1:5], "big") == 1
    assert int.from_bytes(new.value[1:5], "big") == 2
    # A new process unseals, reads both terms from the persisted keyring.
    again = Barrier(store)
    await again.unlock(unseal_key)
    assert await again.get("old") == b"written with term 1"
    assert await again.get("new") == b"written with term 2"
    assert again.key_status().term == 2


async def test_wrong_unseal_key_and_sealed_state(store: SqliteStore) -> None:
    barrier, _ = await _unlocked(store)
    await barrier.put("x", b"1")
    other = Barrier(store)
    with pytest.raises(InvalidUnsealKey):
        await other.unlock(secrets.token_bytes(32))
    assert other.sealed
    with pytest.raises(SealedError):
        await other.get("x")
    barrier.lock()
    with pytest.raises(SealedError):
        await barrier.put("x", b"2")


async def test_storage_view_lists_children_and_clears(store: SqliteStore) -> None:
    barrier, _ = await _unlocked(store)
    view = StorageView(barrier, "logical/uuid-1/")
    other = StorageView(barrier, "logical/uuid-2/")
    for key in ("a", "b/c", "b/d/e", "f/"):
        await view.put(key, b"v")
    await other.put("a", b"other")
    assert await view.list("") == ["a", "b/", "f/"]
    assert await view.list("b/") == ["c", "d/"]
    assert await view.clear() == 4
    assert await view.list("") == []
    assert await other.get("a") == b"other"


async def test_scan_skips_damaged_entries(store: SqliteStore) -> None:
    barrier, _ = await _unlocked(store)
    await barrier.put("lease/id/a", b"1")
    await barrier.put("lease/id/b", b"2")
    record = await store.get(DATA_PREFIX + "lease/id/a")
    assert record is not None
    await store.put(DATA_PREFIX + "lease/id/b", record.value)  # a moved ciphertext
    assert await barrier.scan("lease/id/") == [("lease/id/a", b"1")]


async def test_interrupted_init_leaves_the_store_uninitialised(store: SqliteStore) -> None:
    from socle.secrets.core.seal import SealManager

    first = SealManager(Barrier(store))
    await first.load()
    await first.initialize(3, 2)  # crash before commit: keys written, config not
    again = SealManager(Barrier(store))
    await again.load()
    assert not again.initialized
    result = await again.initialize(3, 2)
    await again.commit(result)
    third = SealManager(Barrier(store))
    await third.load()
    assert third.initialized
    for share in result.shares[:2]:
        unlocked = await third.submit(share)
    assert unlocked


async def test_storage_view_put_many_is_one_commit_under_its_prefix(store: SqliteStore) -> None:
    barrier, _ = await _unlocked(store)
    view = StorageView(barrier, "logical/uuid-1/")
    await view.put("old", b"0")
    before = store.group_commits
    await view.put_many({"a": b"1", "b/c": b"2"}, ["old"])
    assert store.group_commits == before + 1
    assert await view.get("a") == b"1" and await view.get("b/c") == b"2"
    assert await view.get("old") is None
    assert await store.get(DATA_PREFIX + "logical/uuid-1/a") is not None  # ciphertext there
    assert await barrier.get("a") is None  # nothing outside the view's prefix
