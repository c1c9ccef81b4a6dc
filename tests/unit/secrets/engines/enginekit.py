"""Helpers for engine unit tests: a controllable clock, mount info, a request shortcut."""

from __future__ import annotations

from typing import Any

from socle.secrets.backend import Backend, MountInfo, Operation, Request, Response, SecretsError

START_NS = 1_700_000_000_123_456_789


class FakeClock:
    """Nanosecond clock that only moves when a test says so."""

    def __init__(self, start_ns: int = START_NS) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1e9)


def mount(
    path: str = "secret/", type_: str = "kv", options: dict[str, str] | None = None
) -> MountInfo:
    return MountInfo(
        path=path,
        type=type_,
        uuid="00000000-0000-0000-0000-000000000001",
        accessor=f"{type_}_1234",
        options=options or {},
    )


async def call(
    backend: Backend,
    operation: Operation | str,
    path: str,
    data: dict[str, Any] | None = None,
    query: dict[str, str] | None = None,
    mount_point: str = "secret/",
) -> Response:
    request = Request(
        operation=Operation(operation),
        path=path,
        mount_point=mount_point,
        data=data or {},
        query=query or {},
    )
    return await backend.handle(request)


async def fails(
    backend: Backend,
    operation: Operation | str,
    path: str,
    data: dict[str, Any] | None = None,
    query: dict[str, str] | None = None,
) -> SecretsError:
    """The error a request raises; fails the test if it succeeds."""
    try:
        response = await call(backend, operation, path, data, query)
    except SecretsError as exc:
        return exc
    raise AssertionError(f"expected an error, got {response!r}")


async def exists(backend: Backend, path: str) -> bool:
    return await backend.exists(Request(operation=Operation.UPDATE, path=path, mount_point="x/"))
