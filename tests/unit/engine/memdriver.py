"""An in-memory RuntimeDriver: a small real implementation of our own interface, for
testing the controller's decisions without processes. Instances become ready only when a
test says so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from socle.runtime.driver import (
    InstanceId,
    InstanceSpec,
    InstanceState,
    InstanceStatus,
    Isolation,
    LogLine,
    StatusListener,
)


class MemDriver:
    name = "memory"

    def __init__(self) -> None:
        self.live: dict[InstanceId, InstanceStatus] = {}
        self.specs: dict[InstanceId, InstanceSpec] = {}
        self.started: list[InstanceId] = []
        self.stopped: list[InstanceId] = []
        self.journal: list[tuple[str, InstanceId]] = []
        self.errors: dict[str, Exception] = {}
        """Per app: what ``run()`` raises for it (a refused spec, a transient fault)."""
        self._listeners: list[StatusListener] = []

    async def start(self) -> None:
        return None

    async def close(self, *, stop_instances: bool) -> None:
        if stop_instances:
            self.live.clear()

    async def run(self, spec: InstanceSpec) -> InstanceStatus:
        if spec.app in self.errors:
            raise self.errors[spec.app]
        self.specs[spec.id] = spec
        if spec.id in self.live:
            return self.live[spec.id]
        status = InstanceStatus(
            id=spec.id,
            app=spec.app,
            release=spec.release,
            ordinal=spec.ordinal,
            state=InstanceState.STARTING,
            ready=False,
            pid=1000 + len(self.started),
            address="127.0.0.1",
            ports={},
            restarts=0,
            started_at=time.time(),
            ready_since=None,
            last_exit_code=None,
            isolation="none",
            environment=spec.environment,
            labels=dict(spec.labels),
        )
        self.live[spec.id] = status
        self.started.append(spec.id)
        self.journal.append(("start", spec.id))
        return status

    async def stop(self, instance_id: InstanceId) -> None:
        await asyncio.sleep(0)
        status = self.live.pop(instance_id, None)
        if status is not None:
            self.stopped.append(instance_id)
            self.journal.append(("stop", instance_id))
            self._emit(status)

    def instances(self) -> list[InstanceStatus]:
        return list(self.live.values())

    def subscribe(self, listener: StatusListener) -> None:
        self._listeners.append(listener)

    async def logs(
        self, instance_id: InstanceId, *, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[LogLine]:
        for _ in ():
            yield _

    def isolation(self) -> Isolation:
        return Isolation("none", "in-memory test driver")

    # test controls
    def make_ready(self, instance_id: InstanceId) -> None:
        status = self.live[instance_id]
        status.ready = True
        status.state = InstanceState.RUNNING
        status.ready_since = time.time() - 3600
        self._emit(status)

    def set_state(self, instance_id: InstanceId, state: InstanceState, message: str) -> None:
        """What a real driver reports for a start failure or a crash loop."""
        status = self.live[instance_id]
        status.state, status.message, status.ready = state, message, False
        self._emit(status)

    def _emit(self, status: InstanceStatus) -> None:
        for listener in self._listeners:
            listener(status)
