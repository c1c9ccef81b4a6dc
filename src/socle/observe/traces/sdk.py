"""Socle's own spans: the OpenTelemetry SDK's tracer provider, installed once per process,
feeding whichever sinks the running control plane registered (the trace store, an
OTLP/HTTP exporter).

Subsystems (engine, API, secrets) only use the OpenTelemetry *API*
(``opentelemetry.trace.get_tracer``): without this module they trace into a no-op. The
provider is process-wide by OpenTelemetry's design (it can be set only once), so sinks are
added to and removed from one dispatching processor instead of replacing providers.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from socle import __version__
from socle.observe.traces.model import Span, clean_attributes

SERVICE = "socle"


class Dispatch(SpanProcessor):
    """Hands every ended span to each registered sink (their ``on_end`` must not block)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: tuple[SpanProcessor, ...] = ()

    def add(self, sink: SpanProcessor) -> None:
        with self._lock:
            self._sinks = (*self._sinks, sink)

    def remove(self, sink: SpanProcessor) -> None:
        with self._lock:
            self._sinks = tuple(s for s in self._sinks if s is not sink)

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        for sink in self._sinks:
            sink.on_end(span)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(s.force_flush(timeout_millis) for s in self._sinks)


_DISPATCH = Dispatch()
_INSTALLED = threading.Lock()
_provider: TracerProvider | None = None


def install() -> Dispatch:
    """The process's dispatcher, behind an SDK provider made global on first call."""
    global _provider
    with _INSTALLED:
        if _provider is None:
            resource = Resource.create(
                {
                    "service.name": SERVICE,
                    "service.version": __version__,
                    "service.instance.id": f"{os.uname().nodename}:{os.getpid()}",
                }
            )
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(_DISPATCH)
            trace.set_tracer_provider(provider)
            _provider = provider
    return _DISPATCH


def to_span(span: ReadableSpan) -> Span | None:
    """The store's row for an SDK span (None for a span without a valid context)."""
    context = span.context
    if context is None or not context.is_valid or span.start_time is None:
        return None
    parent = span.parent
    resource = span.resource.attributes if span.resource is not None else {}
    return Span(
        trace_id=format(context.trace_id, "032x"),
        span_id=format(context.span_id, "016x"),
        parent_id=format(parent.span_id, "016x") if parent is not None else "",
        name=span.name,
        service=str(resource.get("service.name", SERVICE)),
        kind=span.kind.name.lower(),
        start_ns=span.start_time,
        end_ns=span.end_time or span.start_time,
        status=span.status.status_code.name.lower(),
        attributes=clean_attributes(dict(span.attributes or {})),
    )


__all__ = ["SERVICE", "Dispatch", "install", "to_span"]
