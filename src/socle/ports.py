"""The TCP ports a control plane listens on, held from the moment they are picked.

Why: the control plane picks several ports itself (``HOST:0`` for the API, the Consul face,
Prometheus, Alertmanager) and serves most of them with granian, which binds with
``SO_REUSEPORT``. The old way (bind port 0, read the port, close, let the server bind it later)
left a window in which the next pick could get the same port back; two granian listeners then
shared it and the kernel spread connections between them (seen in CI: a Vault client got
"Not Found" from the Consul face for half of its requests). A :class:`PortBook` keeps each
picked (or configured) port bound, without listening, until the control plane stops:

- while bound, the kernel never hands that port to anyone's port-0 bind;
- the real listener (granian, Prometheus, Alertmanager, nginx: all set ``SO_REUSEADDR``) can
  still bind and listen on it, because the holding socket sets ``SO_REUSEADDR`` and does not
  listen;
- a port some other program already listens on is refused at once, naming the setting.

Ports configured explicitly but bound later by a child process (e.g. the ingress) are
``avoid``-ed: picks skip them even before anything binds them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from socle.errors import ConfigError
from socle.settings import parse_listen

_PICK_ATTEMPTS = 64


class PortBook:
    """Ports held for one control plane; :meth:`close` lets them all go."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, int], socket.socket] = {}
        self._avoid: set[int] = set()

    def avoid(self, listens: Iterable[str]) -> None:
        """Never pick the explicit ports of ``listens`` (``HOST:PORT`` strings) for port 0."""
        for listen in listens:
            _, port = parse_listen(listen)
            if port:
                self._avoid.add(port)

    def hold(self, listen: str, *, setting: str) -> tuple[str, int]:
        """Bind ``listen`` (port 0: a free port) and keep it; return ``(host, port)``.

        ``setting`` names the option the address came from, for the error a user sees.
        """
        host, port = parse_listen(listen)
        if port and (host, port) in self._held:
            return host, port
        rejected: list[socket.socket] = []
        try:
            for _ in range(_PICK_ATTEMPTS):
                sock = _bound(host, port, listen, setting)
                picked = int(sock.getsockname()[1])
                if port or (picked not in self._avoid and (host, picked) not in self._held):
                    self._held[(host, picked)] = sock
                    return host, picked
                rejected.append(sock)  # kept bound so the next pick cannot return it
            raise ConfigError(
                f"no free port on {host} for {setting}",
                hint=f"set {setting} to a free HOST:PORT",
            )
        finally:
            for sock in rejected:
                sock.close()

    def release(self, host: str, port: int) -> None:
        sock = self._held.pop((host, port), None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for sock in self._held.values():
            sock.close()
        self._held.clear()

    def held(self) -> list[tuple[str, int]]:
        return sorted(self._held)


def _bound(host: str, port: int, listen: str, setting: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {listen} ({setting}): {exc.strerror or exc}",
            hint=f"another program uses that port; set {setting} to another HOST:PORT "
            "(port 0 picks a free one)",
        ) from exc
    return sock


__all__ = ["PortBook"]
