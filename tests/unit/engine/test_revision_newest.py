"""``RevisionLog.newest``: newest first, and a caller that stops early reads no more
records than it used (an environment's history among many revisions)."""

from __future__ import annotations

import asyncio

from socle.engine.revisions import RevisionLog
from socle.state.memory import MemoryData, MemoryStore
from socle.state.store import Record


class CountingStore(MemoryStore):
    """The in-memory store, counting record reads."""

    reads = 0

    async def get(self, key: str) -> Record | None:
        self.reads += 1
        return await super().get(key)


def test_newest_first_and_reads_only_what_is_used() -> None:
    async def run() -> None:
        store = CountingStore(MemoryData())
        log = RevisionLog(store)
        for n in range(30):
            fields = {"who": "t", "source": "s", "env": None, "digest": "d", "plan": {},
                      "environment": "prod" if n % 10 == 0 else f"dev{n}"}  # fmt: skip
            await log.create(fields, {})
        every = [r.number async for r in log.newest()]
        assert every == list(range(30, 0, -1))
        assert [r.number for r in await log.list(limit=0)] == every
        store.reads = 0
        found = []
        async for revision in log.newest():
            if revision.environment == "prod":
                found.append(revision.number)
                if len(found) == 2:
                    break
        assert found == [21, 11]
        assert store.reads == 20  # revisions 30 down to 11, not all 30

    asyncio.run(run())
