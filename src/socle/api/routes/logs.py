"""The log store's API: LogQL queries, live tail and verification under ``/api/v1/logs``,
and the Loki-compatible API under ``/loki/api/v1`` (push, query, query_range, labels,
label values, tail) so that Promtail/Grafana-style clients work unchanged.

Both need a token (:class:`socle.api.tokens.TokenGate` guards ``/loki`` too; the WebSocket
tail checks it itself, as WebSockets pass the gate). Bodies are bounded by the listener's
``max_body_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, WebSocket
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketDisconnect

from socle.api.auth import Who
from socle.api.context import ApiContext, context
from socle.api.tokens import bearer, out_of_scope
from socle.errors import ConfigError, NotFoundError, SocleError
from socle.observe.logs import loki, pushwire
from socle.observe.logs.logql import LogQuery, MetricQuery, parse
from socle.observe.logs.logql import Query as LogQLQuery
from socle.observe.logs.model import NS, Entry, Row, Series
from socle.observe.logs.service import LogService
from socle.units import parse_duration

router = APIRouter(prefix="/api/v1/logs")
loki_router = APIRouter(prefix="/loki/api/v1")
Ctx = Annotated[ApiContext, Depends(context)]
MAX_LIMIT = 5000
MAX_STEPS = 11_000
DEFAULT_SINCE = 3600.0


def _service(ctx: ApiContext) -> LogService:
    if ctx.logs is None:
        raise NotFoundError("this control plane has no log store")
    return ctx.logs


def _duration(value: str, what: str) -> float:
    try:
        return float(value) if value.replace(".", "", 1).isdigit() else parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}", hint="e.g. 10m, 2h or 30s") from None


def _window(
    start: str | None, end: str | None, since: str | None, now: int | None = None
) -> tuple[int, int]:
    """[start, end] in ns: ``end`` defaults to now, ``start`` to ``end - since`` (1h)."""
    end_ns = loki.parse_time(end, "end") if end else (now or time.time_ns())
    if start:
        start_ns = loki.parse_time(start, "start")
    else:
        start_ns = end_ns - int((_duration(since, "since") if since else DEFAULT_SINCE) * NS)
    if start_ns > end_ns:
        raise ConfigError("start: must not be after end")
    # A huge ``since`` reaches before 1970: the store's 64-bit timestamps start there.
    return max(start_ns, 0), end_ns


def _since(since: str, now: int | None = None) -> int:
    """``since`` ago in ns, never before 1970 (the store's 64-bit timestamps start there:
    a live tail from before would fail in the store, after its stream started)."""
    return max((now or time.time_ns()) - int(_duration(since, "since") * NS), 0)


def _step(step: str | None, start: int, end: int) -> int:
    if step:
        seconds = _duration(step, "step")
        if seconds <= 0:
            raise ConfigError("step: must be positive")
        nanos = int(seconds * NS)
    else:  # Loki's default: about 250 points over the window, at least one second
        nanos = max(NS, (end - start) // 250)
    if (end - start) // nanos > MAX_STEPS:
        raise ConfigError(
            f"step: more than {MAX_STEPS} points in the window", hint="use a larger step"
        )
    return nanos


def _parse(query: str) -> LogQLQuery:
    if not query.strip():
        raise ConfigError("query: missing", hint='e.g. query={app="api"} |= "error"')
    return parse(query)


def _still_valid(ctx: ApiContext, token: str | None) -> Callable[[], Awaitable[bool]]:
    """Whether ``token`` still opens the API (asked by live tails: a revoked or expired
    token's tail ends instead of following every app's logs for ever)."""

    async def check() -> bool:
        return bool(token) and await ctx.tokens.check(token or "") is not None

    return check


def _series_dict(series: list[Any]) -> list[dict[str, object]]:
    return [{"labels": s.labels, "points": [[ts / NS, v] for ts, v in s.points]} for s in series]


class RangeQuery:
    """The parameters of a LogQL query over a window (ours and Loki's ``query_range``),
    parsed once: ``query``, ``start``/``end``/``since``, ``step``, ``limit``, ``direction``."""

    def __init__(
        self,
        query: str,
        since: str | None = None,
        start: str | None = None,
        end: str | None = None,
        step: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        direction: Annotated[str, Query(pattern="^(forward|backward)$")] = "backward",
    ) -> None:
        self.query, self.since, self.start, self.end, self.step = query, since, start, end, step
        self.limit = limit
        self.forward = direction == "forward"

    async def run(self, service: LogService) -> tuple[list[Series] | None, list[Row]]:
        """``(series, [])`` for a metric query, ``(None, rows)`` for a log query."""
        parsed = _parse(self.query)
        await service.check(parsed)
        start_ns, end_ns = _window(self.start, self.end, self.since)
        if isinstance(parsed, MetricQuery):
            step = _step(self.step, start_ns, end_ns)
            return await asyncio.to_thread(service.store.metric, parsed, start_ns, end_ns, step), []
        rows = await service.select(
            parsed, start_ns, end_ns, limit=self.limit, forward=self.forward
        )
        return None, rows


Range = Annotated[RangeQuery, Depends()]


@router.get("/query")
async def query_logs(ctx: Ctx, _: Who, params: Range) -> dict[str, object]:
    """A LogQL query: ``{"lines": [...]}`` for a log query (newest first unless
    ``direction=forward``), ``{"series": [...]}`` for counts over time."""
    series, rows = await params.run(_service(ctx))
    if series is not None:
        return {"series": _series_dict(series)}
    return {"lines": [row.to_dict() for row in rows]}


@router.get("/tail")
async def tail_logs(
    request: Request,
    ctx: Ctx,
    _: Who,
    query: str,
    since: str | None = None,
    limit: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = 100,
) -> StreamingResponse:
    """The last ``limit`` lines of a log query, then every new one (JSON lines) until the
    client goes away."""
    service = _service(ctx)
    parsed = _parse(query)
    await service.check(parsed)
    if not isinstance(parsed, LogQuery):
        raise ConfigError("query: tail needs a log query, not a metric query")
    start = _since(since) if since else None
    service.check_tail_capacity()

    allowed = _still_valid(ctx, bearer(request.scope.get("headers") or ()))

    async def lines() -> AsyncIterator[bytes]:
        async for row in service.tail(parsed, start=start, limit=limit, allowed=allowed):
            yield (json.dumps(row.to_dict()) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/verify")
async def verify_logs(ctx: Ctx, _: Who) -> dict[str, object]:
    """The integrity chain of sealed segments, checked now."""
    report = await asyncio.to_thread(_service(ctx).store.verify)
    return report.to_dict()


@router.get("/stats")
async def log_stats(ctx: Ctx, _: Who) -> dict[str, object]:
    service = _service(ctx)
    stats = await asyncio.to_thread(service.store.stats)
    if service.forwarder is not None:
        stats["forward"] = service.forwarder.status()
    stats["handler_dropped"] = service.handler.dropped
    return stats


@router.post("/seal")
async def seal_logs(ctx: Ctx, _: Who) -> dict[str, object]:
    """Seal what the hot table holds now (before an archive, or to verify it at once)."""
    service = _service(ctx)
    await service.run_pass()
    segment = await asyncio.to_thread(service.store.seal)
    return {"sealed": None if segment is None else segment.n}


# -- Loki --------------------------------------------------------------------------------


@loki_router.post("/push", status_code=204)
async def loki_push(request: Request, ctx: Ctx, _: Who) -> Response:
    """Loki's push: protobuf+snappy (what Promtail and Grafana agents send) or JSON (plain
    or gzip). Decoded and checked in a worker thread (a few MB of protobuf is CPU work);
    a bad body stores nothing."""
    service = _service(ctx)
    raw = await request.body()

    def entries() -> list[Entry]:
        return loki.parse_push(
            pushwire.decode(
                raw,
                request.headers.get("content-type", ""),
                request.headers.get("content-encoding", ""),
            )
        )

    await service.push(await asyncio.to_thread(entries))
    return Response(status_code=204)


@loki_router.get("/query")
async def loki_query(
    ctx: Ctx,
    _: Who,
    query: str,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    time_: Annotated[str | None, Query(alias="time")] = None,
    direction: Annotated[str, Query(pattern="^(forward|backward)$")] = "backward",
) -> dict[str, Any]:
    """Instant query: a metric query's value at ``time`` (``vector``); a log query's lines
    up to ``time`` over the last hour (``streams``)."""
    service = _service(ctx)
    parsed = _parse(query)
    await service.check(parsed)
    at = loki.parse_time(time_, "time") if time_ else time.time_ns()
    if isinstance(parsed, MetricQuery):
        series = await asyncio.to_thread(service.store.metric, parsed, at, at, NS)
        return loki.success("vector", loki.vector(series))
    rows = await service.select(
        parsed, at - int(DEFAULT_SINCE * NS), at, limit=limit, forward=direction == "forward"
    )
    return loki.success("streams", loki.streams(rows))


@loki_router.get("/query_range")
async def loki_query_range(ctx: Ctx, _: Who, params: Range) -> dict[str, Any]:
    series, rows = await params.run(_service(ctx))
    if series is not None:
        return loki.success("matrix", loki.matrix(series))
    return loki.success("streams", loki.streams(rows))


@loki_router.get("/labels")
async def loki_labels(
    ctx: Ctx, _: Who, start: str | None = None, end: str | None = None, since: str | None = None
) -> dict[str, Any]:
    service = _service(ctx)
    start_ns, end_ns = _window(start, end, since or "6h")
    names = await asyncio.to_thread(service.store.label_names, start_ns, end_ns)
    return {"status": "success", "data": names}


@loki_router.get("/label/{name}/values")
async def loki_label_values(
    name: str,
    ctx: Ctx,
    _: Who,
    start: str | None = None,
    end: str | None = None,
    since: str | None = None,
) -> dict[str, Any]:
    if not loki.LABEL_NAME.fullmatch(name):
        raise ConfigError(f"label: bad label name {name[:40]!r}")
    service = _service(ctx)
    start_ns, end_ns = _window(start, end, since or "6h")
    values = await asyncio.to_thread(service.store.label_values, name, start_ns, end_ns)
    return {"status": "success", "data": values}


@loki_router.get("/series")
async def loki_series(
    ctx: Ctx,
    _: Who,
    match: Annotated[list[str], Query(alias="match[]")],
    start: str | None = None,
    end: str | None = None,
    since: str | None = None,
) -> dict[str, Any]:
    """The streams matching any of the ``match[]`` selectors."""
    service = _service(ctx)
    start_ns, end_ns = _window(start, end, since or "6h")
    found: dict[str, dict[str, str]] = {}
    for text in match[:20]:
        parsed = _parse(text)
        await service.check(parsed)
        if not isinstance(parsed, LogQuery):
            raise ConfigError('match[]: must be a stream selector, e.g. {app="api"}')
        for labels in await asyncio.to_thread(service.store.series, parsed, start_ns, end_ns):
            found[json.dumps(labels, sort_keys=True)] = labels
    return {"status": "success", "data": list(found.values())}


@loki_router.websocket("/tail")
async def loki_tail(websocket: WebSocket) -> None:
    """Loki's live tail: one JSON message ``{"streams": [...]}`` per batch of new lines."""
    ctx: ApiContext = websocket.app.state.ctx
    token = bearer(websocket.scope.get("headers") or ()) or websocket.query_params.get("token")
    info = await ctx.tokens.check(token) if token else None
    if info is None or ctx.logs is None:
        await websocket.close(code=1008, reason="missing or invalid API token")
        return
    # The gate never sees WebSockets: a service token (Prometheus' scrape token, beside a
    # daemon with an open loopback API) must not read every app's logs through here.
    refusal = out_of_scope(info, "GET", websocket.url.path)
    if refusal is not None:
        await websocket.close(code=1008, reason=refusal.message[:120])
        return
    try:
        parsed = _parse(websocket.query_params.get("query", ""))
        await ctx.logs.check(parsed)
        if not isinstance(parsed, LogQuery):
            raise ConfigError("query: tail needs a log query")
        limit = min(max(int(websocket.query_params.get("limit", "100")), 0), MAX_LIMIT)
        start_raw = websocket.query_params.get("start")
        start = loki.parse_time(start_raw, "start") if start_raw else None
        ctx.logs.check_tail_capacity()
    except (SocleError, ValueError) as exc:
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    await websocket.accept()
    try:
        allowed = _still_valid(ctx, token)
        async for row in ctx.logs.tail(parsed, start=start, limit=limit, allowed=allowed):
            await websocket.send_json({"streams": loki.streams([row]), "dropped_entries": None})
    except (WebSocketDisconnect, RuntimeError):
        return
    except SocleError as exc:  # e.g. too many tails opened at once, a query past its time
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=1013, reason=exc.message[:120])


__all__ = ["loki_router", "router"]
