"""The service registry: which instances of which service are up, and where.

Every instance the runtime reports ready (it passed its health check) is registered with its
app, environment, instance id, address, named ports and labels; it leaves the registry as
soon as it is no longer ready, stops or disappears. Things Socle does not run (an
``ExternalService``, a process registered through the Consul agent API) are registered by
their own feeders with a health that may be ``critical``; readers that route traffic ask
for healthy entries only.

The registry is in memory: the runtime is the truth for instances, the state store for
external and agent-registered services (their feeders reload them at start).

Readers have three ways to follow it, all cheap:

- :meth:`ServiceRegistry.endpoints` / :meth:`instances` / :meth:`services`: a snapshot;
- :meth:`ServiceRegistry.wait`: a blocking query (Consul style) -- return as soon as the
  index is past the one the caller saw, or after ``timeout`` seconds;
- :meth:`ServiceRegistry.subscribe`: a callback (on the event loop) after every change.

The index grows by one on every change that a reader can see and never goes back, across
restarts too: it starts from the wall clock in milliseconds, so a client that kept an index
from a previous control plane sees a larger one at once instead of waiting for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from socle.model.kinds import declared_name
from socle.runtime.driver import InstanceState, InstanceStatus
from socle.tasks import within

log = logging.getLogger("socle.network")

MAX_WAIT_SECONDS = 600.0
"""Longest blocking query (Consul's own bound is 10 minutes)."""

DEFAULT_ENVIRONMENT = "default"


class Health(StrEnum):
    """Consul's words for a check's result."""

    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"


class Source(StrEnum):
    """Who feeds an entry (and so who removes it)."""

    RUNTIME = "runtime"
    EXTERNAL = "external"
    AGENT = "agent"


@dataclass(frozen=True)
class ServiceInstance:
    """One registered instance of a service: an app's instance or an external address."""

    service: str
    """The app (or ExternalService, or agent-registered service) name."""
    environment: str
    id: str
    """Unique in the registry (the runtime's instance id for apps)."""
    address: str
    ports: Mapping[str, int]
    """Port name to number; an entry may have no port."""
    labels: Mapping[str, str] = field(default_factory=dict)
    health: Health = Health.PASSING
    source: Source = Source.RUNTIME
    since: float = 0.0
    """When the entry got its current health (wall clock)."""
    tags: tuple[str, ...] = ()
    """Extra Consul tags (agent-registered services)."""
    meta: Mapping[str, str] = field(default_factory=dict)
    """Extra Consul ``ServiceMeta`` (agent-registered services)."""
    output: str = ""
    """The last health check's output (why it is critical)."""

    @property
    def healthy(self) -> bool:
        return self.health is Health.PASSING

    def endpoint(self, port_name: str) -> Endpoint | None:
        port = self.ports.get(port_name)
        if port is None:
            return None
        return Endpoint(
            service=self.service,
            environment=self.environment,
            instance=self.id,
            address=self.address,
            port_name=port_name,
            port=port,
            healthy=self.healthy,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "service": self.service,
            "environment": self.environment,
            "instance": self.id,
            "address": self.address,
            "ports": dict(self.ports),
            "labels": dict(self.labels),
            "health": self.health.value,
            "source": self.source.value,
            "since": self.since,
            "output": self.output,
        }


@dataclass(frozen=True)
class Endpoint:
    """Where to send traffic for one named port of one instance."""

    service: str
    environment: str
    instance: str
    address: str
    port_name: str
    port: int
    healthy: bool = True


ChangeListener = Callable[[int], None]
"""Called with the new index after each change."""


class InstanceSource(Protocol):
    """What the registry needs of a runtime driver (a subset of ``RuntimeDriver``)."""

    def instances(self) -> list[InstanceStatus]: ...

    def subscribe(self, listener: Callable[[InstanceStatus], None]) -> None: ...


def _from_status(status: InstanceStatus, now: float) -> ServiceInstance | None:
    """The registry entry of a runtime instance, or None when it must not be registered."""
    if not status.ready or status.state is not InstanceState.RUNNING:
        return None
    environment = status.environment or DEFAULT_ENVIRONMENT
    return ServiceInstance(
        # An app's copy in a second environment runs as ``api--prod``: DNS says api.prod.
        service=declared_name(status.app, environment),
        environment=environment,
        id=str(status.id),
        address=status.address or "127.0.0.1",
        ports=dict(status.ports),
        labels=dict(status.labels),
        health=Health.PASSING,
        source=Source.RUNTIME,
        since=status.ready_since or now,
    )


def _same(a: ServiceInstance, b: ServiceInstance) -> bool:
    """Equal but for ``since`` (a re-report of the same thing is no change)."""
    return (
        a.service == b.service
        and a.environment == b.environment
        and a.address == b.address
        and dict(a.ports) == dict(b.ports)
        and dict(a.labels) == dict(b.labels)
        and a.health is b.health
        and a.source is b.source
        and a.tags == b.tags
        and dict(a.meta) == dict(b.meta)
        and a.output == b.output
    )


class ChangeIndex:
    """An index that only grows (from the wall clock in ms, so across restarts too) and a
    way to wait for it to pass a value: what Consul-style blocking queries need."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._value = max(1, int(clock() * 1000))
        self._changed = asyncio.Event()

    @property
    def value(self) -> int:
        return self._value

    def peek(self) -> int:
        """The value the next :meth:`advance` will give (at least)."""
        return max(self._value + 1, int(self._clock() * 1000))

    def advance(self, at_least: int = 0) -> int:
        """Move on (to ``at_least`` if larger) and wake every waiter."""
        self._value = max(self.peek(), at_least)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self._value

    async def wait(self, index: int, timeout: float) -> int:
        """Block until the value is past ``index`` or ``timeout`` seconds passed (bounded
        by :data:`MAX_WAIT_SECONDS`); the value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout, 0.0), MAX_WAIT_SECONDS)
        while self._value <= index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await within(self._changed.wait(), remaining)
        return self._value


class ServiceRegistry:
    """Registered service instances, an index, blocking queries and change callbacks.

    Not thread-safe: call it on the event loop (the runtime's listeners run there).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._entries: dict[str, ServiceInstance] = {}
        self._by_service: dict[tuple[str, str], dict[str, ServiceInstance]] = {}
        """The same entries by (service, environment): DNS and ingress lookups stay cheap
        however many services there are."""
        self._changes = ChangeIndex(clock=clock)
        self._listeners: list[ChangeListener] = []

    # -- reading ------------------------------------------------------------------------

    @property
    def index(self) -> int:
        """Grows on every visible change; never goes back."""
        return self._changes.value

    def instances(
        self,
        service: str | None = None,
        environment: str | None = None,
        *,
        healthy_only: bool = False,
    ) -> list[ServiceInstance]:
        """Entries (sorted by service, environment, id), filtered as asked."""
        if service is not None and environment is not None:
            group = self._by_service.get((service, environment), {})
            return [group[k] for k in sorted(group) if not healthy_only or group[k].healthy]
        out = [
            e
            for e in self._entries.values()
            if (service is None or e.service == service)
            and (environment is None or e.environment == environment)
            and (not healthy_only or e.healthy)
        ]
        out.sort(key=lambda e: (e.service, e.environment, e.id))
        return out

    def get(self, instance_id: str) -> ServiceInstance | None:
        return self._entries.get(instance_id)

    def endpoints(self, service: str, environment: str, port_name: str) -> list[Endpoint]:
        """Healthy endpoints of one named port of one service in one environment.

        What an ingress upstream or a DNS SRV answer lists; sorted by instance id.
        """
        out: list[Endpoint] = []
        for entry in self.instances(service, environment, healthy_only=True):
            endpoint = entry.endpoint(port_name)
            if endpoint is not None:
                out.append(endpoint)
        return out

    def services(self) -> dict[tuple[str, str], list[ServiceInstance]]:
        """Every (service, environment) with its entries, healthy or not."""
        grouped: dict[tuple[str, str], list[ServiceInstance]] = {}
        for entry in self.instances():
            grouped.setdefault((entry.service, entry.environment), []).append(entry)
        return grouped

    async def wait(self, index: int, timeout: float) -> int:
        """Block until the index is past ``index`` or ``timeout`` seconds passed; the index.

        ``index`` 0 (or one the registry is already past) returns at once. ``timeout`` is
        bounded by :data:`MAX_WAIT_SECONDS`.
        """
        return await self._changes.wait(index, timeout)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(index)`` after every change; returns a function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    # -- writing (feeders) --------------------------------------------------------------

    def _set(self, entry: ServiceInstance) -> None:
        old = self._entries.get(entry.id)
        if old is not None:
            self._unset(entry.id)
        self._entries[entry.id] = entry
        self._by_service.setdefault((entry.service, entry.environment), {})[entry.id] = entry

    def _unset(self, instance_id: str) -> ServiceInstance | None:
        old = self._entries.pop(instance_id, None)
        if old is not None:
            key = (old.service, old.environment)
            group = self._by_service.get(key)
            if group is not None:
                group.pop(instance_id, None)
                if not group:
                    del self._by_service[key]
        return old

    def bump(self) -> int:
        """Advance the index and tell the waiters and listeners (after each change)."""
        index = self._changes.advance()
        for listener in list(self._listeners):
            try:
                listener(index)
            except Exception:
                log.exception("service registry listener failed")
        return index

    def upsert(self, entry: ServiceInstance) -> bool:
        """Register or update ``entry``; True (and a new index) when anything changed."""
        known = self._entries.get(entry.id)
        if known is not None and _same(known, entry):
            return False
        self._set(entry)
        self.bump()
        return True

    def remove(self, instance_id: str) -> bool:
        """Deregister; True (and a new index) when it was registered."""
        if self._unset(instance_id) is None:
            return False
        self.bump()
        return True

    def replace(self, source: Source, entries: Iterable[ServiceInstance]) -> bool:
        """Make ``source``'s entries exactly ``entries`` (one index step for all changes)."""
        wanted = {e.id: e for e in entries}
        changed = False
        for iid, known in list(self._entries.items()):
            if known.source is source and iid not in wanted:
                self._unset(iid)
                changed = True
        for iid, entry in wanted.items():
            old = self._entries.get(iid)
            if old is None or not _same(old, entry):
                self._set(entry)
                changed = True
        if changed:
            self.bump()
        return changed

    # -- the runtime feed ---------------------------------------------------------------

    def attach(self, runtime: InstanceSource) -> None:
        """Follow ``runtime``: register its ready instances now and on every change."""
        runtime.subscribe(self._on_status)
        self.sync(runtime)

    def sync(self, runtime: InstanceSource) -> bool:
        """Align the runtime's entries with ``runtime.instances()`` (catches instances that
        were forgotten without a last status, e.g. a stopped one)."""
        now = self._clock()
        entries = [e for s in runtime.instances() if (e := _from_status(s, now)) is not None]
        return self.replace(Source.RUNTIME, entries)

    def _on_status(self, status: InstanceStatus) -> None:
        entry = _from_status(status, self._clock())
        if entry is None:
            known = self._entries.get(str(status.id))
            if known is not None and known.source is Source.RUNTIME:
                self.remove(str(status.id))
        else:
            self.upsert(entry)


__all__ = [
    "DEFAULT_ENVIRONMENT",
    "MAX_WAIT_SECONDS",
    "ChangeIndex",
    "ChangeListener",
    "Endpoint",
    "Health",
    "InstanceSource",
    "ServiceInstance",
    "ServiceRegistry",
    "Source",
]
