"""A client without a token can neither starve nor bloat a running control plane.

Idle and half-open connections, huge bodies (declared or chunked), slow bodies: each
against a real ``socle server``, with the server's memory read from ``/proc``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.socle_fixture import SocleServer, wait_for

GIB = 1024**3
CHUNK = b"x" * (1024 * 1024)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _address(server: SocleServer) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def _read_status(sock: socket.socket, timeout: float = 30.0) -> int:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split()[1])


def _send_huge(server: SocleServer, path: str, head: list[str], total: int) -> tuple[int, int]:
    """Send a request with a body of ``total`` bytes; stop once the server answers or closes.

    Returns (status, bytes of body actually sent).
    """
    sock = socket.create_connection(_address(server), timeout=30)
    with contextlib.closing(sock):
        chunked = not any(h.lower().startswith("content-length") for h in head)
        lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json", *head]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sent = 0
        sock.setblocking(False)
        frame = (f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n") if chunked else CHUNK
        while sent < total:
            try:
                peek = sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                peek = None
            except OSError:
                break
            if peek is not None:
                break  # the server answered (or closed): stop sending
            try:
                sock.sendall(frame)
            except BlockingIOError:
                time.sleep(0.01)  # the server is not reading: that is the point
                continue
            except OSError:
                break
            sent += len(CHUNK)
        sock.setblocking(True)
        return _read_status(sock), sent


@pytest.fixture
def tight_server(tmp_path: Path, socle_env: dict[str, str]) -> Iterator[SocleServer]:
    """A server with short header/body timeouts, to watch them act without long waits."""
    env = dict(socle_env, SOCLE_HEADER_TIMEOUT="1", SOCLE_BODY_TIMEOUT="1")
    srv = SocleServer(home=tmp_path / "home", env=env)
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


def test_500_idle_connections_starve_nobody(server: SocleServer) -> None:
    address = _address(server)
    held: list[socket.socket] = []
    try:
        for index in range(500):
            sock = socket.create_connection(address, timeout=30)
            held.append(sock)
            if index % 2:  # half keep-alive after one request, half never say a word
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _read_status(sock) == 200
        assert httpx.get(server.url + "/healthz", timeout=30).json() == {"status": "ok"}
        assert server.api("GET", "/api/v1/status").status_code == 200
        assert httpx.get(server.url + "/v1/sys/health", timeout=30).status_code in (200, 501, 503)
    finally:
        for sock in held:
            sock.close()


def test_idle_keepalive_and_slow_headers_are_closed(tight_server: SocleServer) -> None:
    address = _address(tight_server)
    idle = socket.create_connection(address, timeout=30)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _read_status(idle) == 200
    slow = socket.create_connection(address, timeout=30)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished

    def closed(sock: socket.socket) -> bool:
        sock.settimeout(0.2)
        try:
            while data := sock.recv(4096):
                del data
            return True
        except TimeoutError:
            return False
        except OSError:
            return True

    wait_for(lambda: closed(idle), 30, "idle keep-alive connection to be closed")
    wait_for(lambda: closed(slow), 30, "slow-header connection to be closed")
    idle.close()
    slow.close()


def test_a_tokenless_1gb_body_is_refused_unread(server: SocleServer) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    before = _rss(pid)
    # Declared: refused on the header alone (before the token is even looked at).
    status, sent = _send_huge(server, "/api/v1/apply", [f"Content-Length: {GIB}"], GIB)
    assert status == 413
    # Chunked, no token: 401 without reading the body.
    status, sent_chunked = _send_huge(server, "/api/v1/apply", [], GIB)
    assert status == 401
    # Chunked, with the token: cut at the limit (1 MiB), 413.
    status, _ = _send_huge(server, "/api/v1/plan", [f"Authorization: Bearer {server.token}"], GIB)
    assert status == 413
    # The Vault API has its own, larger limit; a declared 1 GB body is refused the same way.
    status, _ = _send_huge(server, "/v1/secret/data/x", [f"Content-Length: {GIB}"], GIB)
    assert status == 413
    assert sent < GIB and sent_chunked < GIB
    growth = _rss(pid) - before
    assert growth < 200 * 1024 * 1024, f"server RSS grew by {growth} bytes"
    assert server.api("GET", "/api/v1/status").status_code == 200


def test_a_stalled_body_is_cut(tight_server: SocleServer) -> None:
    sock = socket.create_connection(_address(tight_server), timeout=30)
    with contextlib.closing(sock):
        sock.sendall(
            (
                "POST /api/v1/plan HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {tight_server.token}\r\nContent-Length: 100\r\n\r\n"
                '{"path": '
            ).encode()
        )
        assert _read_status(sock) == 408


def test_openapi_and_health_need_no_token_but_nothing_else_does(server: SocleServer) -> None:
    assert httpx.get(server.url + "/api/v1/openapi.json", timeout=30).status_code == 200
    for method, path in (("GET", "/api/v1/tokens"), ("POST", "/api/v1/plan"), ("GET", "/api/v1/x")):
        response = httpx.request(method, server.url + path, timeout=30)
        assert response.status_code == 401, (path, response.text)


def test_http2_prior_knowledge_is_not_served(server: SocleServer) -> None:
    """HTTP/2 connections would have no idle timeout: the listener speaks HTTP/1.1 only."""
    sock = socket.create_connection(_address(server), timeout=30)
    with contextlib.closing(sock):
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                data += chunk
        assert not data or data.startswith(b"HTTP/1.1 4"), data[:100]
