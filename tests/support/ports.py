"""One helper for tests that must name a port before the server that binds it starts."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port free right now, picked below the kernel's ephemeral range.

    A port the kernel hands to some port-0 bind or outgoing connection (another control
    plane's listener, an instance, a client) is then never one a test has chosen for a
    fixed setting in the window before its server binds it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(10_000, max(low, 10_001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    with socket.socket() as sock:  # the range below is crowded: the kernel's pick
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
