"""The embedded trace store: one DuckDB database (the engine of the log store), bounded by
age and by span count.

Only the log store's worker process opens it (:mod:`socle.observe.logs.worker` serves it
next to the log store), so the control plane never loads DuckDB. Every method is blocking
and called one at a time per connection; a lock serialises them.

Bounds: spans older than ``retention_seconds`` and, beyond ``max_spans``, the oldest ones
are deleted by :meth:`TraceStore.prune` (run after every insert that crossed 1 % of the
bound, so the cost is amortised). A span written twice (an exporter's retry) is shown once.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

from socle.fs import private_dir
from socle.observe.traces.model import Span, TraceError

FILE = "traces.duckdb"
SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id VARCHAR, span_id VARCHAR, parent_id VARCHAR, name VARCHAR, service VARCHAR,
    kind VARCHAR, start_ns BIGINT, end_ns BIGINT, status VARCHAR, attributes VARCHAR,
    stored_ns BIGINT
);
"""
COLUMNS = "trace_id, span_id, parent_id, name, service, kind, start_ns, end_ns, status, attributes"


class TraceStore:
    def __init__(
        self, root: Path, *, retention_seconds: float = 7 * 86400, max_spans: int = 500_000
    ) -> None:
        self.root = root
        self.retention_seconds = retention_seconds
        self.max_spans = max_spans
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._since_prune = 0

    def open(self) -> None:
        private_dir(self.root)
        con = duckdb.connect(str(self.root / FILE))
        con.execute("SET threads = 1")
        con.execute("SET memory_limit = '128MB'")
        con.execute(SCHEMA)
        self._con = con

    def close(self) -> None:
        with self._lock:
            con, self._con = self._con, None
            if con is not None:
                con.close()

    def _db(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise TraceError("the trace store is not open")
        return self._con

    def insert(self, spans: list[Span]) -> int:
        """Store ``spans`` (already checked); returns how many."""
        if not spans:
            return 0
        now = time.time_ns()
        rows = [
            (
                s.trace_id,
                s.span_id,
                s.parent_id,
                s.name,
                s.service,
                s.kind,
                s.start_ns,
                s.end_ns,
                s.status,
                json.dumps(s.attributes, separators=(",", ":")),
                now,
            )
            for s in spans
        ]
        with self._lock:
            con = self._db()
            con.executemany(
                f"INSERT INTO spans ({COLUMNS}, stored_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
                rows,
            )
            self._since_prune += len(rows)
            if self._since_prune >= max(1, self.max_spans // 100):
                self._prune(con)
        return len(rows)

    def prune(self) -> int:
        """Apply both bounds now; returns how many spans were deleted."""
        with self._lock:
            return self._prune(self._db())

    def _prune(self, con: duckdb.DuckDBPyConnection) -> int:
        self._since_prune = 0
        before = self._count(con)
        cutoff = time.time_ns() - int(self.retention_seconds * 1e9)
        con.execute("DELETE FROM spans WHERE start_ns < ?", [cutoff])
        if self._count(con) > self.max_spans:
            con.execute(
                "DELETE FROM spans WHERE start_ns < (SELECT start_ns FROM spans "
                "ORDER BY start_ns DESC LIMIT 1 OFFSET ?)",
                [self.max_spans - 1],
            )
        return before - self._count(con)

    @staticmethod
    def _count(con: duckdb.DuckDBPyConnection) -> int:
        row = con.execute("SELECT count(*) FROM spans").fetchone()
        return int(row[0]) if row else 0

    def count(self) -> int:
        with self._lock:
            return self._count(self._db())

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span of one trace (as :meth:`Span.to_dict` without duration), by start."""
        with self._lock:
            rows = (
                self._db()
                .execute(
                    f"SELECT DISTINCT ON (span_id) {COLUMNS} FROM spans "  # noqa: S608
                    "WHERE trace_id = ? ORDER BY span_id, stored_ns",
                    [trace_id],
                )
                .fetchall()
            )
        spans = [_span(row) for row in rows]
        spans.sort(key=lambda s: s.start_ns)
        return [s.to_dict() for s in spans]

    def recent(self, limit: int = 20, service: str | None = None) -> list[dict[str, Any]]:
        """The newest traces: root name, service, start, duration, span count, errors."""
        where, params = ("WHERE service = ?", [service]) if service else ("", [])
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT trace_id, arg_min(name, start_ns), arg_min(service, start_ns), "  # noqa: S608
                    "min(start_ns), max(end_ns), count(DISTINCT span_id), "
                    "count(*) FILTER (WHERE status = 'error') FROM spans "
                    f"WHERE trace_id IN (SELECT DISTINCT trace_id FROM spans {where}) "
                    "GROUP BY trace_id ORDER BY min(start_ns) DESC LIMIT ?",
                    [*params, limit],
                )
                .fetchall()
            )
        return [
            {
                "trace_id": r[0],
                "name": r[1],
                "service": r[2],
                "start_ns": int(r[3]),
                "duration_ms": round((int(r[4]) - int(r[3])) / 1e6, 3),
                "spans": int(r[5]),
                "errors": int(r[6]),
            }
            for r in rows
        ]


def _span(row: tuple[Any, ...]) -> Span:
    return Span(
        trace_id=row[0],
        span_id=row[1],
        parent_id=row[2] or "",
        name=row[3],
        service=row[4],
        kind=row[5],
        start_ns=int(row[6]),
        end_ns=int(row[7]),
        status=row[8],
        attributes=json.loads(row[9] or "{}"),
    )


__all__ = ["TraceStore"]
