"""KV v1 engine: plain read/write/delete/list at any path."""

from __future__ import annotations

import pytest

from socle.secrets.backend import Backend
from socle.secrets.engines.kv import kv_factory
from tests.unit.secrets.engines.enginekit import call, exists, fails, mount
from tests.unit.secrets.engines.memstorage import MemStorage


@pytest.fixture
async def kv() -> Backend:
    return await kv_factory(MemStorage(), mount(options={"version": "1"}))


async def test_write_read_replace_delete(kv: Backend) -> None:
    assert not await exists(kv, "app/db")
    assert (await call(kv, "create", "app/db", {"user": "u", "n": 1})).status is None
    assert await exists(kv, "app/db")
    read = await call(kv, "read", "app/db")
    assert read.data == {"user": "u", "n": 1}
    await call(kv, "update", "app/db", {"user": "v"})
    read = await call(kv, "read", "app/db")
    assert read.data == {"user": "v"}
    await call(kv, "delete", "app/db")
    assert (await fails(kv, "read", "app/db")).status == 404


async def test_list(kv: Backend) -> None:
    for path in ["a/b", "a/c/d", "e"]:
        await call(kv, "create", path, {"x": 1})
    assert (await call(kv, "list", "")).data == {"keys": ["a/", "e"]}
    assert (await call(kv, "list", "a")).data == {"keys": ["b", "c/"]}
    assert (await call(kv, "list", "a/")).data == {"keys": ["b", "c/"]}
    assert (await fails(kv, "list", "zzz/")).status == 404


@pytest.mark.parametrize(
    ("path", "data"),
    [("", {"x": 1}), ("k", {}), ("folder/", {"x": 1})],
)
async def test_bad_writes(kv: Backend, path: str, data: dict[str, object]) -> None:
    assert (await fails(kv, "create", path, data)).status == 400


async def test_patch_is_not_supported(kv: Backend) -> None:
    assert (await fails(kv, "patch", "k", {"x": 1})).status == 405


async def test_default_is_version_one() -> None:
    backend = await kv_factory(MemStorage(), mount())
    await call(backend, "create", "data/looks-like-v2", {"x": 1})
    assert (await call(backend, "read", "data/looks-like-v2")).data == {"x": 1}
