"""The platform audit log: one chained JSON line per API request and per state change.

Lines use the secrets audit's format (:mod:`socle.secrets.core.audit_chain`): each one
ends with ``prev_hash`` and ``hash``, so ``socle audit verify`` finds an edited, removed or
reordered line without a key. Two kinds of entry::

    {"time", "kind": "request", "who", "request_id", "trace_id", "method", "path",
     "status", "result", "duration_ms"}
    {"time", "kind": "change", "who", "request_id", "trace_id", "op", "keys", "result"}

``who`` is the API token's name (``-`` for a request refused before a token was found,
``socle`` for the platform's own work); values are never written, only state keys, so the
log holds no secret. A request's changes carry its request id: ``socle audit query``
shows both side by side.

Appends happen on a worker thread under one lock (the chain needs a total order); the
file is opened once, owner-only, in append mode. Lines are flushed to the kernel at once
but not fsynced one by one: a power cut may lose the last lines, never corrupt earlier
ones (the verifier stops at a torn last line and says which).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socle.fs import open_private_append, private_dir
from socle.secrets.core.audit_chain import (
    VerifyResult,
    digest,
    last_line_hash,
    seal_line,
    verify_file,
)
from socle.tracing import current_trace_id

FILE_NAME = "platform.log"


trace_id = current_trace_id


@dataclass(frozen=True)
class AuditQuery:
    """A filter over entries; every field narrows (None: any)."""

    who: str | None = None
    since: float | None = None
    """Unix time: entries at or after it."""
    path: str | None = None
    """A prefix of the request path, or of one of the changed state keys."""
    request_id: str | None = None
    limit: int = 1000
    """At most this many entries, the newest ones (returned oldest first)."""

    def matches(self, entry: dict[str, Any]) -> bool:
        if self.who is not None and entry.get("who") != self.who:
            return False
        if self.since is not None and float(entry.get("time", 0)) < self.since:
            return False
        if self.request_id is not None and entry.get("request_id") != self.request_id:
            return False
        if self.path is not None:
            paths = [entry.get("path") or "", *(entry.get("keys") or [])]
            if not any(isinstance(p, str) and p.startswith(self.path) for p in paths):
                return False
        return True


class PlatformAudit:
    """The writer and reader of one home's platform audit file."""

    def __init__(self, folder: Path) -> None:
        self.path = private_dir(folder) / FILE_NAME
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._prev = ""

    def _open(self) -> int:
        if self._fd is None:
            self._prev = last_line_hash(self.path)
            self._fd = open_private_append(self.path)
        return self._fd

    def append(self, entry: dict[str, Any]) -> None:
        """Chain ``entry`` (given a ``time`` and ``trace_id`` when missing) to the file.

        Blocking: call it from a worker thread in async code."""
        record = {"time": round(time.time(), 6), **entry}
        record.setdefault("trace_id", trace_id())
        with self._lock:
            fd = self._open()
            line = seal_line(record, self._prev)
            data = memoryview(line + b"\n")
            while data:
                written = os.write(fd, data)
                data = data[written:]
            # The digest of the line as written: what the next line's prev_hash must be.
            self._prev = digest(line)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry, oldest first (lines that are not JSON objects are skipped:
        :meth:`verify` reports them)."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            for raw in handle:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    entry.pop("prev_hash", None)
                    entry.pop("hash", None)
                    yield entry

    def query(self, query: AuditQuery) -> list[dict[str, Any]]:
        """The newest ``query.limit`` entries that match, oldest first. Blocking."""
        found: list[dict[str, Any]] = []
        for entry in self.entries():
            if query.matches(entry):
                found.append(entry)
                if len(found) > 2 * query.limit:
                    del found[: len(found) - query.limit]
        return found[-query.limit :] if query.limit > 0 else []

    def verify(self) -> VerifyResult:
        """The chain checked from the first line. Blocking."""
        if not self.path.exists():
            return VerifyResult(True, 0)
        with self._lock:
            return verify_file(self.path)


__all__ = ["FILE_NAME", "AuditQuery", "PlatformAudit", "trace_id"]
