"""The trace store on a real DuckDB file, and Socle's own spans from the real SDK into it."""

from __future__ import annotations

import time
from pathlib import Path

from opentelemetry import trace

from socle.observe.traces.model import Span
from socle.observe.traces.service import BufferSink, TraceService, load_key
from socle.observe.traces.store import TraceStore
from socle.tasks import TaskGroup
from socle.tracing import current_trace_id, tracer


def _spans(trace_id: str, count: int, start: int) -> list[Span]:
    return [
        Span(trace_id, f"{n + 1:016x}", "", f"s{n}", "app", start + n, start + n + 10)
        for n in range(count)
    ]


def test_store_dedups_lists_and_bounds(tmp_path: Path) -> None:
    store = TraceStore(tmp_path, max_spans=100)
    store.open()
    try:
        now = time.time_ns()
        first, second = "a" * 32, "b" * 32
        store.insert(_spans(first, 3, now))
        store.insert(_spans(first, 3, now))  # an exporter's retry: shown once
        store.insert(_spans(second, 2, now + 100))
        assert [s["name"] for s in store.trace(first)] == ["s0", "s1", "s2"]
        recent = store.recent(10)
        assert [(r["trace_id"], r["spans"]) for r in recent] == [(second, 2), (first, 3)]
        assert store.recent(10, service="nobody") == []

        store.insert(_spans("c" * 32, 150, now + 1000))
        store.prune()
        assert store.count() <= 100
        assert store.trace(first) == []  # the oldest went first
        old = Span("d" * 32, "1" * 16, "", "old", "app", 1, 2)
        store.insert([old])
        store.prune()
        assert store.trace("d" * 32) == []  # older than the retention
    finally:
        store.close()
    assert (tmp_path / "traces.duckdb").exists()


class _Direct:
    """The backend protocol on an in-process store (the worker serves the same calls)."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    def traces_insert(self, spans: list[Span]) -> int:
        return self.store.insert(spans)

    def traces_trace(self, trace_id: str) -> list[dict[str, object]]:
        return self.store.trace(trace_id)

    def traces_recent(self, limit: int = 20, service: str | None = None) -> list[dict[str, object]]:
        return self.store.recent(limit, service)


async def test_own_spans_reach_the_store(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "db")
    store.open()
    service = TraceService(_Direct(store), tmp_path / "keys", TaskGroup("traces"))
    await service.start()
    try:
        with tracer("socle.test").start_as_current_span("sync") as span:
            span.set_attribute("socle.source", "repo")
            with tracer("socle.test").start_as_current_span("plan"):
                trace_id = current_trace_id()
        assert trace_id is not None and len(trace_id) == 32
        assert await service.flush() == 2
        (root,) = await service.trace(trace_id)
        assert root.span.name == "sync" and root.span.service == "socle"
        assert [c.span.name for c in root.children] == ["plan"]
        assert service.check_key(service.ingest_key) and not service.check_key("guess")
        assert load_key(tmp_path / "keys") == service.ingest_key  # stable across restarts
        env = service.app_env("http://127.0.0.1:7780")
        assert env["OTEL_EXPORTER_OTLP_HEADERS"].startswith("authorization=Bearer%20")
    finally:
        await service.stop()
        store.close()
    # Stopped: spans are no longer collected by this service.
    with tracer("socle.test").start_as_current_span("after"):
        pass
    assert service.sink.drain() == []
    assert trace.get_current_span().get_span_context().is_valid is False


def test_buffer_is_bounded() -> None:
    sink = BufferSink(capacity=2)
    spans = _spans("e" * 32, 3, 1)
    sink.requeue(spans)
    assert len(sink.drain()) == 2 and sink.dropped == 1
