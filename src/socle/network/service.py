"""The connect layer of one control plane: the registry and everything that feeds it.

:class:`NetworkService` owns the :class:`~socle.network.registry.ServiceRegistry`, follows
the runtime (statuses pushed by the driver, plus a slow re-sync that catches an instance
forgotten without a last status), and holds the Consul KV and agent-registered services
kept in the state store. The server wraps it in one component; the API, the Consul
listener and the DNS server read it.
"""

from __future__ import annotations

import asyncio
import logging

from socle.network.agent import AgentServices
from socle.network.checks import CheckLoops
from socle.network.externals import ExternalFeeder
from socle.network.kv import ConsulKV
from socle.network.registry import InstanceSource, ServiceRegistry
from socle.state.store import StateStore
from socle.tasks import TaskGroup, TaskMonitor

log = logging.getLogger("socle.network")

RESYNC_SECONDS = 2.0
"""How often the registry is checked against the runtime's list of instances. Statuses are
pushed at once; this only catches an instance that went away without a last word."""


class NetworkService:
    """The registry, fed by the runtime, external services and the Consul agent API."""

    def __init__(
        self,
        store: StateStore,
        runtime: InstanceSource,
        *,
        tasks: TaskMonitor | None = None,
        resync_seconds: float = RESYNC_SECONDS,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.registry = ServiceRegistry()
        self.checks = CheckLoops(tasks)
        self.kv = ConsulKV(store)
        self.agent = AgentServices(store, self.registry, self.checks)
        self.externals = ExternalFeeder(self.registry, self.checks)
        """The engine's ExternalService handler registers through this."""
        self._monitor = tasks or TaskMonitor()
        self._tasks: TaskGroup = self._monitor.group("network")
        self._resync_seconds = resync_seconds

    async def start(self) -> None:
        await self.agent.load()
        self.registry.attach(self.runtime)
        self._tasks.spawn(self._resync(), "resync")

    async def stop(self) -> None:
        await self._tasks.close()
        await self.checks.close()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self._resync_seconds)
            try:
                self.registry.sync(self.runtime)
            except Exception as exc:  # keep following; say it where status shows it
                self._monitor.report("network/resync", exc)


__all__ = ["RESYNC_SECONDS", "NetworkService"]
