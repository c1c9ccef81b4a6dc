"""The control plane's traces: Socle's own spans (from the SDK) and the apps' (from the
OTLP receiver) into the trace store; Socle's exported over OTLP/HTTP when configured.

Spans from the SDK are queued in a bounded buffer (oldest dropped, counted: a storm of
spans cannot grow memory) and written once per ``flush_seconds`` on a worker thread, so
ending a span never waits for the store. The store lives in the log store's worker
process; while that worker restarts, spans wait in the buffer.

Apps export to ``POST /v1/traces`` with the *ingest key*: a random key kept in
``SOCLE_HOME/traces/ingest.key`` (owner-only, stable across restarts because apps outlive
the control plane) that can do nothing but push spans. Apps get it in the standard
``OTEL_EXPORTER_OTLP_HEADERS`` variable (see :meth:`TraceService.app_env`).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import secrets
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from socle.errors import SocleError
from socle.fs import private_dir, write_private
from socle.observe.traces.model import Node, Span, span_from_dict, tree
from socle.observe.traces.sdk import Dispatch, install, to_span
from socle.tasks import TaskGroup

log = logging.getLogger("socle.observe.traces")
KEY_FILE = "ingest.key"


class TraceBackend(Protocol):
    """Where spans are kept (the log store's worker serves these)."""

    def traces_insert(self, spans: list[Span]) -> int: ...

    def traces_trace(self, trace_id: str) -> list[dict[str, Any]]: ...

    def traces_recent(
        self, limit: int = 20, service: str | None = None
    ) -> list[dict[str, Any]]: ...


class BufferSink(SpanProcessor):
    """A bounded queue of ended spans (``on_end`` never blocks, never touches the store)."""

    def __init__(self, capacity: int) -> None:
        self._queue: collections.deque[Span] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.dropped = 0

    def on_end(self, span: ReadableSpan) -> None:
        row = to_span(span)
        if row is None:
            return
        with self._lock:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(row)

    def drain(self) -> list[Span]:
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
        return items

    def requeue(self, spans: list[Span]) -> None:
        """Put back spans a failed write did not store (in front, order kept)."""
        with self._lock:
            room = (self._queue.maxlen or 0) - len(self._queue)
            keep = spans[-room:] if room > 0 else []
            self.dropped += len(spans) - len(keep)
            self._queue.extendleft(reversed(keep))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def load_key(folder: Path) -> str:
    """The ingest key of this home, created on first use."""
    path = private_dir(folder) / KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if len(key) < 32:
        key = "socle_ingest_" + secrets.token_urlsafe(32)
        write_private(path, key + "\n", durable=True)
    return key


class TraceService:
    def __init__(
        self,
        backend: TraceBackend,
        key_folder: Path,
        tasks: TaskGroup,
        *,
        otlp_endpoint: str = "",
        flush_seconds: float = 1.0,
        capacity: int = 20_000,
    ) -> None:
        self.backend = backend
        self._key_folder = key_folder
        self._tasks = tasks
        self._otlp_endpoint = otlp_endpoint
        self._flush_seconds = flush_seconds
        self.sink = BufferSink(capacity)
        self._exporter: SpanProcessor | None = None
        self._dispatch: Dispatch | None = None
        self.ingest_key = ""

    async def start(self) -> None:
        self.ingest_key = await asyncio.to_thread(load_key, self._key_folder)
        dispatch = install()
        dispatch.add(self.sink)
        if self._otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            endpoint = self._otlp_endpoint.rstrip("/")
            if not endpoint.endswith("/v1/traces"):
                endpoint += "/v1/traces"
            self._exporter = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
            dispatch.add(self._exporter)
            log.warning("exporting Socle's spans to %s (OTLP/HTTP)", endpoint)
        self._dispatch = dispatch
        self._tasks.spawn(self._loop(), "flush")

    async def stop(self) -> None:
        dispatch, self._dispatch = self._dispatch, None
        if dispatch is not None:
            dispatch.remove(self.sink)
            if self._exporter is not None:
                dispatch.remove(self._exporter)
        await self._tasks.close()
        try:
            await self.flush()
        except SocleError as exc:
            log.error("last trace flush failed: %s", exc.message)
        exporter, self._exporter = self._exporter, None
        if exporter is not None:
            await asyncio.to_thread(exporter.shutdown)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
            except SocleError as exc:  # the worker restarting: spans wait in the buffer
                log.debug("trace flush failed: %s", exc.message)

    async def flush(self) -> int:
        """Write the buffered spans now; returns how many."""
        spans = self.sink.drain()
        if not spans:
            return 0
        try:
            return await asyncio.to_thread(self.backend.traces_insert, spans)
        except BaseException:
            self.sink.requeue(spans)
            raise

    def check_key(self, presented: str) -> bool:
        return bool(self.ingest_key) and hmac.compare_digest(
            presented.encode(), self.ingest_key.encode()
        )

    async def receive(self, spans: list[Span]) -> int:
        """Store spans an app pushed over OTLP."""
        return await asyncio.to_thread(self.backend.traces_insert, spans)

    async def trace(self, trace_id: str) -> list[Node]:
        rows = await asyncio.to_thread(self.backend.traces_trace, trace_id)
        return tree([span_from_dict(r) for r in rows])

    async def recent(self, limit: int = 20, service: str | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.backend.traces_recent, limit, service)

    def app_env(self, url: str) -> dict[str, str]:
        """The OTLP variables every instance gets (its service name and resource
        attributes are added per instance by the runtime's spec)."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=" + quote("Bearer " + self.ingest_key),
        }


__all__ = ["BufferSink", "TraceBackend", "TraceService", "load_key"]
