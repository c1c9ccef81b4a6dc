"""Tracing for every subsystem, through the OpenTelemetry API only (a ground-floor helper).

Subsystems call :func:`tracer` and open spans; whether they are recorded, stored or
exported is decided by the control plane (:mod:`socle.observe.traces.sdk` installs the
SDK). Without it every span is a no-op and :func:`current_trace_id` is None, so tests and
the CLI pay nothing.
"""

from __future__ import annotations

from opentelemetry import trace


def tracer(name: str) -> trace.Tracer:
    """The tracer of one subsystem (``socle.engine``, ``socle.api``, ...)."""
    return trace.get_tracer(name)


def current_trace_id() -> str | None:
    """The current span's trace id in hex, or None outside a recorded span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x")


__all__ = ["current_trace_id", "tracer"]
