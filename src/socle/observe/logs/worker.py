"""The log store in its own process, and the control plane's client of it.

Why a process: the engine (DuckDB, ~60 MB of resident library and buffers) stays out of
the control plane, which must idle small; a heavy query or an engine crash cannot stall or
kill the process that supervises the apps; and the store's memory is bounded on its own.
Like Prometheus next to Socle, the worker is a child the control plane starts, talks to
and stops; it exits by itself when the control plane's end of its stdin closes (so a
``kill -9`` of the control plane leaves no orphan holding the DuckDB file).

Transport: :mod:`multiprocessing.connection` over a Unix socket in the owner-only store
folder (an abstract one if that path is too long), with a random per-start authkey (HMAC challenge) handed over on stdin: only the
control plane that started the worker can call it. One call is ``(method, args,
kwargs)`` from :data:`METHODS`, answered ``("ok", result)`` or ``("error", class name,
message, hint)``.

Masking stays in the control plane: :class:`WorkerStore` masks lines with the redactor
before they leave the process, so secret values never reach the worker. The bulk of the
bytes (instance output) does not cross the socket either: the control plane writes each
masked chunk to an owner-only file in the store's ``staging`` folder and sends its name;
the worker reads nothing else there and removes the files once read (``ingest_staged``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import TYPE_CHECKING, Any

import socle
from socle.errors import ConfigError, SocleError
from socle.fs import private_dir
from socle.observe.logs import chain as chain_mod
from socle.observe.logs.logql import LogQLError
from socle.observe.logs.model import (
    STAGING,
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
from socle.redact import Redactor

if TYPE_CHECKING:
    from socle.observe.logs.chain import Report, Segment
    from socle.observe.logs.logql import LogQuery, MetricQuery
    from socle.observe.traces.model import Span

log = logging.getLogger("socle.observe.logs")

METHODS = frozenset(
    {
        "push",
        "ingest_chunks",
        "ingest_staged",
        "offsets",
        "forget",
        "remember",
        "remembered",
        "maintain",
        "seal",
        "last_seq",
        "stats",
        "select",
        "check_regexes",
        "metric",
        "series",
        "label_names",
        "label_values",
        # The trace store, served by the same process (one embedded engine for both).
        "traces_insert",
        "traces_trace",
        "traces_recent",
        "traces_count",
    }
)
"""What a client may call (everything else is refused)."""
ERRORS: dict[str, type[SocleError]] = {
    "LogQLError": LogQLError,
    "ConfigError": ConfigError,
    "LogStoreError": LogStoreError,
}
SOCKET = "worker.sock"
MAX_SOCKET_PATH = 100
"""Unix socket paths are limited to 108 bytes: a deeper home uses an abstract socket (a
random name, still behind the authkey) instead of the file in the owner-only folder."""


def address_for(root: Path, nonce: str) -> str:
    path = str(root / SOCKET)
    return path if len(path.encode()) < MAX_SOCKET_PATH else f"\0socle-logstore-{nonce}"


START_TIMEOUT = 60.0


# -- the worker process --------------------------------------------------------------------


class _Served:
    """The log store's methods, and the trace store's under a ``traces_`` prefix."""

    def __init__(self, logs: Any, traces: Any) -> None:
        self._logs = logs
        self._traces = traces

    def __getattr__(self, name: str) -> Any:
        if name.startswith("traces_"):
            if self._traces is None:
                raise LogStoreError("this worker keeps no trace store")
            return getattr(self._traces, name.removeprefix("traces_"))
        return getattr(self._logs, name)


def _serve_connection(conn: Connection, store: Any) -> None:
    with conn:
        while True:
            try:
                method, args, kwargs = conn.recv()
            except (EOFError, OSError):
                return
            if method not in METHODS:
                conn.send(("error", "LogStoreError", f"unknown method {method!r}", None))
                continue
            try:
                result = getattr(store, method)(*args, **kwargs)
            except SocleError as exc:
                conn.send(("error", type(exc).__name__, exc.message, exc.hint))
                continue
            except Exception as exc:  # reported, the worker keeps serving
                log.exception("log store worker: %s failed", method)
                conn.send(("error", "LogStoreError", f"{method} failed: {exc}", None))
                continue
            conn.send(("ok", result))


def serve(config: dict[str, Any]) -> None:
    """Open the store, answer calls until stdin closes, close the store (blocking)."""
    from socle.observe.logs.store import LogStore  # the engine: only in this process

    root = Path(config["root"])
    store = LogStore(
        root,
        retention_seconds=config["retention_seconds"],
        retention_bytes=config["retention_bytes"],
        segment_seconds=config["segment_seconds"],
        segment_rows=config["segment_rows"],
    )
    deadline = time.monotonic() + START_TIMEOUT / 2
    while True:
        try:
            store.open()
            break
        except LogStoreError:
            # The worker of a control plane killed a moment ago may still be closing
            # the database (it exits once it sees its stdin close): wait for its lock.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    traces = None
    if config.get("traces_root"):
        from socle.observe.traces.store import TraceStore

        traces = TraceStore(
            Path(config["traces_root"]),
            retention_seconds=config["traces_retention_seconds"],
            max_spans=config["traces_max_spans"],
        )
        traces.open()
    served = _Served(store, traces)
    address = str(config["address"])
    path = None if address.startswith("\0") else Path(address)
    if path is not None:
        path.unlink(missing_ok=True)
    listener = Listener(address, family="AF_UNIX", authkey=bytes.fromhex(config["authkey"]))
    if path is not None:
        os.chmod(path, 0o600)

    def accept() -> None:
        while True:
            try:
                conn = listener.accept()
            except OSError:
                return  # closed at shutdown
            except Exception as exc:  # a client that failed the authkey challenge
                log.warning("log store worker: refused a connection: %s", exc)
                continue
            threading.Thread(target=_serve_connection, args=(conn, served), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        sys.stdin.read()  # until the control plane's end closes (stop, or its death)
    finally:
        listener.close()
        store.close()
        if traces is not None:
            traces.close()
        if path is not None:
            path.unlink(missing_ok=True)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = json.loads(sys.stdin.readline())
    os.umask(0o077)
    serve(config)


# -- the control plane's side --------------------------------------------------------------


class WorkerStore:
    """A :class:`~socle.observe.logs.model.Store` served by a worker process it starts in
    :meth:`open` and stops in :meth:`close`; lines are masked with ``redact`` here."""

    def __init__(
        self,
        root: Path,
        *,
        redact: Redactor | None = None,
        retention_seconds: float = 30 * 86400,
        retention_bytes: int = 10 * 1024**3,
        segment_seconds: float = 3600.0,
        segment_rows: int = 2_000_000,
        traces_root: Path | None = None,
        traces_retention_seconds: float = 7 * 86400,
        traces_max_spans: int = 500_000,
    ) -> None:
        self.root = root
        self._redact: Callable[[str], str] = redact if redact is not None else str
        self._mask: Callable[[bytes], bytes] = redact.mask_bytes if redact is not None else bytes
        self._config = {
            "root": str(root),
            "retention_seconds": retention_seconds,
            "retention_bytes": retention_bytes,
            "segment_seconds": segment_seconds,
            "segment_rows": segment_rows,
            "traces_root": str(traces_root) if traces_root is not None else None,
            "traces_retention_seconds": traces_retention_seconds,
            "traces_max_spans": traces_max_spans,
        }
        self._authkey = b""
        self.address = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        private_dir(self.root)
        private_dir(self.root / STAGING)
        self._authkey = secrets.token_bytes(32)
        self.address = address_for(self.root, secrets.token_hex(8))
        config = dict(self._config, authkey=self._authkey.hex(), address=self.address)
        # The worker runs the very code of this process (not whatever ``socle`` the
        # interpreter would find first).
        code_root = str(Path(socle.__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH", "")
        env = dict(os.environ, PYTHONPATH=code_root + (os.pathsep + path if path else ""))
        proc = subprocess.Popen(
            [sys.executable, "-m", "socle.observe.logs.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(config).encode() + b"\n")
        proc.stdin.flush()
        ready = proc.stdout.readline()
        if ready.strip() != b"ready":
            proc.kill()
            proc.wait()
            raise LogStoreError(
                f"the log store worker did not start (exit {proc.returncode})",
                hint="see the control plane's output for the worker's error",
            )
        self._proc = proc

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()  # the worker closes its store and exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self.alive():
            raise LogStoreError(
                "the log store worker is not running", hint="it is restarted by the next pass"
            )
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = Client(self.address, family="AF_UNIX", authkey=self._authkey)
            conn.send((method, args, kwargs))
            answer = conn.recv()
        except (OSError, EOFError) as exc:
            if conn is not None:
                conn.close()
            raise LogStoreError(f"the log store worker did not answer: {exc}") from exc
        with self._lock:
            self._idle.append(conn)
        if answer[0] == "ok":
            return answer[1]
        _, name, message, hint = answer
        raise ERRORS.get(name, LogStoreError)(message, hint=hint)

    # The Store interface ------------------------------------------------------------------

    def push(self, entries: list[Entry]) -> int:
        if not entries:
            return 0
        masked = [Entry(e.ts, self._redact(e.line), e.labels) for e in entries]
        return int(self._call("push", masked))

    def ingest_chunks(self, chunks: list[Chunk]) -> int:
        """Mask each chunk here and write it to the store's staging folder, then have the
        worker read those files (``ingest_staged``): only names cross the socket, and the
        bytes are never decoded (invalid UTF-8 is replaced first, as DuckDB wants it)."""
        staged: list[Staged] = []
        try:
            for c in chunks:
                lines = c.data.count(b"\n")
                name = ""
                if lines:
                    data = c.data
                    if not data.isascii():
                        try:
                            data.decode("utf-8")
                        except UnicodeDecodeError:
                            data = data.decode("utf-8", "replace").encode()
                    name = staging_name()
                    write_staged(self.root, name, self._mask(data))
                staged.append(Staged(c.instance, c.labels, name, lines, c.inode, c.pos))
            return int(self._call("ingest_staged", staged))
        finally:
            for item in staged:  # the worker removes what it read; this is for failures
                if item.file:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.root / STAGING / item.file)

    def offsets(self) -> dict[str, tuple[int, int]]:
        result: dict[str, tuple[int, int]] = self._call("offsets")
        return result

    def forget(self, instances: list[str]) -> None:
        if instances:
            self._call("forget", instances)

    def remember(self, instance: str, labels: InstanceLabels) -> None:
        self._call("remember", instance, labels)

    def remembered(self) -> dict[str, InstanceLabels]:
        result: dict[str, InstanceLabels] = self._call("remembered")
        return result

    def maintain(self) -> None:
        self._call("maintain")

    def seal(self) -> Segment | None:
        result: Segment | None = self._call("seal")
        return result

    def last_seq(self) -> int:
        return int(self._call("last_seq"))

    def stats(self) -> dict[str, object]:
        result: dict[str, object] = self._call("stats")
        return result

    def verify(self) -> Report:
        return chain_mod.verify(self.root)  # files only: no need for the worker

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
        result: list[Row] = self._call(
            "select", query, start, end, limit=limit, forward=forward, after_seq=after_seq
        )
        return result

    def check_regexes(self, patterns: list[str]) -> None:
        self._call("check_regexes", patterns)

    def metric(self, query: MetricQuery, start: int, end: int, step: int) -> list[Series]:
        result: list[Series] = self._call("metric", query, start, end, step)
        return result

    def series(
        self, query: LogQuery, start: int, end: int, limit: int = 10_000
    ) -> list[dict[str, str]]:
        result: list[dict[str, str]] = self._call("series", query, start, end, limit)
        return result

    def label_names(self, start: int, end: int) -> list[str]:
        result: list[str] = self._call("label_names", start, end)
        return result

    def label_values(self, name: str, start: int, end: int) -> list[str]:
        result: list[str] = self._call("label_values", name, start, end)
        return result

    # The trace store (with ``traces_root``) -------------------------------------------------

    def traces_insert(self, spans: list[Span]) -> int:
        """Store spans (attributes masked here, like log lines: they never leave masked)."""
        if not spans:
            return 0
        masked = [
            dataclasses.replace(
                s,
                name=self._redact(s.name),
                attributes={
                    k: self._redact(v) if isinstance(v, str) else v for k, v in s.attributes.items()
                },
            )
            for s in spans
        ]
        return int(self._call("traces_insert", masked))

    def traces_trace(self, trace_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("traces_trace", trace_id)
        return result

    def traces_recent(self, limit: int = 20, service: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("traces_recent", limit, service)
        return result

    def traces_count(self) -> int:
        return int(self._call("traces_count"))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()


__all__ = ["METHODS", "WorkerStore", "address_for", "main", "serve"]
