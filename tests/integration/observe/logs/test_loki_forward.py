"""Forwarding stored lines to a real Loki, here a mock Loki: Grafana Loki cannot be
installed on this machine (see docs/observe.md), so a small HTTP server in the test
records what Loki's push endpoint would receive and fails on demand."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from socle.observe.logs.logql import LogQuery
from socle.observe.logs.loki import Forwarder
from socle.observe.logs.store import Entry, LogStore


class MockLoki:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.labels: list[dict[str, str]] = []
        self.failing = 0
        self.down = threading.Event()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                if outer.down.is_set() or outer.failing > 0:
                    outer.failing = max(0, outer.failing - 1)
                    self.send_response(503)
                    self.end_headers()
                    return
                assert self.path == "/loki/api/v1/push"
                for stream in json.loads(body)["streams"]:
                    for _, line in stream["values"]:
                        outer.lines.append(line)
                        outer.labels.append(stream["stream"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def loki() -> Iterator[MockLoki]:
    mock = MockLoki()
    yield mock
    mock.server.shutdown()
    mock.server.server_close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    s = LogStore(tmp_path / "store")
    s.open()
    yield s
    s.close()


def _forwarder(store: LogStore, url: str, **kwargs: object) -> Forwarder:
    def after(seq: int, limit: int) -> list:
        return store.select(LogQuery(()), 0, 2**62, limit=limit, after_seq=seq)

    return Forwarder(url, after, store.last_seq, interval=0.05, max_backoff=0.2, **kwargs)  # type: ignore[arg-type]


async def _until(check: object, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_lines_reach_loki_in_order_through_failures(store: LogStore, loki: MockLoki) -> None:
    store.push([Entry(1, "history, not forwarded", {"app": "old"})])
    forwarder = _forwarder(store, loki.url, batch=7)
    task = asyncio.create_task(forwarder.run())
    try:
        await _until(lambda: forwarder.cursor is not None)
        loki.failing = 3  # the next three pushes fail: retried with backoff
        for k in range(5):
            await asyncio.to_thread(
                store.push,
                [
                    Entry(100 + k * 10 + i, f"line {k * 10 + i}", {"app": "api", "env": "prod"})
                    for i in range(10)
                ],
            )
        await _until(lambda: len(loki.lines) >= 50)
        assert loki.lines == [f"line {i}" for i in range(50)]
        assert loki.labels[0] == {"app": "api", "env": "prod"}
        assert forwarder.failures >= 3 and forwarder.sent == 50 and forwarder.dropped == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_long_outage_keeps_only_a_bounded_backlog(store: LogStore, loki: MockLoki) -> None:
    forwarder = _forwarder(store, loki.url, batch=100, max_backlog=200)
    task = asyncio.create_task(forwarder.run())
    try:
        await _until(lambda: forwarder.cursor is not None)
        loki.down.set()
        await asyncio.to_thread(
            store.push, [Entry(1000 + i, f"l{i}", {"app": "api"}) for i in range(1000)]
        )
        await _until(lambda: loki.requests >= 2)
        loki.down.clear()
        await _until(lambda: len(loki.lines) >= 200)
        await asyncio.sleep(0.3)
        # The newest 200 lines arrive; the 800 older ones were skipped and counted.
        assert loki.lines == [f"l{i}" for i in range(800, 1000)]
        assert forwarder.dropped == 800
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _run_until(forwarder: Forwarder, check: object) -> None:
    task = asyncio.create_task(forwarder.run())
    try:
        await _until(lambda: forwarder.cursor is not None)
        await _until(check)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_restart_resumes_where_loki_last_accepted(
    store: LogStore, loki: MockLoki, tmp_path: Path
) -> None:
    """What was stored while the forwarder was stopped (Socle down, or Loki down at the
    stop) reaches Loki after the restart, once, in order."""
    cursor = tmp_path / "store" / "forward.cursor"
    store.push([Entry(1, "history, not forwarded", {"app": "old"})])
    first = _forwarder(store, loki.url, batch=5, cursor_file=cursor)
    store.push([Entry(10 + i, f"a{i}", {"app": "api"}) for i in range(7)])

    async def run_first() -> None:
        task = asyncio.create_task(first.run())
        try:
            await _until(lambda: first.cursor is not None)
            await asyncio.to_thread(
                store.push, [Entry(20 + i, f"b{i}", {"app": "api"}) for i in range(7)]
            )
            await _until(lambda: len(loki.lines) >= 7)
            loki.down.set()  # Loki goes away, then Socle stops
            await asyncio.to_thread(
                store.push, [Entry(30 + i, f"c{i}", {"app": "api"}) for i in range(4)]
            )
            await _until(lambda: first.failures >= 1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    await run_first()
    assert cursor.stat().st_mode & 0o777 == 0o600
    # Stored while no forwarder ran (the control plane was stopped).
    store.push([Entry(40 + i, f"d{i}", {"app": "api"}) for i in range(3)])
    loki.down.clear()
    second = _forwarder(store, loki.url, batch=5, cursor_file=cursor)
    want = [f"b{i}" for i in range(7)] + [f"c{i}" for i in range(4)] + [f"d{i}" for i in range(3)]
    await _run_until(second, lambda: len(loki.lines) >= len(want))
    await asyncio.sleep(0.2)
    # a* were stored before the first start: history, not sent; nothing sent twice.
    assert loki.lines == want
    assert second.dropped == 0


async def test_a_new_loki_or_a_bad_cursor_starts_from_now(
    store: LogStore, loki: MockLoki, tmp_path: Path
) -> None:
    cursor = tmp_path / "store" / "forward.cursor"
    store.push([Entry(1, "old", {"app": "api"})])
    for k, content in enumerate(
        ['{"url": "http://elsewhere:3100/loki/api/v1/push", "seq": 0}', "not json"]
    ):
        cursor.write_text(content)
        forwarder = _forwarder(store, loki.url, cursor_file=cursor)
        task = asyncio.create_task(forwarder.run())
        try:
            await _until(lambda f=forwarder: f.cursor is not None)  # type: ignore[misc]
            await asyncio.to_thread(store.push, [Entry(100 + k, f"new {k}", {"app": "a"})])
            await _until(lambda k=k: f"new {k}" in loki.lines)  # type: ignore[misc]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert loki.lines == ["new 0", "new 1"]  # never "old"
