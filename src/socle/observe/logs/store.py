"""The log store: DuckDB for the newest lines, sealed Parquet segments in an integrity chain.

Layout under ``root`` (``SOCLE_HOME/logstore``, owner-only)::

    hot.duckdb       lines not sealed yet, the tail offsets of every instance file, and
                     the labels each instance had (all in one DuckDB database)
    segments/N.parquet  sealed segments (immutable, zstd), one per period or size
    chain.jsonl      one hash-chained line per seal and per retention drop (see .chain)
    chain.head       the last chain line's hash

Why this shape: DuckDB reads JSON lines and Parquet in C++ at >100 MB/s and filters a
column of text with SIMD (see docs/observe.md for the measurements); Parquet files never
change once written, so each can be hashed once and chained. No home-made file format.

Nothing is lost across restarts: an instance file's offset is committed in the same DuckDB
transaction as the lines read from it, so a control plane killed at any point reads on
from the last committed offset. Sealing writes the Parquet file, then its chain line, then
deletes the sealed rows from ``hot``: a crash before the chain line leaves an orphan file
(removed at the next open, the rows are still hot); a crash after it leaves rows that the
next open deletes (their ``seq`` is at most the chain's ``max_seq``).

Every line is masked with ``redact`` (resolved secret values) before it is written; in the
server the store runs in a worker process (:mod:`.worker`) and the control plane masks
lines before it sends them.
All methods block: the component calls them through ``asyncio.to_thread``; writes hold
one lock, queries use their own DuckDB cursor.

SQL text here is built only from constants, column names of :data:`FIELDS`/``COLUMNS``
and label names checked by :mod:`.logql`; every user value is a bound parameter (hence
the ``noqa: S608`` marks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from socle.fs import private_dir
from socle.observe.logs import chain as chain_mod
from socle.observe.logs.chain import Chain, Segment
from socle.observe.logs.logql import (
    COLUMNS,
    STREAM_LABELS,
    LogQLError,
    LogQuery,
    MetricQuery,
    compile_where,
    label_expr,
)
from socle.observe.logs.model import (
    NS,
    STAGING,
    STAGING_NAME,
    Chunk,
    Entry,
    InstanceLabels,
    LogStoreError,
    Row,
    Series,
    Staged,
    staging_name,
    write_staged,
)

log = logging.getLogger("socle.observe.logs")

FIELDS = ("seq", "ts", "app", "env", "instance", "stream", "release", "trace_id", "labels", "line")
_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS line_seq START 1;
CREATE TABLE IF NOT EXISTS hot (
    seq BIGINT, ts BIGINT, app VARCHAR, env VARCHAR, instance VARCHAR, stream VARCHAR,
    release VARCHAR, trace_id VARCHAR, labels VARCHAR, line VARCHAR);
CREATE TABLE IF NOT EXISTS offsets (instance VARCHAR PRIMARY KEY, inode BIGINT, pos BIGINT);
CREATE TABLE IF NOT EXISTS instances (
    id VARCHAR PRIMARY KEY, app VARCHAR, env VARCHAR, release VARCHAR);
"""
_PUSH_COLUMNS = (
    "{'ts':'BIGINT','app':'VARCHAR','env':'VARCHAR','instance':'VARCHAR','stream':'VARCHAR',"
    "'release':'VARCHAR','trace_id':'VARCHAR','labels':'VARCHAR','line':'VARCHAR'}"
)
_SHIM_COLUMNS = "{'t':'DOUBLE','s':'VARCHAR','m':'VARCHAR'}"
# An app's JSON line may carry its trace id: kept as the line's trace_id label.
# ``contains(m, 'race')`` (both spellings hold it) skips the JSON parse for the many JSON
# lines that carry no trace id: a SIMD substring search is far cheaper than two parses.
_TRACE_OF_M = (
    "CASE WHEN starts_with(m, '{') AND contains(m, 'race') THEN "
    "coalesce(try(json_extract_string(m, '$.trace_id')), try(json_extract_string(m, '$.traceId')))"
    " END"
)


def _literal(text: str) -> str:
    """A SQL string literal (for file paths of the store's own, in COPY statements)."""
    return "'" + text.replace("'", "''") + "'"


def _stream_labels(values: Iterable[Any], extra: str | None) -> dict[str, str]:
    labels = {k: str(v) for k, v in zip(STREAM_LABELS, values, strict=True) if v is not None}
    if extra:
        labels.update(json.loads(extra))
    return labels


MAX_DISTINCT = 10_000
"""Distinct label values (or label sets) one ``labels``/``label values`` lookup reads."""


class LogStore:
    """See the module docstring. ``redact`` masks secret values in every stored line."""

    def __init__(
        self,
        root: Path,
        *,
        redact: Callable[[str], str] = lambda text: text,
        retention_seconds: float = 30 * 86400,
        retention_bytes: int = 10 * 1024**3,
        segment_seconds: float = 3600.0,
        segment_rows: int = 2_000_000,
        memory_limit: str = "1GB",
        query_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self._redact = redact
        self.retention_seconds = retention_seconds
        self.retention_bytes = retention_bytes
        self.segment_seconds = segment_seconds
        self.segment_rows = segment_rows
        self.memory_limit = memory_limit
        self.query_timeout = query_timeout
        self.max_distinct = MAX_DISTINCT
        """Distinct values (or label sets) a label lookup reads at most."""
        self._clock = clock
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._chain: Chain | None = None
        self._hot_since: float | None = None
        self._hot_rows = 0
        self._staging = root / "staging.jsonl"
        self._offsets: dict[str, tuple[int, int]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        private_dir(self.root)
        private_dir(self.root / chain_mod.SEGMENTS)
        private_dir(self.root / "tmp")
        private_dir(self.root / STAGING)
        for stale in (self.root / STAGING).iterdir():  # left by a crash mid-ingest
            stale.unlink()
        try:
            # Bounded: DuckDB would take 80 % of the host's memory by default; big sorts
            # and aggregations spill to the store's own temporary folder instead.
            con = duckdb.connect(
                str(self.root / "hot.duckdb"),
                config={
                    "memory_limit": self.memory_limit,
                    "temp_directory": str(self.root / "tmp"),
                },
            )
        except duckdb.Error as exc:
            raise LogStoreError(
                f"cannot open the log store {self.root / 'hot.duckdb'}: {exc}",
                hint="is another control plane using this home?",
            ) from exc
        con.execute(_SCHEMA)
        chain = Chain(self.root)
        # Rows sealed before a crash (chain line written, delete lost) are dropped; a
        # sequence behind the chain (hot.duckdb lost) is moved past it.
        con.execute("DELETE FROM hot WHERE seq <= ?", [chain.max_seq])
        row = con.execute(
            "SELECT coalesce(last_value, start_value - 1) FROM duckdb_sequences() "
            "WHERE sequence_name = 'line_seq'"
        ).fetchone()
        if row is not None and int(row[0]) < chain.max_seq:
            con.execute("DROP SEQUENCE line_seq")
            con.execute(f"CREATE SEQUENCE line_seq START {int(chain.max_seq) + 1}")
        known = {seg.file for seg in chain.segments.values()}
        for path in (self.root / chain_mod.SEGMENTS).iterdir():
            stem = path.name.split(".")[0]
            if path.name in known:
                continue
            if not stem.isdigit() or int(stem) >= chain.next_n or int(stem) in chain.gone:
                # Written by a seal that crashed before its chain line, or dropped or
                # compacted by a run that crashed before the unlink.
                path.unlink()
        count = con.execute("SELECT count(*) FROM hot").fetchone()
        self._hot_rows = int(count[0]) if count else 0
        self._hot_since = self._clock() if self._hot_rows else None
        self._offsets = {
            str(r[0]): (int(r[1]), int(r[2]))
            for r in con.execute("SELECT instance, inode, pos FROM offsets").fetchall()
        }
        self._con, self._chain = con, chain

    def close(self) -> None:
        with self._lock:
            con, self._con = self._con, None
            if con is not None:
                con.close()

    def alive(self) -> bool:
        return self._con is not None

    def _need(self) -> tuple[duckdb.DuckDBPyConnection, Chain]:
        if self._con is None or self._chain is None:
            raise LogStoreError("the log store is not open")
        return self._con, self._chain

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con, _ = self._need()
        con.begin()
        try:
            yield con
        except BaseException:
            con.rollback()
            raise
        con.commit()

    def _added(self, rows: int) -> None:
        if rows and self._hot_since is None:
            self._hot_since = self._clock()
        self._hot_rows += rows

    # -- writing ---------------------------------------------------------------------------

    def push(self, entries: list[Entry]) -> int:
        """Store lines fed directly; labels outside the known columns go to ``labels``."""
        if not entries:
            return 0
        with self._lock, open(self._staging, "w", encoding="utf-8") as out:
            for entry in entries:
                extra = {k: v for k, v in entry.labels.items() if k not in COLUMNS}
                record: dict[str, Any] = {k: entry.labels.get(k) for k in COLUMNS}
                record.update(
                    ts=entry.ts,
                    labels=json.dumps(extra, sort_keys=True) if extra else None,
                    line=self._redact(entry.line),
                )
                out.write(json.dumps(record) + "\n")
            out.close()
            with self._transaction() as con:
                con.execute(
                    "INSERT INTO hot SELECT nextval('line_seq'), ts, app, env, instance, stream, "  # noqa: S608
                    "release, trace_id, labels, line FROM read_json(?, "
                    f"format='newline_delimited', columns={_PUSH_COLUMNS})",
                    [str(self._staging)],
                )
        self._added(len(entries))
        return len(entries)

    def ingest_shim(
        self, instance: str, labels: InstanceLabels, data: bytes, inode: int, pos: int
    ) -> int:
        """:meth:`ingest_chunks` of one chunk."""
        return self.ingest_chunks([Chunk(instance, labels, data, inode, pos)])

    def ingest_chunks(self, chunks: list[Chunk]) -> int:
        """Store complete JSON lines the shims wrote and commit each chunk's file offset
        with them, in one transaction: each chunk is masked into a staging file, then
        :meth:`ingest_staged`."""
        staged: list[Staged] = []
        try:
            for chunk in chunks:
                lines = chunk.data.count(b"\n")
                name = ""
                if lines:
                    name = staging_name()
                    masked = self._redact(chunk.data.decode("utf-8", "replace")).encode()
                    write_staged(self.root, name, masked)
                staged.append(
                    Staged(chunk.instance, chunk.labels, name, lines, chunk.inode, chunk.pos)
                )
            return self.ingest_staged(staged)
        finally:
            for item in staged:
                if item.file:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.root / STAGING / item.file)

    def ingest_staged(self, staged: list[Staged]) -> int:
        """Store staged files of shim lines (already masked) and commit each one's file
        offset with them, in one transaction; one INSERT reads every file in parallel.
        The files are removed once read, stored or not."""
        paths: list[tuple[str, Staged]] = []
        for item in staged:
            if not item.file:
                continue  # an offset moving to the next file, nothing to read
            if not STAGING_NAME.fullmatch(item.file):
                raise LogStoreError(f"staged file {item.file[:60]!r} is not a staging name")
            paths.append((str(self.root / STAGING / item.file), item))
        lines = sum(item.lines for _, item in paths)
        with self._lock:
            try:
                with self._transaction() as tx:
                    if paths:
                        tx.execute(
                            "INSERT INTO hot SELECT nextval('line_seq'), CAST(r.t * 1e9 AS BIGINT),"  # noqa: S608
                            f" l.app, l.env, l.instance, r.s, l.release, {_TRACE_OF_M}, NULL, r.m"
                            " FROM read_json(?, format='newline_delimited', filename=true,"
                            f" columns={_SHIM_COLUMNS}, ignore_errors=true) r JOIN (SELECT"
                            " unnest(?::VARCHAR[]) AS f, unnest(?::VARCHAR[]) AS app,"
                            " unnest(?::VARCHAR[]) AS env, unnest(?::VARCHAR[]) AS instance,"
                            " unnest(?::VARCHAR[]) AS release) l ON r.filename = l.f",
                            [
                                [f for f, _ in paths],
                                [f for f, _ in paths],
                                [c.labels.app for _, c in paths],
                                [c.labels.env for _, c in paths],
                                [c.instance for _, c in paths],
                                [c.labels.release for _, c in paths],
                            ],
                        )
                    tx.executemany(
                        "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)",
                        [[c.instance, c.inode, c.pos] for c in staged],
                    )
                for item in staged:  # committed: the memory copy follows
                    self._offsets[item.instance] = (item.inode, item.pos)
            except duckdb.IOException as exc:  # a staged file gone (a restart cleared it)
                raise LogStoreError(f"cannot read staged lines: {exc}") from exc
            finally:
                for path, _ in paths:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
        self._added(lines)
        return lines

    def offsets(self) -> dict[str, tuple[int, int]]:
        """Committed (inode, position) per instance file (a copy of the table, kept in
        memory so that an idle pass asks DuckDB nothing)."""
        self._need()
        with self._lock:
            return dict(self._offsets)

    def forget(self, instances: list[str]) -> None:
        """Drop the offsets and labels of instances whose files are gone (GC'd)."""
        if not instances:
            return
        con, _ = self._need()
        with self._lock:
            con.execute("DELETE FROM offsets WHERE list_contains(?, instance)", [instances])
            con.execute("DELETE FROM instances WHERE list_contains(?, id)", [instances])
            for instance in instances:
                self._offsets.pop(instance, None)

    def remember(self, instance: str, labels: InstanceLabels) -> None:
        con, _ = self._need()
        with self._lock:
            con.execute(
                "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?)",
                [instance, labels.app, labels.env, labels.release],
            )

    def remembered(self) -> dict[str, InstanceLabels]:
        con, _ = self._need()
        with self._lock:
            rows = con.execute("SELECT id, app, env, release FROM instances").fetchall()
        return {str(r[0]): InstanceLabels(str(r[1]), str(r[2]), str(r[3])) for r in rows}

    # -- segments, retention ---------------------------------------------------------------

    def due(self) -> bool:
        """Whether the hot lines should be sealed now (size or age of the period)."""
        if not self._hot_rows:
            return False
        if self._hot_rows >= self.segment_rows:
            return True
        since = self._hot_since
        return since is not None and self._clock() - since >= self.segment_seconds

    def seal(self) -> Segment | None:
        """Move every hot line into a new sealed segment (see the module docstring)."""
        with self._lock:
            con, chain = self._need()
            row = con.execute("SELECT max(seq), count(*), min(ts), max(ts) FROM hot").fetchone()
            if row is None or row[0] is None:
                return None
            max_seq, rows, min_ts, max_ts = (int(v) for v in row)
            apps = [
                str(r[0])
                for r in con.execute(
                    "SELECT DISTINCT app FROM hot WHERE app IS NOT NULL ORDER BY 1"
                ).fetchall()
            ]
            n = chain.next_n
            name = f"{n:08d}.parquet"
            tmp = self.root / chain_mod.SEGMENTS / (name + ".tmp")
            final = self.root / chain_mod.SEGMENTS / name
            select = f"SELECT {', '.join(FIELDS)} FROM hot WHERE seq <= {max_seq}"  # noqa: S608
            self._write_segment(con, select, tmp, final)
            chain.append(
                {
                    "kind": "seal",
                    "n": n,
                    "file": name,
                    "sha256": chain_mod.file_digest(final),
                    "rows": rows,
                    "bytes": final.stat().st_size,
                    "min_ts": min_ts,
                    "max_ts": max_ts,
                    "max_seq": max_seq,
                    "apps": apps,
                    "sealed_at": round(self._clock(), 3),
                }
            )
            con.execute("DELETE FROM hot WHERE seq <= ?", [max_seq])
            con.execute("CHECKPOINT")
            self._hot_rows = 0
            self._hot_since = None
            return chain.segments[n]

    @staticmethod
    def _write_segment(con: duckdb.DuckDBPyConnection, select: str, tmp: Path, final: Path) -> None:
        """``select``'s rows, sorted by (app, time) so that row groups prune by app, into
        an fsynced owner-only Parquet file at ``final``."""
        con.execute(
            f"COPY ({select} ORDER BY app, ts) TO {_literal(str(tmp))} "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, final)

    def compact(self, *, small_bytes: int = 64 << 20, min_run: int = 8) -> Segment | None:
        """Merge the oldest run of at least ``min_run`` consecutive segments smaller than
        ``small_bytes`` into one (so years of hourly segments stay a few files). Its seal
        line names the segments it ``replaces``; they are unlinked after it."""
        with self._lock:
            con, chain = self._need()
            run: list[Segment] = []
            for seg in chain.live():
                if seg.bytes < small_bytes and sum(s.bytes for s in run) < small_bytes * 4:
                    run.append(seg)
                elif len(run) >= min_run:
                    break
                else:
                    run = [seg] if seg.bytes < small_bytes else []
            if len(run) < max(min_run, 2):
                return None
            n = chain.next_n
            name = f"{n:08d}.parquet"
            tmp = self.root / chain_mod.SEGMENTS / (name + ".tmp")
            final = self.root / chain_mod.SEGMENTS / name
            files = ", ".join(_literal(str(chain.path(seg))) for seg in run)
            select = f"SELECT {', '.join(FIELDS)} FROM read_parquet([{files}])"  # noqa: S608
            self._write_segment(con, select, tmp, final)
            chain.append(
                {
                    "kind": "seal",
                    "n": n,
                    "file": name,
                    "sha256": chain_mod.file_digest(final),
                    "rows": sum(seg.rows for seg in run),
                    "bytes": final.stat().st_size,
                    "min_ts": min(seg.min_ts for seg in run),
                    "max_ts": max(seg.max_ts for seg in run),
                    "max_seq": max(seg.max_seq for seg in run),
                    "apps": sorted({app for seg in run for app in seg.apps}),
                    "replaces": [seg.n for seg in run],
                    "sealed_at": round(self._clock(), 3),
                }
            )
            for seg in run:
                (self.root / chain_mod.SEGMENTS / seg.file).unlink(missing_ok=True)
            return chain.segments[n]

    def retain(self) -> list[int]:
        """Drop the oldest segments past the age or size limit; returns their numbers."""
        with self._lock:
            _, chain = self._need()
            live = chain.live()
            cutoff = int((self._clock() - self.retention_seconds) * NS)
            total = sum(seg.bytes for seg in live)
            dropped: list[int] = []
            for seg in live:
                reason = None
                if seg.max_ts < cutoff:
                    reason = "age"
                elif total > self.retention_bytes:
                    reason = "size"
                if reason is None:
                    break
                # The drop line first: a crash before the unlink leaves a file the chain
                # already let go (verify accepts it), never a hole the chain cannot explain.
                chain.append(
                    {"kind": "drop", "n": seg.n, "reason": reason, "at": round(self._clock(), 3)}
                )
                chain.path(seg).unlink(missing_ok=True)
                total -= seg.bytes
                dropped.append(seg.n)
        if dropped:
            log.info("log retention dropped %d segment(s)", len(dropped))
        return dropped

    def last_seq(self) -> int:
        """The newest stored line's sequence number (0: none yet)."""
        con, chain = self._need()
        cur = con.cursor()
        try:
            row = cur.execute("SELECT max(seq) FROM hot").fetchone()
        finally:
            cur.close()
        return max(int(row[0]) if row and row[0] is not None else 0, chain.max_seq)

    def maintain(self) -> None:
        """The pass's housekeeping: seal if due, then retention, then compaction."""
        if self.due():
            self.seal()
        self.retain()
        self.compact()

    def stats(self) -> dict[str, object]:
        _, chain = self._need()
        live = chain.live()
        return {
            "hot_lines": self._hot_rows,
            "segments": len(live),
            "segment_bytes": sum(s.bytes for s in live),
            "sealed_lines": sum(s.rows for s in live),
            "head": chain.head,
        }

    def verify(self) -> chain_mod.Report:
        return chain_mod.verify(self.root)

    # -- reading ---------------------------------------------------------------------------

    def _source(self, query: LogQuery, start: int, end: int) -> tuple[str, list[object]]:
        """A subquery of every line in [start, end] of the hot table and the segments that
        may hold some (pruned by time and by ``app=`` matchers)."""
        _, chain = self._need()
        apps = {m.value for m in query.matchers if m.name == "app" and m.op == "="}
        files = [
            str(chain.path(seg))
            for seg in chain.live()
            if seg.max_ts >= start and seg.min_ts <= end and (not apps or apps & set(seg.apps))
        ]
        cols = ", ".join(FIELDS)
        sql = f"SELECT {cols} FROM hot WHERE ts BETWEEN ? AND ?"  # noqa: S608
        params: list[object] = [start, end]
        if files:
            sql += f" UNION ALL SELECT {cols} FROM read_parquet(?) WHERE ts BETWEEN ? AND ?"  # noqa: S608
            params += [files, start, end]
        return sql, params

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        con, _ = self._need()
        return con.cursor()

    def _run(self, sql: str, params: list[object]) -> list[tuple[Any, ...]]:
        """A read on its own cursor, interrupted past ``query_timeout`` (a query over
        years of logs must not hold a worker thread for ever)."""
        cur = self._cursor()
        timer = threading.Timer(self.query_timeout, cur.interrupt)
        timer.start()
        try:
            return cur.execute(sql, params).fetchall()
        except duckdb.InterruptException:
            raise LogQLError(
                f"query: took longer than {self.query_timeout:g} s and was stopped",
                hint="narrow the time range (since/start) or add an app= matcher",
            ) from None
        except duckdb.Error as exc:
            raise LogQLError(f"query: {str(exc).splitlines()[0][:300]}") from exc
        finally:
            timer.cancel()
            cur.close()

    def check_regexes(self, patterns: list[str]) -> None:
        """:class:`LogQLError` naming the first of ``patterns`` RE2 refuses: a query's
        expressions are checked before a live tail starts streaming (a refusal midway
        would cut the stream with no reason given)."""
        cur = self._cursor()
        try:
            for pattern in patterns:
                try:
                    cur.execute("SELECT regexp_matches('', ?)", [pattern]).fetchall()
                except duckdb.Error as exc:
                    reason = str(exc).splitlines()[0].removeprefix("Invalid Input Error: ")
                    raise LogQLError(
                        f"query: bad regular expression {pattern[:80]!r}: {reason[:200]}",
                        hint="regular expressions are RE2, as in Loki",
                    ) from None
        finally:
            cur.close()

    def select(
        self,
        query: LogQuery,
        start: int,
        end: int,
        *,
        limit: int = 100,
        forward: bool = False,
        after_seq: int | None = None,
    ) -> list[Row]:
        """Lines of ``query`` in [start, end] ns; the newest ``limit`` (oldest with
        ``forward``), in that order. ``after_seq``: only lines stored after that one, in
        the order they were stored (live tails, which must not miss late lines)."""
        where = compile_where(query)
        source, params = self._source(query, start, end)
        way = "ASC" if forward else "DESC"
        order = f"ts {way}, seq {way}"
        if after_seq is not None:
            where.where.append("seq > ?")
            where.params.append(after_seq)
            order = "seq"
        sql = (
            f"SELECT seq, ts, {', '.join(STREAM_LABELS)}, labels, trace_id, line FROM ({source}) "  # noqa: S608
            f"WHERE {where.clause()} ORDER BY {order} LIMIT ?"
        )
        rows = self._run(sql, [*params, *where.params, limit])
        width = len(STREAM_LABELS)
        return [
            Row(
                int(r[0]),
                int(r[1]),
                _stream_labels(r[2 : 2 + width], r[2 + width]),
                r[3 + width],
                r[4 + width],
            )
            for r in rows
        ]

    def metric(self, query: MetricQuery, start: int, end: int, step: int) -> list[Series]:
        """Values of a range function at each step in [start, end] (ns)."""
        rng = int(query.range_seconds * NS)
        where = compile_where(query.query)
        source, params = self._source(query.query, start - rng, end)
        if query.aggregation is not None and query.by:
            group_params: list[object] = []
            exprs = [label_expr(name, group_params) for name in query.by]
            names = list(query.by)
        elif query.aggregation is not None:
            group_params, exprs, names = [], [], []
        else:
            group_params, exprs, names = [], [*STREAM_LABELS, "labels"], [*STREAM_LABELS, "labels"]
        value = "sum(length(line))" if query.func.startswith("bytes") else "count(*)"
        per_second = query.func in ("rate", "bytes_rate")
        keys = [f"k{i}" for i in range(len(exprs))]
        inner_keys = "".join(f", {e} AS {k}" for e, k in zip(exprs, keys, strict=True))
        agg = query.aggregation or "sum"
        group = "".join(f", {k}" for k in keys)
        columns = ", ".join([*STREAM_LABELS, "labels"])
        # Lines are first counted per bucket of width gcd(step, range), aligned on the
        # steps, so that each window (step - range, step] is a whole number of buckets:
        # each step then sums a few buckets instead of joining every line to every
        # window that holds it (range/step times).
        step = max(step, 1)
        width = math.gcd(step, rng)
        base = start - rng - width  # aligned on the steps, below every line of the source
        sql = (
            f"WITH src AS ({source}), "  # noqa: S608
            f"buckets AS (SELECT {base} + ((ts - {base} + {width - 1}) // {width}) * {width}"
            f" AS bend, {columns}{inner_keys}, {value} AS v FROM src"
            f" WHERE {where.clause()} GROUP BY ALL), "
            "steps AS (SELECT range AS step FROM range(?, ?, ?)), "
            f"per AS (SELECT step, {columns}{group}, sum(v) AS v FROM steps JOIN buckets"
            f" ON bend > step - {rng} AND bend <= step GROUP BY ALL) "
            f"SELECT step{group}, {agg}(v{f' / {query.range_seconds}' if per_second else ''})"
            f" FROM per GROUP BY step{group} ORDER BY step"
        )
        all_params = [*params, *group_params, *where.params, start, end + 1, step]
        rows = self._run(sql, all_params)
        series: dict[tuple[Any, ...], list[tuple[int, float]]] = {}
        for r in rows:
            series.setdefault(tuple(r[1:-1]), []).append((int(r[0]), float(r[-1])))
        out = []
        for key, points in series.items():
            if query.aggregation is None:
                labels = _stream_labels(key[: len(STREAM_LABELS)], key[len(STREAM_LABELS)])
            else:
                labels = {n: str(v) for n, v in zip(names, key, strict=True) if v is not None}
            out.append(Series(labels, points))
        return out

    def series(
        self, query: LogQuery, start: int, end: int, limit: int = 10_000
    ) -> list[dict[str, str]]:
        """The distinct streams (label sets) that ``query``'s selector matches."""
        where = compile_where(LogQuery(query.matchers))
        source, params = self._source(query, start, end)
        sql = (
            f"SELECT DISTINCT {', '.join(STREAM_LABELS)}, labels FROM ({source}) "  # noqa: S608
            f"WHERE {where.clause()} LIMIT ?"
        )
        width = len(STREAM_LABELS)
        rows = self._run(sql, [*params, *where.params, limit])
        return [_stream_labels(r[:width], r[width]) for r in rows]

    def label_names(self, start: int, end: int) -> list[str]:
        values = self._distinct("labels", start, end)
        names = {n for n in STREAM_LABELS if self._distinct(n, start, end)}
        for raw in values:
            names.update(json.loads(raw))
        return sorted(names)

    def label_values(self, name: str, start: int, end: int) -> list[str]:
        if name in COLUMNS:
            return sorted(self._distinct(name, start, end))
        values: set[str] = set()
        for raw in self._distinct("labels", start, end):
            found = json.loads(raw).get(name)
            if found is not None:
                values.add(str(found))
        return sorted(values)

    def _distinct(self, column: str, start: int, end: int) -> list[str]:
        if column not in (*COLUMNS, "labels"):
            raise LogStoreError(f"unknown column {column!r}")
        _, chain = self._need()
        files = [str(chain.path(s)) for s in chain.live() if s.max_ts >= start and s.min_ts <= end]
        sql = f"SELECT DISTINCT {column} FROM hot WHERE ts BETWEEN ? AND ? AND {column} IS NOT NULL"  # noqa: S608
        params: list[object] = [start, end]
        if files:
            sql += (
                f" UNION SELECT DISTINCT {column} FROM read_parquet(?) "  # noqa: S608
                f"WHERE ts BETWEEN ? AND ? AND {column} IS NOT NULL"
            )
            params += [files, start, end]
        # Bounded: every distinct label set is read back (and parsed, for ``labels``); a
        # client pushing millions of distinct streams must not make label lookups unbounded.
        sql = f"SELECT * FROM ({sql}) LIMIT ?"  # noqa: S608
        return [str(r[0]) for r in self._run(sql, [*params, self.max_distinct])]


__all__ = ["Chunk", "Entry", "InstanceLabels", "LogStore", "LogStoreError", "Row", "Series"]
