"""Health checks Socle runs for things it does not run (external and agent services).

Apps' instances are checked by the runtime (their own health spec, inside the sandbox);
an ``ExternalService`` or a service registered through the Consul agent API may name an
HTTP URL or a TCP address instead. :class:`CheckLoops` runs one loop per checked entry and
reports each result; a check that fails says why in its output (Consul's ``Output``).

An HTTP check passes on a 2xx answer (Consul also says ``warning`` on 429; kept simple:
anything else is critical); a TCP check passes when a connection opens. Redirects are not
followed and bodies are not read past a few KiB: a check is a probe, not a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from socle.network.registry import Health
from socle.tasks import TaskGroup, TaskMonitor, within

log = logging.getLogger("socle.network")


@dataclass(frozen=True)
class Probe:
    """What to check: an ``http``(s) URL or a ``tcp`` ``HOST:PORT``."""

    http: str | None = None
    tcp: str | None = None
    interval: float = 10.0
    timeout: float = 5.0


ResultListener = Callable[[Health, str], None]


def _split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


async def probe(spec: Probe) -> tuple[Health, str]:
    """Run ``spec`` once: (health, output)."""
    if spec.tcp is not None:
        try:
            host, port = _split_hostport(spec.tcp)
            _, writer = await within(asyncio.open_connection(host, port), spec.timeout)
        except (OSError, ValueError, TimeoutError) as exc:
            return Health.CRITICAL, f"TCP connect {spec.tcp}: {type(exc).__name__}: {exc}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return Health.PASSING, f"TCP connect {spec.tcp}: Success"
    if spec.http is not None:
        try:
            async with httpx.AsyncClient(timeout=spec.timeout, follow_redirects=False) as client:
                response = await client.get(spec.http)
        except httpx.HTTPError as exc:
            return Health.CRITICAL, f"HTTP GET {spec.http}: {type(exc).__name__}: {exc}"
        output = f"HTTP GET {spec.http}: {response.status_code} {response.reason_phrase}"
        return (Health.PASSING if 200 <= response.status_code < 300 else Health.CRITICAL), output
    return Health.PASSING, ""


class CheckLoops:
    """One loop per checked id; :meth:`set` starts (or restarts) it, :meth:`remove` stops it."""

    def __init__(self, tasks: TaskMonitor | None = None) -> None:
        self._group: TaskGroup = (tasks or TaskMonitor()).group("network/checks")
        self._loops: dict[str, tuple[Probe, asyncio.Task[None]]] = {}

    def run(self, key: str, spec: Probe, on_result: ResultListener) -> None:
        current = self._loops.get(key)
        if current is not None and current[0] == spec and not current[1].done():
            return
        self.remove(key)
        task = self._group.spawn(self._loop(spec, on_result), f"check {key}")
        self._loops[key] = (spec, task)

    def remove(self, key: str) -> None:
        current = self._loops.pop(key, None)
        if current is not None:
            current[1].cancel()

    def running(self) -> frozenset[str]:
        return frozenset(self._loops)

    async def close(self) -> None:
        self._loops.clear()
        await self._group.close()

    @staticmethod
    async def _loop(spec: Probe, on_result: ResultListener) -> None:
        while True:
            health, output = await probe(spec)
            on_result(health, output)
            await asyncio.sleep(spec.interval)


__all__ = ["CheckLoops", "Probe", "ResultListener", "probe"]
