"""Metrics: Socle's own page, the per-instance exporter, ``http_sd`` targets, PromQL proxy.

- ``GET /metrics``: the control plane's metrics (Prometheus text format);
- ``GET /metrics/instances``: every instance's CPU, memory, open files, restarts, health;
- ``GET /api/v1/metrics/targets?job=socle|socle-instances|apps``: Prometheus ``http_sd``;
- ``GET /api/v1/metrics/query`` and ``/query_range``: Prometheus' own query API, proxied
  (``query``, ``time``; ``start``, ``end``, ``step``), answering its ``data`` object;
- ``GET /api/v1/metrics/federate?match[]=...``: Prometheus' ``/federate``, proxied, so a
  team's own Prometheus can scrape the series Socle's holds (federation) with a Socle token
  instead of the embedded Prometheus' password.

All of them need a token like the rest of the API (Prometheus scrapes with a bearer
``credentials_file``).
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from socle.api.auth import Who
from socle.api.context import ApiContext, context
from socle.errors import ConfigError
from socle.observe.metrics.registry import CONTENT_TYPE
from socle.observe.service import Observe, Unavailable
from socle.units import parse_duration

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(context)]

MAX_QUERY_CHARS = 10_000
MAX_POINTS = 11_000
"""Prometheus' own limit of points per series in a range query."""


def _observe(ctx: ApiContext) -> Observe:
    if ctx.observe is None:
        raise Unavailable("observe is not part of this control plane")
    return ctx.observe


@router.get("/metrics", include_in_schema=False)
async def socle_metrics(ctx: Ctx, _: Who) -> Response:
    return Response(_observe(ctx).socle_page(), media_type=CONTENT_TYPE)


@router.get("/metrics/instances", include_in_schema=False)
async def instance_metrics(ctx: Ctx, _: Who) -> Response:
    return Response(await _observe(ctx).instances_page(), media_type=CONTENT_TYPE)


@router.get("/api/v1/metrics/targets")
async def targets(ctx: Ctx, _: Who, job: str | None = None) -> list[dict[str, Any]]:
    return _observe(ctx).targets(job)


def _check_query(query: str) -> str:
    if not query.strip():
        raise ConfigError("query is empty", hint="e.g. query=up")
    if len(query) > MAX_QUERY_CHARS:
        raise ConfigError(f"query is longer than {MAX_QUERY_CHARS} characters")
    return query


def _time(value: str | None, what: str, default: float) -> float:
    """A Unix time, or a duration before now (``1h``: one hour ago)."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):  # nan slips through every bound check below
            raise ConfigError(f"{what}: {value!r} is not a time", hint="a Unix time, or 1h")
        return number
    try:
        return time.time() - parse_duration(value)
    except ValueError as exc:
        raise ConfigError(
            f"{what}: {exc}", hint="a Unix time, or a duration ago such as 1h"
        ) from None


@router.get("/api/v1/metrics/query")
async def query(
    ctx: Ctx,
    _: Who,
    query: Annotated[str, Query(max_length=MAX_QUERY_CHARS)],
    time_: Annotated[str | None, Query(alias="time")] = None,
) -> dict[str, Any]:
    params = {"query": _check_query(query)}
    if time_:
        params["time"] = f"{_time(time_, 'time', time.time()):.3f}"
    return await _observe(ctx).need_query().get("query", params)


MAX_MATCHES = 20


@router.get("/api/v1/metrics/federate", response_class=Response)
async def federate(
    ctx: Ctx,
    _: Who,
    match: Annotated[list[str], Query(alias="match[]", max_length=MAX_MATCHES)] = [],  # noqa: B006
) -> Response:
    """The newest sample of every series matching one of the ``match[]`` selectors, in the
    text exposition format (Prometheus' federation). A selector is required, as in
    Prometheus: an empty one would copy every series at every scrape."""
    if not match or not any(m.strip() for m in match):
        raise ConfigError(
            "federation needs at least one match[] selector",
            hint='e.g. match[]={job="apps"} or match[]={__name__=~"socle_.*"}',
        )
    for selector in match:
        _check_query(selector)
    page = await _observe(ctx).need_query().federate(match)
    return Response(page, media_type=CONTENT_TYPE)


@router.get("/api/v1/metrics/query_range")
async def query_range(
    ctx: Ctx,
    _: Who,
    query: Annotated[str, Query(max_length=MAX_QUERY_CHARS)],
    start: str | None = None,
    end: str | None = None,
    step: str | None = None,
) -> dict[str, Any]:
    now = time.time()
    end_at = _time(end, "end", now)
    start_at = _time(start, "start", end_at - 3600)
    if start_at >= end_at:
        raise ConfigError("start must be before end")
    if step:
        try:
            step_s = float(step) if step.replace(".", "", 1).isdigit() else parse_duration(step)
        except ValueError as exc:
            raise ConfigError(f"step: {exc}", hint="e.g. step=15s") from None
        if not math.isfinite(step_s):
            raise ConfigError(f"step: {step!r} is not a duration", hint="e.g. step=15s")
    else:
        step_s = max(1.0, (end_at - start_at) / 250)
    if step_s <= 0 or (end_at - start_at) / step_s > MAX_POINTS:
        raise ConfigError(
            f"step {step_s:g}s gives more than {MAX_POINTS} points per series",
            hint="use a larger step or a shorter range",
        )
    params = {
        "query": _check_query(query),
        "start": f"{start_at:.3f}",
        "end": f"{end_at:.3f}",
        "step": f"{step_s:g}",
    }
    return await _observe(ctx).need_query().get("query_range", params)
