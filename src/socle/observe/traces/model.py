"""Spans as the trace store keeps them, and the span tree that answers "why did this
deploy take 40 s". Pure: no engine, no SDK.

A span row is what OTLP carries, flattened: ids in lowercase hex (32 and 16 digits, as
OTLP/JSON and W3C ``traceparent`` spell them), times in nanoseconds since the epoch,
``status`` one of ``unset``/``ok``/``error``, attributes as a JSON object of scalars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from socle.errors import SocleError

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
STATUSES = ("unset", "ok", "error")
MAX_NAME = 256
MAX_ATTRIBUTES = 64
MAX_VALUE = 1024


class TraceError(SocleError):
    """A span that cannot be stored (bad id, bad time) or a trace that is not there."""

    http_status = 400


class TraceTooLarge(TraceError):
    """A body that inflates beyond the limit."""

    http_status = 413


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    """The parent span's id, or "" for a root."""
    name: str
    service: str
    start_ns: int
    end_ns: int
    status: str = "unset"
    kind: str = "internal"
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "name": self.name,
            "service": self.service,
            "kind": self.kind,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_ms": round(self.duration_ns / 1e6, 3),
            "status": self.status,
            "attributes": self.attributes,
        }


def clean_attributes(values: dict[str, Any]) -> dict[str, Any]:
    """At most :data:`MAX_ATTRIBUTES` scalar attributes, long strings cut: an app's spans
    are input from a hostile writer and must not bloat the store."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if len(out) >= MAX_ATTRIBUTES:
            break
        if isinstance(value, bool | int | float) or value is None:
            out[str(key)[:MAX_NAME]] = value
        else:
            out[str(key)[:MAX_NAME]] = str(value)[:MAX_VALUE]
    return out


def checked(span: Span) -> Span:
    """``span`` if well formed, TraceError naming the field otherwise."""
    if not TRACE_ID.match(span.trace_id) or span.trace_id == "0" * 32:
        raise TraceError(f"span {span.name!r}: traceId must be 32 hex digits, not all zero")
    if not SPAN_ID.match(span.span_id) or span.span_id == "0" * 16:
        raise TraceError(f"span {span.name!r}: spanId must be 16 hex digits, not all zero")
    if span.parent_id and not SPAN_ID.match(span.parent_id):
        raise TraceError(f"span {span.name!r}: parentSpanId must be 16 hex digits")
    if span.start_ns <= 0 or span.end_ns < span.start_ns:
        raise TraceError(f"span {span.name!r}: endTimeUnixNano must not be before the start")
    if span.status not in STATUSES:
        raise TraceError(f"span {span.name!r}: status must be one of {', '.join(STATUSES)}")
    return span


@dataclass
class Node:
    span: Span
    children: list[Node] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.span.to_dict(), "children": [c.to_dict() for c in self.children]}


def tree(spans: list[Span]) -> list[Node]:
    """The spans of one trace as trees, roots and children by start time. A span whose
    parent is missing (not exported yet, or dropped) is shown as a root."""
    nodes = {s.span_id: Node(s) for s in spans}
    roots: list[Node] = []
    for node in nodes.values():
        parent = nodes.get(node.span.parent_id) if node.span.parent_id else None
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)

    def order(items: list[Node]) -> None:
        items.sort(key=lambda n: (n.span.start_ns, n.span.name))
        for item in items:
            order(item.children)

    order(roots)
    return roots


def render(roots: list[Node]) -> list[str]:
    """Text lines of the tree: offset from the trace's start, duration, name, service."""
    if not roots:
        return []
    origin = min(n.span.start_ns for n in roots)
    lines: list[str] = []

    def walk(node: Node, prefix: str, last: bool, top: bool) -> None:
        span = node.span
        branch = "" if top else ("└─ " if last else "├─ ")
        mark = " ✗" if span.status == "error" else ""
        offset = (span.start_ns - origin) / 1e9
        lines.append(
            f"+{offset:8.3f}s {_duration(span.duration_ns):>9}  {prefix}{branch}{span.name}"
            f" [{span.service}]{mark}"
        )
        extension = "" if top else ("   " if last else "│  ")
        for index, child in enumerate(node.children):
            walk(child, prefix + extension, index == len(node.children) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    return lines


def _duration(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.2f} s"
    return f"{ns / 1e6:.1f} ms"


@dataclass(frozen=True)
class Sender:
    """The instance an OTLP request really came from (found by its source address)."""

    app: str
    environment: str
    instance: str


SENDER_ATTRIBUTES = {
    "socle.app": "app",
    "socle.environment": "environment",
    "socle.instance": "instance",
    "resource.deployment.environment": "environment",
    "resource.service.instance.id": "instance",
}
"""Attributes that name the sender: always set from :class:`Sender`, never from the body."""


def attribute(spans: list[Span], sender: Sender) -> list[Span]:
    """``spans`` labelled by the instance that sent them, whatever the body claims.

    An app is a hostile writer: its spans could name another app as their service, or
    another instance. The service becomes the sender's app; the name the body gave is
    kept as ``claimed.service.name`` when it differs, so nothing is hidden but nothing
    is believed either.
    """
    out: list[Span] = []
    for span in spans:
        # The sender's attributes first: the cap on attributes never drops them.
        attributes: dict[str, Any] = {k: getattr(sender, f) for k, f in SENDER_ATTRIBUTES.items()}
        if span.service != sender.app:
            attributes["claimed.service.name"] = span.service
        for key, value in span.attributes.items():
            attributes.setdefault(key, value)
        out.append(
            Span(
                trace_id=span.trace_id,
                span_id=span.span_id,
                parent_id=span.parent_id,
                name=span.name,
                service=sender.app,
                start_ns=span.start_ns,
                end_ns=span.end_ns,
                status=span.status,
                kind=span.kind,
                attributes=clean_attributes(attributes),
            )
        )
    return out


def span_from_dict(data: dict[str, Any]) -> Span:
    """The inverse of :meth:`Span.to_dict` (across the worker's wire)."""
    return Span(
        trace_id=data["trace_id"],
        span_id=data["span_id"],
        parent_id=data.get("parent_id") or "",
        name=data["name"],
        service=data["service"],
        kind=data.get("kind", "internal"),
        start_ns=int(data["start_ns"]),
        end_ns=int(data["end_ns"]),
        status=data.get("status", "unset"),
        attributes=dict(data.get("attributes") or {}),
    )


__all__ = [
    "Node",
    "Sender",
    "Span",
    "TraceError",
    "attribute",
    "checked",
    "clean_attributes",
    "render",
    "span_from_dict",
    "tree",
]
