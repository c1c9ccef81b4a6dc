"""Where the ingress learns which instances may receive traffic: one tiny interface.

:class:`EndpointSource` is all the ingress asks: a snapshot of healthy endpoints and a
change notification. :class:`RegistryEndpoints` reads the service registry (healthy
entries only: apps' ready instances, ExternalServices whose check passes);
:class:`RuntimeEndpoints` reads the runtime driver directly (ready instances only), for a
control plane without a registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from socle.network.registry import ServiceRegistry
from socle.runtime.driver import InstanceStatus, RuntimeDriver


@dataclass(frozen=True)
class Endpoint:
    """One healthy instance of an app (or an ExternalService address)."""

    app: str
    instance: str
    address: str
    ports: Mapping[str, int]
    environment: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)


class EndpointSource(Protocol):
    def endpoints(self) -> list[Endpoint]:
        """Every endpoint that may receive traffic now (healthy only)."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the event loop) after any change of :meth:`endpoints`."""
        ...


class RuntimeEndpoints:
    """Ready instances of the runtime driver, as endpoints."""

    def __init__(self, driver: RuntimeDriver) -> None:
        self._driver = driver

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(i.app, i.id, i.address, dict(i.ports), i.environment, dict(i.labels))
            for i in self._driver.instances()
            if i.ready and i.address
        ]

    def subscribe(self, listener: Callable[[], None]) -> None:
        def on_status(_: InstanceStatus) -> None:
            listener()

        self._driver.subscribe(on_status)


class RegistryEndpoints:
    """Healthy entries of the service registry, as endpoints."""

    def __init__(self, registry: ServiceRegistry) -> None:
        self._registry = registry

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(e.service, e.id, e.address, dict(e.ports), e.environment, dict(e.labels))
            for e in self._registry.instances(healthy_only=True)
            if e.address
        ]

    def subscribe(self, listener: Callable[[], None]) -> None:
        def on_change(_: int) -> None:
            listener()

        self._registry.subscribe(on_change)
