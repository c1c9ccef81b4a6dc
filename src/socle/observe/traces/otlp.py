"""OTLP/HTTP trace payloads (``POST /v1/traces``): protobuf and JSON into :class:`Span`s.

Both encodings of ``ExportTraceServiceRequest`` (opentelemetry-proto): protobuf
(``application/x-protobuf``, ids as bytes) and OTLP/JSON (``application/json``, ids as
hex, 64-bit numbers as strings, enums as numbers or names). A payload is refused whole
(:class:`TraceError`, 400) when any span is malformed: a partial store would hide the error.
The service of a span is its resource's ``service.name``; other resource attributes are
kept as ``resource.*`` attributes.
"""

from __future__ import annotations

import json
from typing import Any

from socle.observe.traces.model import MAX_NAME, Span, TraceError, checked, clean_attributes

KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
KIND_NAMES = {f"SPAN_KIND_{v.upper()}": v for v in KINDS.values()} | {
    "SPAN_KIND_UNSPECIFIED": "internal"
}
STATUS = {0: "unset", 1: "ok", 2: "error"}
STATUS_NAMES = {"STATUS_CODE_UNSET": "unset", "STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error"}
MAX_SPANS = 10_000
"""Spans in one request (the body limit bounds bytes; this bounds work)."""


def _json_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return None
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return None
    if "arrayValue" in value:
        values = value["arrayValue"].get("values") or []
        return json.dumps([_json_value(v) for v in values if isinstance(v, dict)])
    return None


def _json_attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                out[item["key"]] = _json_value(item.get("value"))
    return out


def _enum(value: Any, numbers: dict[int, str], names: dict[str, str], what: str) -> str:
    if isinstance(value, int) and value in numbers:
        return numbers[value]
    if isinstance(value, str) and value in names:
        return names[value]
    if value is None:
        return numbers[0]
    raise TraceError(f"{what}: unknown value {value!r}")


def _nanos(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TraceError(f"{what} must be an integer (nanoseconds)") from None


def _span(
    trace_id: str,
    span_id: str,
    parent: str,
    name: Any,
    service: str,
    kind: str,
    start: int,
    end: int,
    status: str,
    attributes: dict[str, Any],
    resource: dict[str, Any],
) -> Span:
    merged = {**attributes, **{f"resource.{k}": v for k, v in resource.items()}}
    merged.pop("resource.service.name", None)
    return checked(
        Span(
            trace_id=trace_id.lower(),
            span_id=span_id.lower(),
            parent_id=parent.lower(),
            name=str(name or "")[:MAX_NAME] or "(unnamed)",
            service=service[:MAX_NAME],
            kind=kind,
            start_ns=start,
            end_ns=end,
            status=status,
            attributes=clean_attributes(merged),
        )
    )


def decode_json(body: bytes) -> list[Span]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise TraceError(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("resourceSpans", []), list):
        raise TraceError("the body must be an ExportTraceServiceRequest: {resourceSpans: [...]}")
    spans: list[Span] = []
    for resource_spans in data.get("resourceSpans", []):
        if not isinstance(resource_spans, dict):
            raise TraceError("resourceSpans: each entry must be an object")
        resource = _json_attributes((resource_spans.get("resource") or {}).get("attributes"))
        service = str(resource.get("service.name") or "unknown_service")
        for scope_spans in resource_spans.get("scopeSpans") or []:
            for raw in (scope_spans or {}).get("spans") or []:
                if not isinstance(raw, dict):
                    raise TraceError("spans: each span must be an object")
                spans.append(
                    _span(
                        str(raw.get("traceId") or ""),
                        str(raw.get("spanId") or ""),
                        str(raw.get("parentSpanId") or ""),
                        raw.get("name"),
                        service,
                        _enum(raw.get("kind"), KINDS, KIND_NAMES, "kind"),
                        _nanos(raw.get("startTimeUnixNano"), "startTimeUnixNano"),
                        _nanos(raw.get("endTimeUnixNano"), "endTimeUnixNano"),
                        _enum(
                            (raw.get("status") or {}).get("code"),
                            STATUS,
                            STATUS_NAMES,
                            "status.code",
                        ),
                        _json_attributes(raw.get("attributes")),
                        resource,
                    )
                )
                if len(spans) > MAX_SPANS:
                    raise TraceError(f"more than {MAX_SPANS} spans in one request")
    return spans


def _pb_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return json.dumps([_pb_value(v) for v in value.array_value.values])
    if which in ("kvlist_value", "bytes_value"):
        return str(getattr(value, which))[:MAX_NAME]
    return getattr(value, which)


def decode_protobuf(body: bytes) -> list[Span]:
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise TraceError(f"the body is not an OTLP protobuf message: {exc}") from None
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _pb_value(a.value) for a in resource_spans.resource.attributes}
        service = str(resource.get("service.name") or "unknown_service")
        for scope_spans in resource_spans.scope_spans:
            for raw in scope_spans.spans:
                spans.append(
                    _span(
                        raw.trace_id.hex(),
                        raw.span_id.hex(),
                        raw.parent_span_id.hex(),
                        raw.name,
                        service,
                        KINDS.get(raw.kind, "internal"),
                        int(raw.start_time_unix_nano),
                        int(raw.end_time_unix_nano),
                        STATUS.get(raw.status.code, "unset"),
                        {a.key: _pb_value(a.value) for a in raw.attributes},
                        resource,
                    )
                )
                if len(spans) > MAX_SPANS:
                    raise TraceError(f"more than {MAX_SPANS} spans in one request")
    return spans


def decode(body: bytes, content_type: str) -> list[Span]:
    """Spans of one OTLP/HTTP request by its ``Content-Type``; TraceError if unreadable."""
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json":
        return decode_json(body)
    if media in ("application/x-protobuf", "application/protobuf"):
        return decode_protobuf(body)
    raise TraceError(
        f"unsupported Content-Type {media or '(none)'!r}",
        hint="send application/x-protobuf or application/json (OTLP/HTTP)",
    )


__all__ = ["decode", "decode_json", "decode_protobuf"]
