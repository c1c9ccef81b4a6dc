"""The log store's data types and its interface, without the engine.

Kept apart from :mod:`.store` (which imports DuckDB) so that the control plane, which
talks to the store in its own worker process (:mod:`.worker`), never loads the engine.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from socle.errors import SocleError

if TYPE_CHECKING:
    from socle.observe.logs.chain import Report, Segment
    from socle.observe.logs.logql import LogQuery, MetricQuery

NS = 1_000_000_000

STAGING = "staging"
"""Folder of files waiting to be read into ``hot`` (masked lines, owner-only)."""
STAGING_NAME = re.compile(r"[0-9a-f]{32}\.jsonl")


def staging_name() -> str:
    return f"{secrets.token_hex(16)}.jsonl"


def write_staged(root: Path, name: str, data: bytes) -> None:
    """Create ``root/staging/name`` owner-only (never an existing file) holding ``data``."""
    fd = os.open(root / STAGING / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


class LogStoreError(SocleError):
    """The log store could not do what was asked (its files, its database, its worker)."""

    http_status = 503


@dataclass(frozen=True)
class Entry:
    """One line fed directly (Loki push, Socle's own logs)."""

    ts: int
    """Nanoseconds since the epoch."""
    line: str
    labels: dict[str, str]


@dataclass(frozen=True)
class InstanceLabels:
    app: str
    env: str
    release: str


@dataclass(frozen=True)
class Chunk:
    """Complete lines read from an instance's file, and where the next read starts."""

    instance: str
    labels: InstanceLabels
    data: bytes
    inode: int
    pos: int


@dataclass(frozen=True)
class Staged:
    """A chunk already masked and written to a file of the store's ``staging`` folder by
    the control plane: the worker hands the file to DuckDB as is, so the bulk of the
    bytes never crosses the socket or gets decoded again (see :mod:`.worker`)."""

    instance: str
    labels: InstanceLabels
    file: str
    """A file name in ``<root>/staging`` (a name, not a path: the worker reads only there)."""
    lines: int
    inode: int
    pos: int


@dataclass(frozen=True)
class Row:
    seq: int
    ts: int
    labels: dict[str, str]
    trace_id: str | None
    line: str

    def to_dict(self) -> dict[str, object]:
        return {
            "ts": self.ts,
            "time": self.ts / NS,
            "labels": self.labels,
            "trace_id": self.trace_id,
            "line": self.line,
        }


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[int, float]]
    """(step time in ns, value)."""


class Store(Protocol):
    """What the service and the API need of a log store: :class:`.store.LogStore` in
    process, or :class:`.worker.WorkerStore` talking to one in its own process. Every
    method blocks (callers use ``asyncio.to_thread``)."""

    root: Path
    """The store's owner-only folder (its service keeps small files of its own there)."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def alive(self) -> bool: ...
    def push(self, entries: list[Entry]) -> int: ...
    def ingest_chunks(self, chunks: list[Chunk]) -> int: ...
    def offsets(self) -> dict[str, tuple[int, int]]: ...
    def forget(self, instances: list[str]) -> None: ...
    def remember(self, instance: str, labels: InstanceLabels) -> None: ...
    def remembered(self) -> dict[str, InstanceLabels]: ...
    def maintain(self) -> None: ...
    def seal(self) -> Segment | None: ...
    def last_seq(self) -> int: ...
    def stats(self) -> dict[str, object]: ...
    def verify(self) -> Report: ...
    def select(
        self,
        query: LogQuery,
        start: int,
        end: int,
        *,
        limit: int = 100,
        forward: bool = False,
        after_seq: int | None = None,
    ) -> list[Row]: ...
    def check_regexes(self, patterns: list[str]) -> None: ...
    def metric(self, query: MetricQuery, start: int, end: int, step: int) -> list[Series]: ...
    def series(
        self, query: LogQuery, start: int, end: int, limit: int = 10_000
    ) -> list[dict[str, str]]: ...
    def label_names(self, start: int, end: int) -> list[str]: ...
    def label_values(self, name: str, start: int, end: int) -> list[str]: ...


__all__ = [
    "NS",
    "STAGING",
    "Chunk",
    "Entry",
    "InstanceLabels",
    "LogStoreError",
    "Row",
    "Series",
    "Staged",
    "Store",
    "staging_name",
    "write_staged",
]
