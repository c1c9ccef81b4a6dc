"""Consul blocking KV queries against hostile timing: a write that lands while the query
reads the store must wake it (no lost wake-up), in process through the ASGI app."""

from __future__ import annotations

import asyncio
import base64

import httpx

from socle.api.consul import create_consul_app
from socle.api.tokens import TokenStore
from socle.network.service import NetworkService
from socle.state.memory import MemoryData, MemoryStore
from socle.state.store import Record


class _NoInstances:
    def instances(self) -> list[object]:
        return []

    def subscribe(self, listener: object) -> None:
        return None


class RacingStore(MemoryStore):
    """A store whose next read of ``key`` lets another writer change it before the read
    returns (what a slow disk or a busy reader thread allows in production)."""

    def __init__(self) -> None:
        super().__init__(MemoryData())
        self.armed: str | None = None
        self.on_read: object = None

    async def get(self, key: str) -> Record | None:
        record = await super().get(key)
        if self.armed is not None and key.endswith(self.armed):
            self.armed = None
            write = self.on_read
            assert callable(write)
            await write()
        return record


async def test_a_write_during_the_read_of_a_blocking_query_wakes_it() -> None:
    store = RacingStore()
    network = NetworkService(store, _NoInstances())  # type: ignore[arg-type]
    tokens = TokenStore(store)
    token = await tokens.create("reader")
    app = create_consul_app(network, tokens)
    assert await network.kv.put("cfg/flag", b"old")
    entry = await network.kv.get("cfg/flag")
    assert entry is not None

    async def other_writer() -> None:
        assert await network.kv.put("cfg/flag", b"new")

    store.armed, store.on_read = "cfg/flag", other_writer
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://consul") as client:
        # wait=10m: without the fix the query sleeps until then (the generous bound below
        # fails it long before, without asserting on speed).
        response = await asyncio.wait_for(
            client.get(
                "/v1/kv/cfg/flag",
                params={"index": str(entry.modify_index), "wait": "10m"},
                headers={"X-Consul-Token": token},
            ),
            timeout=60,
        )
    assert response.status_code == 200
    body = response.json()
    assert base64.b64decode(body[0]["Value"]) == b"new"
    assert int(response.headers["X-Consul-Index"]) > entry.modify_index
