"""A state store that records every write in the platform audit log.

Wraps any :class:`~socle.state.store.StateStore` (SQLite, PostgreSQL, memory): reads pass
through untouched; ``put``, ``delete`` and ``commit`` are recorded after they return or
fail, with the keys they touched (never the values), the actor of the current context and
the result (``ok``, ``conflict``, ``error``). Because every subsystem writes through the
store, this is where "every state change" is caught without each one remembering to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from socle.errors import ConflictError
from socle.observe.audit.actor import current_actor
from socle.observe.audit.log import PlatformAudit, trace_id
from socle.state.store import Delete, Op, Record, StateStore


class AuditedStore:
    """``inner`` with every write audited in ``audit``."""

    def __init__(self, inner: StateStore, audit: PlatformAudit) -> None:
        self.inner = inner
        self._audit = audit

    async def _record(self, op: str, keys: list[str], result: str) -> None:
        actor = current_actor()
        entry: dict[str, Any] = {
            "kind": "change",
            "who": actor.who,
            "request_id": actor.request_id,
            "op": op,
            "keys": keys,
            "result": result,
        }
        entry["trace_id"] = trace_id()
        await asyncio.to_thread(self._audit.append, entry)

    async def get(self, key: str) -> Record | None:
        return await self.inner.get(key)

    async def scan(self, prefix: str) -> list[Record]:
        return await self.inner.scan(prefix)

    async def keys(self, prefix: str) -> list[str]:
        return await self.inner.keys(prefix)

    async def put(self, key: str, value: bytes, *, expect_version: int | None = None) -> int:
        try:
            version = await self.inner.put(key, value, expect_version=expect_version)
        except BaseException as exc:
            await self._record("put", [key], _result(exc))
            raise
        await self._record("put", [key], "ok")
        return version

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        try:
            existed = await self.inner.delete(key, expect_version=expect_version)
        except BaseException as exc:
            await self._record("delete", [key], _result(exc))
            raise
        if existed:
            await self._record("delete", [key], "ok")
        return existed

    async def commit(self, ops: Sequence[Op]) -> None:
        keys = [("-" if isinstance(op, Delete) else "+") + op.key for op in ops]
        try:
            await self.inner.commit(ops)
        except BaseException as exc:
            await self._record("commit", keys, _result(exc))
            raise
        await self._record("commit", keys, "ok")

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Backend extras (a path, a DSN) stay reachable through the wrapper.
        return getattr(self.inner, name)


def _result(exc: BaseException) -> str:
    if isinstance(exc, ConflictError):
        return "conflict"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


__all__ = ["AuditedStore"]
