"""The log store as a running service: a background pass every ``tick`` seconds that stores
Socle's own records and every instance's new output, seals due segments and applies
retention; queries and pushes for the API; and the logging handler feeding it.

Everything that touches DuckDB or files runs in a worker thread (``asyncio.to_thread``), so
the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from socle.errors import SocleError
from socle.observe.logs.logql import LogQuery, Query, regexes
from socle.observe.logs.loki import OWN_APP, Forwarder
from socle.observe.logs.model import NS, Entry, InstanceLabels, Row, Store
from socle.observe.logs.tail import tail_all
from socle.tasks import TaskGroup
from socle.tracing import current_trace_id

log = logging.getLogger("socle.observe.logs")

TAIL_POLL = 0.5
TAIL_RECHECK = 5.0
"""Seconds between two checks that a live tail's caller may still read (its token)."""
FORWARD_CURSOR = "forward.cursor"
"""In the store's folder: the last line a configured Loki accepted (see ``Forwarder``)."""


class TooManyTails(SocleError):
    """As many live tails are open as the server follows at once."""

    http_status = 429


class StoreHandler(logging.Handler):
    """Socle's own log records, kept in a bounded queue until the next pass stores them.

    Bounded (oldest dropped, counted) so that a storm of records can never grow memory;
    ``emit`` never blocks and never touches the store (records come from any thread).
    """

    def __init__(self, env: str, instance: str, capacity: int = 10_000) -> None:
        super().__init__(logging.INFO)
        self._queue: collections.deque[Entry] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._labels = {"app": OWN_APP, "env": env, "instance": instance, "stream": "log"}
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == log.name:
            return  # the store's own records could feed themselves forever
        try:
            body: dict[str, object] = {
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
            if record.exc_info and record.exc_text is None:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                body["error"] = record.exc_text
            labels = dict(self._labels)
            trace = (
                getattr(record, "trace_id", None)
                or getattr(record, "otelTraceID", None)
                or current_trace_id()  # emit runs in the caller's context: its span's
            )
            if trace and trace != "0":
                labels["trace_id"] = str(trace)
                body["trace_id"] = str(trace)
            entry = Entry(int(record.created * NS), json.dumps(body), labels)
        except Exception:  # a logging handler must never raise into the caller
            self.handleError(record)
            return
        with self._lock:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(entry)

    def drain(self) -> list[Entry]:
        with self._lock:
            entries = list(self._queue)
            self._queue.clear()
        return entries


class LogService:
    """See the module docstring. ``instances`` gives the runtime's instances and their
    labels (called on the event loop, before each pass: the runtime is not thread-safe);
    labels seen once are remembered in the store, for files of instances gone since."""

    def __init__(
        self,
        store: Store,
        logs_dir: Path,
        instances: Callable[[], dict[str, InstanceLabels]],
        tasks: TaskGroup,
        *,
        tick: float = 0.5,
        env: str = "default",
        loki_url: str = "",
        max_tails: int = 64,
    ) -> None:
        self.store = store
        self._logs_dir = logs_dir
        self._instances = instances
        self._known: dict[str, InstanceLabels] = {}
        self._tasks = tasks
        self._tick = tick
        self.handler = StoreHandler(env, f"{os.uname().nodename}:{os.getpid()}")
        self._pass_lock = asyncio.Lock()
        self.tails = 0
        self.max_tails = max_tails
        self.forwarder = (
            Forwarder(
                loki_url,
                self._after,
                self.store.last_seq,
                cursor_file=store.root / FORWARD_CURSOR,
            )
            if loki_url
            else None
        )

    def _after(self, seq: int, limit: int) -> list[Row]:
        return self.store.select(LogQuery(()), 0, 2**62, limit=limit, after_seq=seq)

    async def start(self) -> None:
        await asyncio.to_thread(self.store.open)
        logging.getLogger("socle").addHandler(self.handler)
        self._tasks.spawn(self._loop(), "pass")
        if self.forwarder is not None:
            self._tasks.spawn(self.forwarder.run(), "forward")

    async def stop(self) -> None:
        logging.getLogger("socle").removeHandler(self.handler)
        await self._tasks.close()
        try:
            await self.run_pass()  # what came in since the last pass
        except SocleError as exc:  # a dead worker: the next start reads on from the offsets
            log.error("last log store pass failed: %s", exc.message)
        finally:
            await asyncio.to_thread(self.store.close)

    async def _loop(self) -> None:
        while True:
            if not self.store.alive():
                # The store's worker died (killed, out of memory): start it again; what
                # the instances wrote meanwhile is read from the committed offsets.
                log.error("the log store stopped; starting it again")
                await asyncio.to_thread(self.store.close)
                await asyncio.to_thread(self.store.open)
            try:
                await self.run_pass()
            except SocleError as exc:  # reported; the next pass tries again
                log.error("log store pass failed: %s", exc.message)
            await asyncio.sleep(self._tick)

    async def run_pass(self) -> int:
        """One pass (also what tests call to not wait for the timer); returns lines stored."""
        async with self._pass_lock:
            return await asyncio.to_thread(self._pass, self._instances())

    def _labels_of(self, instance: str) -> InstanceLabels:
        known = self._known.get(instance)
        if known is not None:
            return known
        # Never seen: the instance id is ``<app>-<template>-<ordinal>``.
        app = instance.rsplit("-", 2)[0] if instance.count("-") >= 2 else instance
        return InstanceLabels(app, "default", "")

    def _pass(self, current: dict[str, InstanceLabels]) -> int:
        if not self._known:
            self._known = self.store.remembered()
        for instance, labels in current.items():
            if self._known.get(instance) != labels:
                self.store.remember(instance, labels)
                self._known[instance] = labels
        stored = self.store.push(self.handler.drain())
        stored += tail_all(self.store, self._logs_dir, self._labels_of)
        self.store.maintain()
        return stored

    async def push(self, entries: list[Entry]) -> int:
        return await asyncio.to_thread(self.store.push, entries)

    async def select(
        self, query: LogQuery, start: int, end: int, *, limit: int, forward: bool = False
    ) -> list[Row]:
        return await asyncio.to_thread(
            self.store.select, query, start, end, limit=limit, forward=forward
        )

    async def tail(
        self,
        query: LogQuery,
        *,
        start: int | None = None,
        limit: int = 100,
        allowed: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[Row]:
        """The last ``limit`` lines (or those after ``start``), then new lines as they are
        stored (followed by store order, so a line stored late is not missed), until the
        caller stops iterating."""
        self.tails += 1
        try:
            # Checked again now that the slot is taken: callers check before they start
            # iterating, so clients arriving together could all pass that first check.
            if self.tails > self.max_tails:
                raise TooManyTails(
                    f"{self.tails - 1} live tails are open, the most this server follows at once",
                    hint="close another tail, or query with --since instead of --follow",
                )
            async for row in self._tail(query, start=start, limit=limit, allowed=allowed):
                yield row
        finally:
            self.tails -= 1

    async def check(self, query: Query) -> None:
        """Refuse ``query`` now if the store's RE2 refuses one of its regular expressions
        (before a tail starts streaming: a refusal inside the stream cannot be reported)."""
        patterns = regexes(query)
        if patterns:
            await asyncio.to_thread(self.store.check_regexes, patterns)

    def check_tail_capacity(self) -> None:
        """Refuse a new live tail past ``max_tails`` (each one polls the store twice a
        second: a client must not be able to open thousands)."""
        if self.tails >= self.max_tails:
            raise TooManyTails(
                f"{self.tails} live tails are open, the most this server follows at once",
                hint="close another tail, or query with --since instead of --follow",
            )

    async def _tail(
        self,
        query: LogQuery,
        *,
        start: int | None = None,
        limit: int = 100,
        allowed: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[Row]:
        """``allowed`` is asked every :data:`TAIL_RECHECK` seconds: a tail whose token was
        revoked (or expired) ends there instead of following the logs for ever."""
        last = await asyncio.to_thread(self.store.last_seq)
        now = time.time_ns()
        if start is None:
            rows = await self.select(query, 0, now + NS, limit=limit)
            rows.reverse()
        else:
            rows = await self.select(query, start, now + NS, limit=limit, forward=True)
        shown = {row.seq for row in rows if row.seq > last}  # stored during the history read
        for row in rows:
            yield row
        checked = time.monotonic()
        while True:
            await asyncio.sleep(TAIL_POLL)
            if allowed is not None and time.monotonic() - checked >= TAIL_RECHECK:
                if not await allowed():
                    return
                checked = time.monotonic()
            rows = await asyncio.to_thread(
                self.store.select, query, 0, 2**62, limit=1000, forward=True, after_seq=last
            )
            for row in rows:
                last = max(last, row.seq)
                if row.seq not in shown:
                    yield row
            shown = {seq for seq in shown if seq > last}


__all__ = ["LogService", "StoreHandler", "TooManyTails"]
