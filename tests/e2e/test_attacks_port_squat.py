"""An app outlives a crashed control plane and listens on its freed API port: the CLI,
following the stale ``server.json``, must not hand it the admin token.

Apps share the host's network (they listen on 127.0.0.1 where ingress and checks reach
them), so nothing stops an app from binding the control plane's port once it is free.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from tests.e2e.socle_fixture import SocleServer


class Squatter:
    """A listener on the control plane's port that records every request it is sent."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.received = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.received += conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                except OSError:
                    pass

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close()


def test_the_cli_does_not_send_the_token_to_a_process_squatting_the_port(
    server: SocleServer, tmp_path: Path
) -> None:
    assert server.cli("status").returncode == 0  # the real control plane answers
    port = urlsplit(server.url).port
    assert port is not None
    server.kill9()  # server.json stays behind, naming the dead process
    squatter = Squatter(port)
    try:
        result = server.cli("status", check=False)
    finally:
        squatter.close()
    assert server.token not in squatter.received.decode(errors="replace")
    assert b"Authorization" not in squatter.received
    assert result.returncode != 0
    assert "held by a process other than the control plane" in result.stderr + result.stdout
