"""Checks Socle runs for external and agent services, against real local servers."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from socle.network.checks import CheckLoops, Probe, probe
from socle.network.registry import Health

pytestmark = pytest.mark.slow


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_http_and_tcp_probes(http_port: int) -> None:
    health, output = await probe(Probe(http=f"http://127.0.0.1:{http_port}/ok", timeout=10))
    assert health is Health.PASSING and "200" in output
    health, output = await probe(Probe(http=f"http://127.0.0.1:{http_port}/bad", timeout=10))
    assert health is Health.CRITICAL and "503" in output
    assert (await probe(Probe(tcp=f"127.0.0.1:{http_port}", timeout=10)))[0] is Health.PASSING
    health, output = await probe(Probe(tcp=f"127.0.0.1:{closed_port()}", timeout=10))
    assert health is Health.CRITICAL and "TCP connect" in output


async def test_loops_report_and_stop(http_port: int) -> None:
    loops = CheckLoops()
    results: asyncio.Queue[Health] = asyncio.Queue()
    loops.run(
        "a",
        Probe(http=f"http://127.0.0.1:{http_port}/ok", interval=0.05),
        lambda h, _: results.put_nowait(h),
    )
    assert await asyncio.wait_for(results.get(), 30) is Health.PASSING
    assert loops.running() == frozenset({"a"})
    loops.remove("a")
    assert loops.running() == frozenset()
    await loops.close()
