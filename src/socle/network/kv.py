"""The Consul-compatible key/value store, kept in the state store.

Each Consul key is one state-store record under :data:`PREFIX` holding the value (base64),
its flags and its Consul indexes. ``CreateIndex``/``ModifyIndex`` come from the KV's own
:class:`~socle.network.registry.ChangeIndex` (it only grows, across restarts too), kept apart
from the catalog's so that a KV write never wakes catalog watchers (the ingress, DNS
caches); a blocking KV query waits on it.

Check-and-set (``?cas=N``) is the store's own compare-and-swap: the record is read, its
``ModifyIndex`` compared, and written with the version it was read at, so two writers that
race cannot both win. ``cas=0`` means "only if the key does not exist" (Consul's rule).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from socle.errors import ConfigError, ConflictError
from socle.network.registry import ChangeIndex
from socle.state.store import Delete, Record, StateStore

PREFIX = "network/kv/"

MAX_KEY_CHARS = 512
MAX_VALUE_BYTES = 512 * 1024
"""Consul's own limit for one value."""

_RETRIES = 8


@dataclass(frozen=True)
class KVEntry:
    key: str
    value: bytes | None
    flags: int
    create_index: int
    modify_index: int

    def to_consul(self) -> dict[str, object]:
        """Consul's JSON shape of one entry (``Value`` base64, or null)."""
        return {
            "LockIndex": 0,
            "Key": self.key,
            "Flags": self.flags,
            "Value": None if self.value is None else base64.b64encode(self.value).decode(),
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


def check_key(key: str) -> str:
    """``key`` if Consul would take it; ConfigError otherwise (nothing is written)."""
    if not key:
        raise ConfigError("missing key name", hint="PUT /v1/kv/NAME")
    if len(key) > MAX_KEY_CHARS:
        raise ConfigError(f"key is longer than {MAX_KEY_CHARS} characters")
    if "\x00" in key or any(ord(c) < 0x20 for c in key):
        raise ConfigError("key contains control characters")
    return key


def _decode(record: Record) -> KVEntry:
    data = json.loads(record.value)
    raw = data.get("value")
    return KVEntry(
        key=record.key[len(PREFIX) :],
        value=None if raw is None else base64.b64decode(raw),
        flags=int(data.get("flags", 0)),
        create_index=int(data["create"]),
        modify_index=int(data["modify"]),
    )


def _encode(value: bytes | None, flags: int, create: int, modify: int) -> bytes:
    raw = None if value is None else base64.b64encode(value).decode()
    return json.dumps({"value": raw, "flags": flags, "create": create, "modify": modify}).encode()


class ConsulKV:
    """Consul's KV semantics over a :class:`StateStore`."""

    def __init__(self, store: StateStore, changes: ChangeIndex | None = None) -> None:
        self._store = store
        self._changes = changes or ChangeIndex()
        """The index of the last KV write (or of the start: deletions are not kept)."""

    @property
    def index(self) -> int:
        return self._changes.value

    async def wait(self, index: int, timeout: float) -> int:
        """Block until a KV write past ``index`` or ``timeout`` seconds; the index."""
        return await self._changes.wait(index, timeout)

    def _written(self) -> int:
        return self._changes.advance()

    async def get(self, key: str) -> KVEntry | None:
        record = await self._store.get(PREFIX + key)
        return None if record is None else _decode(record)

    async def entries(self, prefix: str) -> list[KVEntry]:
        """Every entry whose key starts with ``prefix``, sorted by key."""
        return [_decode(r) for r in await self._store.scan(PREFIX + prefix)]

    async def keys(self, prefix: str, separator: str | None = None) -> list[str]:
        """Keys under ``prefix``; with ``separator``, cut after its first occurrence past
        the prefix (Consul's "folders"), without duplicates."""
        out: list[str] = []
        seen: set[str] = set()
        for full in await self._store.keys(PREFIX + prefix):
            key = full[len(PREFIX) :]
            if separator:
                cut = key.find(separator, len(prefix))
                if cut >= 0:
                    key = key[: cut + len(separator)]
            if key not in seen:
                seen.add(key)
                out.append(key)
        return out

    async def put(
        self, key: str, value: bytes | None, *, flags: int = 0, cas: int | None = None
    ) -> bool:
        """Write ``key``; False when ``cas`` does not match (nothing written)."""
        check_key(key)
        if value is not None and len(value) > MAX_VALUE_BYTES:
            raise ConfigError(f"value is larger than {MAX_VALUE_BYTES} bytes (Consul's limit)")
        if not 0 <= flags < 2**64:
            raise ConfigError("flags must be an unsigned 64-bit integer")
        for _ in range(_RETRIES):
            record = await self._store.get(PREFIX + key)
            known = None if record is None else _decode(record)
            if cas is not None:
                if cas == 0 and known is not None:
                    return False
                if cas != 0 and (known is None or known.modify_index != cas):
                    return False
            index = self._changes.peek()
            create = index if known is None else known.create_index
            try:
                await self._store.put(
                    PREFIX + key,
                    _encode(value, flags, create, index),
                    expect_version=0 if record is None else record.version,
                )
            except ConflictError:
                if cas is not None:
                    return False  # someone else wrote between our read and write
                continue
            self._changes.advance(at_least=index)  # the record says `index`: reach it
            return True
        raise ConflictError(f"key {key!r} keeps changing; try again")

    async def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        """Delete ``key`` (or every key under it with ``recurse``); False when ``cas`` does
        not match. Deleting what does not exist succeeds, like Consul."""
        if recurse:
            records = await self._store.scan(PREFIX + key)
            if records:
                await self._store.commit([Delete(r.key, expect_version=r.version) for r in records])
                self._written()
            return True
        record = await self._store.get(PREFIX + key)
        if record is None:
            return cas is None or cas == 0
        if cas is not None and _decode(record).modify_index != cas:
            return False
        try:
            await self._store.delete(PREFIX + key, expect_version=record.version)
        except ConflictError:
            if cas is not None:
                return False
            await self._store.delete(PREFIX + key)
        self._written()
        return True


__all__ = ["MAX_VALUE_BYTES", "PREFIX", "ConsulKV", "KVEntry", "check_key"]
