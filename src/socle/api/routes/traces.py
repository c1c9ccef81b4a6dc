"""Traces: the OTLP/HTTP receiver (``POST /v1/traces``) and the trace queries under
``/api/v1/traces``.

The receiver takes a platform API token or the apps' *ingest key* (which can do nothing
else) as ``Authorization: Bearer ...``; bodies in protobuf or JSON, plain or gzip
(inflated up to the body limit, so a small bomb cannot blow up memory). It answers
OTLP's empty ``ExportTraceServiceResponse`` in the request's encoding.

``GET /api/v1/traces/{ref}``: ``ref`` is a trace id (32 hex digits) or a revision number
(the trace of that apply), answered as the span tree.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from socle.api.context import ApiContext, context
from socle.api.tokens import bearer
from socle.errors import AuthError, ConfigError, NotFoundError
from socle.observe.traces.model import TRACE_ID, Span, TraceError, TraceTooLarge
from socle.observe.traces.otlp import decode
from socle.observe.traces.service import TraceService

router = APIRouter(prefix="/api/v1/traces", tags=["traces"])
otlp_router = APIRouter(tags=["traces"])
Ctx = Annotated[ApiContext, Depends(context)]
MAX_LIMIT = 500
DEFAULT_MAX_INFLATED = 64 * 1024 * 1024


def _service(ctx: ApiContext) -> TraceService:
    if ctx.traces is None:
        raise NotFoundError("this control plane keeps no traces")
    return ctx.traces


def _inflate(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise TraceError(f"the body is not valid gzip: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise TraceTooLarge(f"the inflated body is larger than {limit} bytes")
    return data


@otlp_router.post("/v1/traces")
async def receive(request: Request, ctx: Ctx) -> Response:
    service = _service(ctx)
    token = bearer(request.scope.get("headers") or ()) or ""
    allowed = bool(token) and (
        service.check_key(token) or await ctx.tokens.check(token) is not None
    )
    if not allowed:
        raise AuthError(
            "missing or invalid ingest key or API token",
            status=401,
            hint="apps get it in OTEL_EXPORTER_OTLP_HEADERS; or use a platform API token",
        )
    spans, content_type = await read_spans(request, DEFAULT_MAX_INFLATED)
    await service.receive(spans)
    return otlp_answer(content_type)


async def read_spans(request: Request, max_inflated: int) -> tuple[list[Span], str]:
    """The spans of one OTLP/HTTP request and its content type; TraceError (400/413) when
    the body is not one: the whole request is refused, nothing is stored."""
    body = await request.body()
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding == "gzip":
        body = await asyncio.to_thread(_inflate, body, max_inflated)
    elif encoding not in ("", "identity"):
        raise TraceError(f"unsupported Content-Encoding {encoding!r}", hint="send gzip or none")
    content_type = request.headers.get("content-type", "")
    return await asyncio.to_thread(decode, body, content_type), content_type


def otlp_answer(content_type: str) -> Response:
    """OTLP's empty ``ExportTraceServiceResponse`` in the request's encoding."""
    if content_type.startswith("application/json"):
        return Response(b"{}", media_type="application/json")
    return Response(b"", media_type="application/x-protobuf")


@router.get("")
async def recent(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    service: Annotated[str | None, Query(max_length=256)] = None,
) -> list[dict[str, Any]]:
    """The newest traces, newest first (root span, service, duration, spans, errors)."""
    return await _service(ctx).recent(limit, service)


@router.get("/{ref}")
async def show(ref: str, ctx: Ctx) -> dict[str, Any]:
    """One trace as span trees (``ref``: a trace id or a revision number)."""
    service = _service(ctx)
    revision = None
    if ref.isdigit() and len(ref) < 12:
        revision = await ctx.engine.revisions.get(int(ref))
        if not revision.trace_id:
            raise NotFoundError(
                f"revision {ref} has no trace",
                hint="revisions are traced since this version of Socle",
            )
        trace_id = revision.trace_id
    elif TRACE_ID.match(ref.lower()):
        trace_id = ref.lower()
    else:
        raise ConfigError(f"{ref!r} is neither a revision number nor a trace id (32 hex digits)")
    roots = await service.trace(trace_id)
    if not roots:
        raise NotFoundError(
            f"no spans of trace {trace_id}",
            hint="spans are stored within a second or two; or they were pruned",
        )
    return {
        "trace_id": trace_id,
        "revision": revision.number if revision is not None else None,
        "spans": [r.to_dict() for r in roots],
    }
