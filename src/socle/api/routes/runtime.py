"""Instances' logs: the runtime's API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from socle.api.auth import Who
from socle.api.context import ApiContext, context
from socle.errors import ConfigError, NotFoundError
from socle.runtime.driver import LogLine
from socle.units import parse_duration

router = APIRouter(prefix="/api/v1")
Ctx = Annotated[ApiContext, Depends(context)]


@router.get("/apps/{name}/logs")
async def logs(
    name: str,
    ctx: Ctx,
    _: Who,
    since: str | None = None,
    follow: bool = False,
    instance: Annotated[int | None, Query(ge=0)] = None,
) -> StreamingResponse:
    since_time: float | None = None
    if since:
        try:
            since_time = time.time() - parse_duration(since)
        except ValueError as exc:
            raise ConfigError(f"since: {exc}", hint="e.g. since=10m, 2h or 30s") from None
    chosen = [
        i
        for i in ctx.driver.instances()
        if i.app == name and (instance is None or i.ordinal == instance)
    ]
    if not chosen:
        raise NotFoundError(
            f"app {name!r} has no instance"
            + (f" with ordinal {instance}" if instance is not None else ""),
            hint="see `socle status` for apps and instances",
        )
    streams = [ctx.driver.logs(i.id, since=since_time, follow=follow) for i in chosen]
    return StreamingResponse(
        _ndjson(_merge(streams, follow), ctx.redact), media_type="application/x-ndjson"
    )


async def _merge(streams: list[AsyncIterator[LogLine]], follow: bool) -> AsyncIterator[LogLine]:
    """Lines from several instances; sorted by time when not following, interleaved live."""
    if not follow:
        lines = [line for stream in streams async for line in stream]
        lines.sort(key=lambda line: line.time)
        for line in lines:
            yield line
        return
    queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=1000)

    async def pump(stream: AsyncIterator[LogLine]) -> None:
        async for line in stream:
            await queue.put(line)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        while True:
            yield await queue.get()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _ndjson(
    lines: AsyncIterator[LogLine], redact: Callable[[str], str]
) -> AsyncIterator[bytes]:
    """One JSON line per log line; secret values the app was given are masked, as CI
    systems do, so that `socle logs` never shows one even if the app prints it."""
    async for line in lines:
        record = {"time": line.time, "instance": line.instance, "stream": line.stream}
        yield (json.dumps({**record, "text": redact(line.text)}) + "\n").encode()
