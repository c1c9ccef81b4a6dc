"""An in-memory :class:`socle.secrets.backend.Storage` for engine unit tests.

A small real implementation of our own interface (not a mock): keys are plain strings,
``list`` answers direct children with folders ending in ``/`` exactly as the core's
barrier-backed storage promises.
"""

from __future__ import annotations


class MemStorage:
    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.items.get(key)

    async def put(self, key: str, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise TypeError("storage values are bytes")
        self.items[key] = bytes(value)

    async def delete(self, key: str) -> None:
        self.items.pop(key, None)

    async def list(self, prefix: str) -> list[str]:
        children: set[str] = set()
        for key in self.items:
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if not rest:
                continue
            head, sep, _ = rest.partition("/")
            children.add(head + sep)
        return sorted(children)
