"""In-memory state store: the same contract as SQLite and PostgreSQL, in one process.

For tests that need a real store without a file or a server, and for throw-away runs
(``SOCLE_STORE=memory://``). It passes the same conformance suite as the other backends.

Stores opened with the same ``memory://name`` through the same registry share one
:class:`MemoryData` (the registry keeps it), so that two instances can race each other as
two processes would on a database; different registries never share anything (no global).

Every call is atomic because it does its whole read-check-write without awaiting anything
in between: on one event loop, nothing else can run in the middle.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from urllib.parse import urlsplit

from socle.errors import ConfigError, ConflictError, StoreError
from socle.state.store import Delete, Op, Put, Record, prefix_end


class MemoryData:
    """The shared content of one named in-memory store: key → (value, version)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[bytes, int]] = {}
        self.sorted_keys: list[str] = []


def _check_key(key: str) -> None:
    """Refuse what the other backends cannot store either (lone surrogates)."""
    try:
        key.encode("utf-8")
    except UnicodeError as exc:
        raise StoreError(
            f"state store memory: {exc}",
            hint="keys must be valid Unicode text (no lone surrogates)",
        ) from exc


class MemoryStore:
    """The :class:`~socle.state.store.StateStore` in a dict and a sorted key list."""

    def __init__(self, data: MemoryData, name: str = "") -> None:
        self._data = data
        self._name = name
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore({self._name!r})"

    @classmethod
    def open(cls, url: str, shared: dict[str, object]) -> MemoryStore:
        """Open ``memory://name`` (``memory://`` alone: a store of its own)."""
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(
                "an in-memory store URL is memory:// or memory://NAME",
                hint="use memory://NAME to share one store between openers",
            )
        name = parts.netloc
        if not name:
            return cls(MemoryData())
        data = shared.setdefault(name, MemoryData())
        assert isinstance(data, MemoryData)
        return cls(data, name)

    def _live(self) -> MemoryData:
        if self._closed:
            raise StoreError(f"state store memory://{self._name} is closed")
        return self._data

    async def _yield(self) -> None:
        # A real store suspends on I/O; do the same so that callers cannot rely on a call
        # completing without a switch.
        await asyncio.sleep(0)

    async def get(self, key: str) -> Record | None:
        await self._yield()
        found = self._live().values.get(key)
        return Record(key, found[0], found[1]) if found else None

    def _range(self, prefix: str) -> list[str]:
        data = self._live()
        start = bisect.bisect_left(data.sorted_keys, prefix)
        end_key = prefix_end(prefix)
        stop = (
            len(data.sorted_keys)
            if end_key is None
            else bisect.bisect_left(data.sorted_keys, end_key)
        )
        return data.sorted_keys[start:stop]

    async def scan(self, prefix: str) -> list[Record]:
        await self._yield()
        values = self._live().values
        return [Record(k, values[k][0], values[k][1]) for k in self._range(prefix)]

    async def keys(self, prefix: str) -> list[str]:
        await self._yield()
        return self._range(prefix)

    async def put(self, key: str, value: bytes, *, expect_version: int | None = None) -> int:
        await self._yield()
        return self._commit([Put(key, value, expect_version)])[0]

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        await self._yield()
        return bool(self._commit([Delete(key, expect_version)])[0])

    async def commit(self, ops: Sequence[Op]) -> None:
        await self._yield()
        self._commit(ops)

    def _commit(self, ops: Sequence[Op]) -> list[int]:
        """Play ``ops`` on a copy of the touched keys, check every expectation, then write."""
        data = self._live()
        for op in ops:
            _check_key(op.key)
        staged: dict[str, tuple[bytes, int] | None] = {}
        results: list[int] = []
        for op in ops:
            current = staged[op.key] if op.key in staged else data.values.get(op.key)
            version = current[1] if current else 0
            if op.expect_version is not None and op.expect_version != version:
                raise ConflictError(
                    f"{op.key} is at version {version}, expected {op.expect_version}",
                    hint="another writer changed it; read it again and retry",
                )
            if isinstance(op, Put):
                staged[op.key] = (bytes(op.value), version + 1)
                results.append(version + 1)
            else:
                staged[op.key] = None
                results.append(version)
        for key, entry in staged.items():
            exists = key in data.values
            if entry is None:
                if exists:
                    del data.values[key]
                    del data.sorted_keys[bisect.bisect_left(data.sorted_keys, key)]
            else:
                data.values[key] = entry
                if not exists:
                    bisect.insort(data.sorted_keys, key)
        return results

    async def close(self) -> None:
        self._closed = True


__all__ = ["MemoryData", "MemoryStore"]
