"""Health thresholds (pure) and the cheap http/tcp probes against real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from socle.model.app import HealthSpec
from socle.runtime.local.health import (
    FAST_INTERVAL,
    FAST_NET_INTERVAL,
    HealthEvent,
    HealthTracker,
    http_probe,
    tcp_probe,
)


def _spec(**fields: object) -> HealthSpec:
    return HealthSpec.model_validate({"tcp": {"port": "p"}, **fields})


def test_ready_after_success_threshold_then_normal_interval() -> None:
    tracker = HealthTracker(_spec(interval=2, successThreshold=2), started=0.0)
    assert tracker.next_delay() == FAST_NET_INTERVAL
    assert tracker.record(None, 0.1) is None
    assert tracker.next_delay() == 2.0
    assert tracker.record(None, 2.1) is HealthEvent.READY
    assert tracker.ready


def test_exec_checks_start_slower_than_network_probes() -> None:
    spec = HealthSpec.model_validate({"exec": {"command": ["true"]}, "interval": 2})
    assert HealthTracker(spec, started=0.0).next_delay() == FAST_INTERVAL


def test_unhealthy_after_failure_threshold_consecutive_failures() -> None:
    tracker = HealthTracker(_spec(interval=1, failureThreshold=3), started=0.0)
    tracker.record(None, 0.1)
    assert tracker.record("down", 1.1) is None
    assert tracker.record(None, 2.1) is None  # a pass resets the count
    assert tracker.record("down", 3.1) is None
    assert tracker.record("down", 4.1) is None
    assert tracker.record("down", 5.1) is HealthEvent.UNHEALTHY
    assert not tracker.ready and tracker.last_reason == "down"


def test_fast_probes_before_first_success_count_once_per_interval() -> None:
    tracker = HealthTracker(_spec(interval=1, failureThreshold=2), started=0.0)
    events = [tracker.record("refused", t / 10) for t in range(1, 11)]  # 10 probes in 1 s
    assert HealthEvent.UNHEALTHY not in events
    assert tracker.record("refused", 1.15) is HealthEvent.UNHEALTHY


def test_start_grace_ignores_early_failures() -> None:
    tracker = HealthTracker(_spec(interval=0.1, failureThreshold=1, startGrace=5), started=0.0)
    assert tracker.record("refused", 4.9) is None
    assert tracker.record("refused", 5.0) is HealthEvent.UNHEALTHY


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A loopback server answering each request with the next canned response."""
    replies = [b"HTTP/1.1 200 OK\r\n\r\n"]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(replies[0])
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    yield port, replies
    srv.close()
    await srv.wait_closed()


async def test_http_probe_status_classes(server: tuple[int, list[bytes]]) -> None:
    port, replies = server
    assert await http_probe(port, "/", 1.0) is None
    replies[0] = b"HTTP/1.0 302 Found\r\nLocation: /x\r\n\r\n"
    assert await http_probe(port, "/", 1.0) is None
    replies[0] = b"HTTP/1.1 503 Service Unavailable\r\n\r\n"
    assert await http_probe(port, "/", 1.0) == "http status 503"
    replies[0] = b"garbage that is not http at all\r\n"
    result = await http_probe(port, "/", 1.0)
    assert result is not None and "not an HTTP response" in result


async def test_http_probe_timeout_and_refused() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # accept, never answer

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        assert await http_probe(port, "/", 0.2) == "no answer within 0.2s"
    finally:
        for writer in writers:
            writer.close()
        srv.close()
        await srv.wait_closed()
    refused = await http_probe(port, "/", 0.5)
    assert refused is not None and "cannot connect" in refused


async def test_tcp_probe(server: tuple[int, list[bytes]]) -> None:
    port, _ = server
    assert await tcp_probe(port, 1.0) is None
