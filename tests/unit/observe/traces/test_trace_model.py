"""Spans, the span tree and OTLP decoding (JSON and protobuf), as tables."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from socle.observe.traces.model import (
    MAX_ATTRIBUTES,
    Sender,
    Span,
    TraceError,
    attribute,
    render,
    span_from_dict,
    tree,
)
from socle.observe.traces.otlp import decode

T = "4bf92f3577b34da6a3ce929d0e0e4736"


def _span(span_id: str, parent: str, name: str, start: int, end: int, **kw: Any) -> Span:
    return Span(T, span_id, parent, name, "socle", start, end, **kw)


def test_tree_nests_orders_and_keeps_orphans() -> None:
    spans = [
        _span("0000000000000003", "0000000000000001", "commit", 3_000, 4_000),
        _span("0000000000000001", "", "apply", 1_000, 40_000_001_000),
        _span("0000000000000002", "0000000000000001", "build", 2_000, 3_000),
        _span("0000000000000009", "00000000000000ff", "orphan", 5_000, 6_000, status="error"),
    ]
    roots = tree(spans)
    assert [r.span.name for r in roots] == ["apply", "orphan"]
    assert [c.span.name for c in roots[0].children] == ["build", "commit"]
    lines = render(roots)
    assert lines[0].endswith("apply [socle]") and "40.00 s" in lines[0]
    assert "├─ build" in lines[1] and "└─ commit" in lines[2]
    assert lines[3].endswith("orphan [socle] ✗")
    assert span_from_dict(roots[0].span.to_dict()) == roots[0].span


def _json(span: dict[str, Any], service: str = "shop") -> bytes:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    body = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}
    return json.dumps(body).encode()


GOOD = {
    "traceId": T.upper(),
    "spanId": "00F067AA0BA902B7",
    "name": "GET /cart",
    "kind": 2,
    "startTimeUnixNano": "1700000000000000000",
    "endTimeUnixNano": "1700000000250000000",
    "attributes": [
        {"key": "http.status", "value": {"intValue": "503"}},
        {"key": "ok", "value": {"boolValue": False}},
        {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
    ],
    "status": {"code": "STATUS_CODE_ERROR"},
}


def test_json_decoding() -> None:
    (span,) = decode(_json(GOOD), "application/json; charset=utf-8")
    assert span.trace_id == T and span.span_id == "00f067aa0ba902b7" and span.parent_id == ""
    assert (span.service, span.kind, span.status) == ("shop", "server", "error")
    assert span.duration_ns == 250_000_000
    assert span.attributes == {"http.status": 503, "ok": False, "tags": '["a"]'}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"traceId": "00" * 16}, "traceId"),
        ({"traceId": "xyz"}, "traceId"),
        ({"spanId": ""}, "spanId"),
        ({"parentSpanId": "123"}, "parentSpanId"),
        ({"endTimeUnixNano": "1"}, "endTimeUnixNano"),
        ({"startTimeUnixNano": "soon"}, "startTimeUnixNano"),
        ({"kind": "SPAN_KIND_SIDEWAYS"}, "kind"),
    ],
)
def test_bad_json_spans_are_refused_by_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(TraceError, match=message):
        decode(_json({**GOOD, **change}), "application/json")


def test_bad_bodies() -> None:
    with pytest.raises(TraceError, match="not JSON"):
        decode(b"{", "application/json")
    with pytest.raises(TraceError, match="resourceSpans"):
        decode(b'{"resourceSpans": 3}', "application/json")
    with pytest.raises(TraceError, match="protobuf"):
        decode(b"\xff\xff\xff", "application/x-protobuf")
    with pytest.raises(TraceError, match="Content-Type"):
        decode(b"", "text/plain")


def test_protobuf_decoding_and_attribute_bounds() -> None:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    for key, value in (("service.name", "worker"), ("host.name", "vm1")):
        attribute = resource.resource.attributes.add()
        attribute.key, attribute.value.string_value = key, value
    span = resource.scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes.fromhex(T), bytes.fromhex("00f067aa0ba902b7")
    span.parent_span_id = bytes.fromhex("1111111111111111")
    span.name, span.kind = "consume", 5
    span.start_time_unix_nano, span.end_time_unix_nano = 10, 20
    for number in range(MAX_ATTRIBUTES + 10):
        attribute = span.attributes.add()
        attribute.key, attribute.value.string_value = f"k{number}", "v" * 5000
    (decoded,) = decode(request.SerializeToString(), "application/x-protobuf")
    assert (decoded.service, decoded.kind, decoded.parent_id) == (
        "worker",
        "consumer",
        "1111111111111111",
    )
    assert len(decoded.attributes) == MAX_ATTRIBUTES
    assert max(len(str(v)) for v in decoded.attributes.values()) <= 1024
    assert "resource.service.name" not in decoded.attributes


def test_spans_are_labelled_by_their_sender_not_by_their_claims() -> None:
    claims = {
        "socle.app": "billing",
        "socle.instance": "billing-0",
        "resource.service.instance.id": "billing-0",
        "resource.deployment.environment": "prod",
        **{f"k{i}": i for i in range(MAX_ATTRIBUTES)},  # enough to hit the cap
    }
    span = Span(T, "0000000000000001", "", "charge", "billing", 1, 2, attributes=claims)
    (out,) = attribute([span], Sender("web", "staging", "web-abc-0"))
    assert out.service == "web" and out.name == "charge" and out.span_id == span.span_id
    assert out.attributes["socle.app"] == "web"
    assert out.attributes["socle.environment"] == "staging"
    assert out.attributes["socle.instance"] == "web-abc-0"
    assert out.attributes["resource.service.instance.id"] == "web-abc-0"
    assert out.attributes["resource.deployment.environment"] == "staging"
    assert out.attributes["claimed.service.name"] == "billing"
    assert len(out.attributes) == MAX_ATTRIBUTES  # the cap holds, the sender's labels kept
    honest = Span(T, "0000000000000002", "", "serve", "web", 1, 2)
    (kept,) = attribute([honest], Sender("web", "default", "web-abc-0"))
    assert "claimed.service.name" not in kept.attributes
