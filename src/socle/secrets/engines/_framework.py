"""The small framework every engine is written in: path routing, locks, JSON storage, time.

Vault's engines declare paths as regular expressions with one handler per operation and an
optional existence check; the router answers ``unsupported path`` (404) when no pattern
matches and ``unsupported operation`` (405) when the pattern exists but not the verb. We
keep that shape so that each engine reads as a table of its API, and so that errors for
unknown paths look the same in every engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from socle.secrets.backend import Operation, Request, Response, SecretsError, Storage

# Re-exported: engines format Go durations from here (the one helper lives in units).
from socle.units import go_duration as go_duration

Params = Mapping[str, str]
Handler = Callable[[Request, Params], Awaitable[Response]]
ExistenceCheck = Callable[[Request, Params], Awaitable[bool]]
Clock = Callable[[], int]
"""Nanoseconds since the epoch; tests pass a fake one to control time."""

NAME = r"\w(?:[\w.-]*\w)?"
"""Vault's ``GenericNameRegex``: names of keys, roles and connections."""

UNSUPPORTED_PATH = "unsupported path"
UNSUPPORTED_OPERATION = "unsupported operation"

SYSTEM_TTL = 32 * 24 * 3600.0
"""Vault's system default and maximum lease TTL (768h), for engines whose mount sets none."""


def system_clock() -> int:
    return time.time_ns()


@dataclass(frozen=True)
class Route:
    pattern: str
    handlers: Mapping[Operation, Handler]
    exists: ExistenceCheck | None = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern, re.DOTALL))


class Router:
    """Finds the route for a request path and calls the handler for its operation."""

    def __init__(self, routes: list[Route], *, not_found: str = UNSUPPORTED_PATH) -> None:
        self._routes = routes
        self._not_found = not_found

    @property
    def routes(self) -> list[Route]:
        return list(self._routes)

    def _match(self, path: str) -> tuple[Route, Params]:
        for route in self._routes:
            match = route.regex.fullmatch(path)
            if match is not None:
                params = {k: v for k, v in match.groupdict().items() if v is not None}
                return route, params
        raise SecretsError(404, self._not_found)

    async def dispatch(self, request: Request) -> Response:
        route, params = self._match(request.path)
        handler = route.handlers.get(request.operation)
        if handler is None and request.operation in (Operation.CREATE, Operation.UPDATE):
            # Like Vault: a path without its own create handler treats create as update.
            other = Operation.UPDATE if request.operation is Operation.CREATE else Operation.CREATE
            handler = route.handlers.get(other)
        if handler is None:
            raise SecretsError(405, UNSUPPORTED_OPERATION)
        return await handler(request, params)

    async def exists(self, request: Request) -> bool:
        """Paths without an existence check count as existing: a write needs ``update``."""
        try:
            route, params = self._match(request.path)
        except SecretsError:
            return True
        if route.exists is None:
            return True
        return await route.exists(request, params)


class RoutedBackend:
    """The part of the Backend protocol every routed engine shares: dispatch and existence
    checks go through the engine's :class:`Router`."""

    _router: Router

    async def handle(self, request: Request) -> Response:
        return await self._router.dispatch(request)

    async def exists(self, request: Request) -> bool:
        return await self._router.exists(request)

    def help_routes(self) -> list[tuple[str, str]]:
        """(pattern, synopsis) of each route, for ``path-help``."""
        out = []
        for route in self._router.routes:
            doc = next((h.__doc__ for h in route.handlers.values() if h.__doc__), None)
            verbs = sorted({op.value for op in route.handlers})
            synopsis = doc.strip().splitlines()[0] if doc else "Operations: " + ", ".join(verbs)
            out.append((route.pattern, synopsis))
        return out


def handlers(
    *,
    read: Handler | None = None,
    write: Handler | None = None,
    delete: Handler | None = None,
    list_: Handler | None = None,
    patch: Handler | None = None,
) -> dict[Operation, Handler]:
    """Operation table for a route; ``write`` serves both create and update."""
    table: dict[Operation, Handler] = {}
    if read is not None:
        table[Operation.READ] = read
    if write is not None:
        table[Operation.CREATE] = write
        table[Operation.UPDATE] = write
    if delete is not None:
        table[Operation.DELETE] = delete
    if list_ is not None:
        table[Operation.LIST] = list_
    if patch is not None:
        table[Operation.PATCH] = patch
    return table


class KeyLocks:
    """Striped locks: writes to one key are serialized, different keys rarely contend.

    A fixed number of stripes keeps memory bounded whatever keys callers invent.
    """

    def __init__(self, stripes: int = 64) -> None:
        self._locks = [asyncio.Lock() for _ in range(stripes)]

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        digest = hashlib.blake2s(key.encode("utf-8", "surrogatepass"), digest_size=4).digest()
        lock = self._locks[int.from_bytes(digest, "big") % len(self._locks)]
        async with lock:
            yield


async def get_json(storage: Storage, key: str) -> Any:
    raw = await storage.get(key)
    if raw is None:
        return None
    return json.loads(raw)


def json_bytes(value: Any) -> bytes:
    """How engines store JSON (compact, sorted keys): one encoding for put and put_many."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


async def put_json(storage: Storage, key: str, value: Any) -> None:
    await storage.put(key, json_bytes(value))


async def list_all(storage: Storage, prefix: str) -> list[str]:
    """Every key below ``prefix`` (recursively), relative to it."""
    found: list[str] = []
    pending = [""]
    while pending:
        sub = pending.pop()
        for child in await storage.list(prefix + sub):
            if child.endswith("/"):
                pending.append(sub + child)
            else:
                found.append(sub + child)
    return sorted(found)


def rfc3339_nano(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` in UTC, as Vault prints timestamps (trailing zeros cut)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        base += "." + f"{nanos:09d}".rstrip("0")
    return base + "Z"


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_response(keys: list[str]) -> Response:
    """Vault answers an empty listing with a bare 404."""
    if not keys:
        raise SecretsError(404)
    return Response(data={"keys": keys})
