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

Two settings that ask for the same port (``SOCLE_LISTEN`` and ``SOCLE_PROMETHEUS_LISTEN``
both ``127.0.0.1:9000``, or one on ``0.0.0.0`` and one on ``127.0.0.1``) are refused at the
second, naming both: the held socket does not listen, so the kernel alone would let both
through and the second server would fail later with its own words. A port picked outside
the book (the DNS server's UDP pick, which its TCP side must share) is :meth:`claim`-ed:
refused when the book holds or avoids it for something else.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Collection, Iterable

from socle.errors import ConfigError
from socle.settings import parse_listen

_PICK_ATTEMPTS = 64
_WILDCARDS = ("0.0.0.0", "::", "")


def _overlap(a: str, b: str) -> bool:
    """Whether listeners on hosts ``a`` and ``b`` (same port) would collide."""
    return a == b or a in _WILDCARDS or b in _WILDCARDS


class PortBook:
    """Ports held for one control plane; :meth:`close` lets them all go."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, int], socket.socket] = {}
        self._owner: dict[tuple[str, int], str] = {}
        """The setting each held port is held for (named when another asks for it)."""
        self._avoid: set[int] = set()
        self._elsewhere: list[Callable[[], Collection[int]]] = []

    def avoid(self, listens: Iterable[str]) -> None:
        """Never pick the explicit ports of ``listens`` (``HOST:PORT`` strings) for port 0."""
        for listen in listens:
            _, port = parse_listen(listen)
            if port:
                self._avoid.add(port)

    def avoid_also(self, source: Callable[[], Collection[int]]) -> None:
        """Never pick a port ``source()`` names at that moment: ports another allocator
        handed out that nothing binds yet (the runtime's instance ports: an app binding its
        port with SO_REUSEADDR after the book picked the same one would listen on it, in
        place of Prometheus or Alertmanager)."""
        self._elsewhere.append(source)

    def hold(self, listen: str, *, setting: str) -> tuple[str, int]:
        """Bind ``listen`` (port 0: a free port) and keep it; return ``(host, port)``.

        ``setting`` names the option the address came from, for the error a user sees.
        """
        host, port = parse_listen(listen)
        if port:
            for (other, held), owner in self._owner.items():
                if held != port or not _overlap(host, other):
                    continue
                if other == host and owner == setting:
                    return host, port  # the same listener asked again (a restart)
                raise ConfigError(
                    f"{setting} asks for {listen}, which {owner} already has ({other}:{held})",
                    hint=f"give {setting} its own port (port 0 picks a free one)",
                )
        rejected: list[socket.socket] = []
        try:
            for _ in range(_PICK_ATTEMPTS):
                sock = _bound(host, port, listen, setting)
                picked = int(sock.getsockname()[1])
                if port or (
                    picked not in self._avoid
                    and (host, picked) not in self._held
                    and not any(picked in source() for source in self._elsewhere)
                ):
                    self._held[(host, picked)] = sock
                    self._owner[(host, picked)] = setting
                    return host, picked
                rejected.append(sock)  # kept bound so the next pick cannot return it
            raise ConfigError(
                f"no free port on {host} for {setting}",
                hint=f"set {setting} to a free HOST:PORT",
            )
        finally:
            for sock in rejected:
                sock.close()

    def claim(self, host: str, port: int, *, setting: str) -> None:
        """Hold ``port``, picked elsewhere (a UDP pick whose TCP side must match), for
        ``setting``; :class:`ConfigError` when the book avoids it (a configured port a child
        binds later) or holds it for another setting, or another program has it."""
        if port in self._avoid and (host, port) not in self._owner:
            raise ConfigError(
                f"port {port} is configured for another listener ({setting} may not take it)",
                hint=f"set {setting} to another HOST:PORT",
            )
        self.hold(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", setting=setting)

    def release(self, host: str, port: int) -> None:
        self._owner.pop((host, port), None)
        sock = self._held.pop((host, port), None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for sock in self._held.values():
            sock.close()
        self._held.clear()
        self._owner.clear()

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
