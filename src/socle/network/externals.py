"""ExternalService objects in the service registry (the engine's ``ExternalSink``).

Each address of an external service is one registry entry (source ``external``) with the
service's named ports and labels, id ``NAME-ext-N`` (N: the address's position). Without a
health check the entries are passing; with one, each address is probed on its own
(:mod:`socle.network.checks`) and starts ``critical`` until its first probe passes, so
traffic never goes to an address nobody has seen answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from socle.network.checks import CheckLoops, Probe
from socle.network.registry import Health, ServiceInstance, ServiceRegistry, Source
from socle.units import parse_duration


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _probe(address: str, spec: Mapping[str, Any]) -> Probe | None:
    health = spec.get("health")
    if not health:
        return None
    ports = {p["name"]: int(p["port"]) for p in spec.get("ports", [])}
    interval = parse_duration(health.get("interval", 10.0))  # the manifest's own words
    timeout = parse_duration(health.get("timeout", 2.0))
    if health.get("http"):
        http = health["http"]
        scheme = http.get("scheme", "http")
        url = f"{scheme}://{_url_host(address)}:{ports[http['port']]}{http.get('path', '/')}"
        return Probe(http=url, interval=interval, timeout=timeout)
    tcp = health["tcp"]
    return Probe(
        tcp=f"{_url_host(address)}:{ports[tcp['port']]}", interval=interval, timeout=timeout
    )


class ExternalFeeder:
    """Registers external services' addresses and runs their checks."""

    def __init__(self, registry: ServiceRegistry, checks: CheckLoops) -> None:
        self._registry = registry
        self._checks = checks
        self._ids: dict[tuple[str, str], list[str]] = {}
        """(name, environment) -> the registry ids of its addresses."""

    def set(self, name: str, environment: str, spec: Mapping[str, Any] | None) -> None:
        key = (name, environment)
        old = self._ids.pop(key, [])
        for iid in old:
            self._checks.remove(f"external/{iid}")
        if spec is None:
            for iid in old:
                self._registry.remove(iid)
            return
        ports = {p["name"]: int(p["port"]) for p in spec.get("ports", [])}
        labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
        ids: list[str] = []
        for position, address in enumerate(spec["addresses"]):
            iid = (
                f"{name}-ext-{position}"
                if environment == "default"
                else (f"{name}-{environment}-ext-{position}")
            )
            ids.append(iid)
            probe = _probe(address, spec)
            known = self._registry.get(iid)
            first = Health.PASSING if probe is None else Health.CRITICAL
            if known is not None and probe is not None and known.address == address:
                first = known.health  # an update keeps the last result until the next probe
            entry = ServiceInstance(
                service=name,
                environment=environment,
                id=iid,
                address=address,
                ports=ports,
                labels=labels,
                health=first,
                source=Source.EXTERNAL,
                since=time.time(),
                output="" if probe is None else "not checked yet",
            )
            self._registry.upsert(entry)
            if probe is not None:
                self._checks.run(f"external/{iid}", probe, self._updater(entry))
        for iid in set(old) - set(ids):
            self._registry.remove(iid)
        self._ids[key] = ids

    def _updater(self, entry: ServiceInstance) -> Any:
        def on_result(health: Health, output: str) -> None:
            current = self._registry.get(entry.id)
            if current is None or current.source is not Source.EXTERNAL:
                return
            if current.health is not health or current.output != output:
                since = time.time() if current.health is not health else current.since
                self._registry.upsert(
                    ServiceInstance(
                        service=current.service,
                        environment=current.environment,
                        id=current.id,
                        address=current.address,
                        ports=current.ports,
                        labels=current.labels,
                        health=health,
                        source=Source.EXTERNAL,
                        since=since,
                        output=output,
                    )
                )

        return on_result

    def health(self, name: str, environment: str) -> tuple[int, int]:
        ids = self._ids.get((name, environment), [])
        entries = [self._registry.get(i) for i in ids]
        return sum(1 for e in entries if e is not None and e.healthy), len(ids)


__all__ = ["ExternalFeeder"]
