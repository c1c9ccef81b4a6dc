"""Loopback port allocation for instances.

The kernel picks a free port (bind to port 0), and the allocator remembers what it handed
out so that two instances never get the same port while both are known to the driver, even
though nothing listens on it yet between allocation and the app's own bind.
"""

from __future__ import annotations

import socket

from socle.errors import RuntimeDriverError

HOST = "127.0.0.1"


class PortAllocator:
    """Hands out free 127.0.0.1 TCP ports and keeps track of those in use."""

    def __init__(self) -> None:
        self._in_use: set[int] = set()

    def reserve(self, ports: dict[str, int] | list[int]) -> None:
        """Mark ports as taken (e.g. those of re-adopted instances)."""
        self._in_use.update(ports.values() if isinstance(ports, dict) else ports)

    def release(self, ports: dict[str, int] | list[int]) -> None:
        self._in_use.difference_update(ports.values() if isinstance(ports, dict) else ports)

    def in_use(self) -> frozenset[int]:
        return frozenset(self._in_use)

    def allocate(self, names: list[str]) -> dict[str, int]:
        """One fresh port per name, all different from each other and from those in use."""
        out: dict[str, int] = {}
        for name in names:
            for _ in range(100):
                port = _free_port()
                if port not in self._in_use:
                    break
            else:  # pragma: no cover - the kernel keeps giving us ports we hold
                self.release(out)
                raise RuntimeDriverError(
                    "could not find a free loopback port",
                    hint="too many ports in use on 127.0.0.1; stop some instances",
                )
            self._in_use.add(port)
            out[name] = port
        return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port
