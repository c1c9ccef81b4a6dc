"""The DNS server on real sockets, asked by the real ``dig`` and by dnspython over UDP/TCP."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from socle.network.dns import DnsServer
from socle.network.registry import ServiceInstance, ServiceRegistry

pytestmark = pytest.mark.slow


@pytest.fixture
async def served() -> AsyncIterator[tuple[ServiceRegistry, int]]:
    reg = ServiceRegistry()
    reg.upsert(ServiceInstance("web", "default", "web-aaa-0", "127.0.0.1", {"http": 8001}))
    reg.upsert(ServiceInstance("web", "default", "web-aaa-1", "127.0.0.2", {"http": 8002}))
    server = DnsServer(reg, "127.0.0.1", 0)
    await server.start()
    try:
        yield reg, server.address[1]
    finally:
        await server.stop()


async def dig(port: int, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "dig", "@127.0.0.1", "-p", str(port), "+time=5", "+tries=2", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode()


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (dnsutils) is not installed")
async def test_dig_reads_a_and_srv_over_udp_and_tcp(served: tuple[ServiceRegistry, int]) -> None:
    reg, port = served
    short = await dig(port, "+short", "web.default.socle.internal", "A")
    assert sorted(short.split()) == ["127.0.0.1", "127.0.0.2"]
    srv = await dig(port, "+short", "+tcp", "_http._tcp.web.default.socle.internal", "SRV")
    assert sorted(line.split()[2] for line in srv.splitlines()) == ["8001", "8002"]
    full = await dig(port, "nope.default.socle.internal", "A")
    assert "status: NXDOMAIN" in full
    refused = await dig(port, "example.com", "A")
    assert "status: REFUSED" in refused

    reg.remove("web-aaa-0")  # fails its check: gone from the next answer
    again = await dig(port, "+short", "web.default.socle.internal", "A")
    assert again.split() == ["127.0.0.2"]


async def test_dnspython_udp_tcp_and_malformed_packets(served: tuple[ServiceRegistry, int]) -> None:
    _, port = served
    query = dns.message.make_query("web.default.socle.internal", "A")
    udp = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=10)
    tcp = await dns.asyncquery.tcp(query, "127.0.0.1", port=port, timeout=10)
    assert udp.rcode() == tcp.rcode() == dns.rcode.NOERROR
    assert len(udp.answer[0]) == len(tcp.answer[0]) == 2

    # Garbage over UDP gets no answer, and the server keeps answering others.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for junk in (b"", b"\x00", b"\xff" * 40, b"\x00\x01" * 300):
            sock.sendto(junk, ("127.0.0.1", port))
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    # Garbage over TCP: the connection is closed without an answer.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(struct.pack("!H", 5) + b"\xff" * 5)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()
    again = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=10)
    assert len(again.answer[0]) == 2


async def test_the_tcp_side_never_takes_a_port_the_book_holds_for_another_listener() -> None:
    """Its TCP listener sets SO_REUSEADDR, so the kernel would let it bind a port the port
    book holds (bound, not listening) for the API or Prometheus: it asks the book first. A
    configured port already held is refused naming both settings; a picked one is picked
    again; stopping gives the port back."""
    from socle.errors import ConfigError
    from socle.ports import PortBook

    book = PortBook()
    try:
        _, held = book.hold("127.0.0.1:0", setting="SOCLE_PROMETHEUS_LISTEN")
        fixed = DnsServer(
            ServiceRegistry(),
            "127.0.0.1",
            held,
            claim=lambda p: book.hold(f"127.0.0.1:{held}", setting="SOCLE_DNS_LISTEN"),
            release=lambda p: book.release("127.0.0.1", p),
        )
        with pytest.raises(ConfigError, match="SOCLE_PROMETHEUS_LISTEN"):
            await fixed.start()
        asked: list[int] = []

        def claim(port: int) -> None:
            asked.append(port)
            if len(asked) == 1:  # as if the UDP pick had returned the held port
                book.claim("127.0.0.1", held, setting="SOCLE_DNS_LISTEN")
            book.claim("127.0.0.1", port, setting="SOCLE_DNS_LISTEN")

        picked = DnsServer(
            ServiceRegistry(),
            "127.0.0.1",
            0,
            claim=claim,
            release=lambda p: book.release("127.0.0.1", p),
        )
        await picked.start()
        try:
            port = picked.address[1]
            assert len(asked) == 2 and port == asked[1] and port != held
            assert ("127.0.0.1", port) in book.held()
        finally:
            await picked.stop()
        assert book.held() == [("127.0.0.1", held)]
    finally:
        book.close()
