"""Services registered through the Consul agent API: processes Socle does not run.

``PUT /v1/agent/service/register`` keeps the definition in the state store (so it survives
a restart) and registers it in the service registry with source ``agent``;
``PUT /v1/agent/service/deregister/ID`` removes both. A definition with an HTTP or TCP
check is checked by Socle (see :mod:`socle.network.checks`); without one it is passing,
as in Consul.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from socle.errors import ConfigError, NotFoundError
from socle.network.checks import CheckLoops, Probe
from socle.network.registry import (
    DEFAULT_ENVIRONMENT,
    Health,
    ServiceInstance,
    ServiceRegistry,
    Source,
)
from socle.state.store import StateStore

PREFIX = "network/agent/"

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAX_TAGS = 64
MAX_META = 64
MIN_CHECK_INTERVAL = 1.0
"""Shortest check interval (Consul's own minimum, which it also enforces by raising a
shorter one): ``"Interval": "0s"`` would otherwise spin a probe loop that never sleeps."""
MAX_SERVICES = 1000
"""Agent-registered services kept at most (each may run a check loop): a token holder
cannot grow the control plane without bound."""


@dataclass(frozen=True)
class AgentService:
    id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    check: Probe | None = None

    @property
    def environment(self) -> str:
        return self.meta.get("environment", DEFAULT_ENVIRONMENT)

    def entry(self, health: Health = Health.PASSING, output: str = "") -> ServiceInstance:
        return ServiceInstance(
            service=self.name,
            environment=self.environment,
            id=self.id,
            address=self.address,
            ports={"default": self.port} if self.port else {},
            health=health,
            source=Source.AGENT,
            since=time.time(),
            tags=self.tags,
            meta=dict(self.meta),
            output=output,
        )

    def to_json(self) -> dict[str, Any]:
        check = None
        if self.check is not None:
            check = {
                "http": self.check.http,
                "tcp": self.check.tcp,
                "interval": self.check.interval,
                "timeout": self.check.timeout,
            }
        return {
            "id": self.id,
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "check": check,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentService:
        check = data.get("check")
        return cls(
            id=data["id"],
            name=data["name"],
            address=data["address"],
            port=int(data["port"]),
            tags=tuple(data.get("tags") or ()),
            meta=dict(data.get("meta") or {}),
            check=None if not check else Probe(**check),
        )


def _duration(value: object, field_name: str) -> float:
    """A Go duration ("10s") as Consul takes it; the model's parser does the work."""
    from socle.units import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{field_name}: {exc}") from None


def _folded(data: Mapping[str, Any]) -> dict[str, Any]:
    """Keys as Consul reads them: case-insensitive, ``snake_case`` or ``CamelCase``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(key, str):
            folded = key.replace("_", "").lower()
            out[{"id": "ID", "http": "HTTP", "tcp": "TCP"}.get(folded, folded.title())] = value
    return out


def parse_registration(body: object, default_address: str = "127.0.0.1") -> AgentService:
    """A Consul ``agent/service/register`` body as an :class:`AgentService`, or ConfigError
    naming the field and why (nothing is registered)."""
    if not isinstance(body, dict):
        raise ConfigError("the body must be a JSON object (a Consul service definition)")
    body = _folded(body)
    name = body.get("Name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            "Name: required, letters, digits, '.', '-' or '_' (at most 63)",
            hint='e.g. {"Name": "legacy-db", "Port": 5432}',
        )
    sid = body.get("ID") or name
    if not isinstance(sid, str) or not _ID_RE.match(sid):
        raise ConfigError("ID: letters, digits, '.', ':', '-' or '_' (at most 128)")
    address = body.get("Address") or default_address
    if not isinstance(address, str) or len(address) > 253 or any(c.isspace() for c in address):
        raise ConfigError("Address: a host name or an IP address")
    port = body.get("Port", 0)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError("Port: an integer from 0 to 65535")
    tags = body.get("Tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ConfigError("Tags: a list of strings")
    if len(tags) > MAX_TAGS:
        raise ConfigError(f"Tags: at most {MAX_TAGS}")
    meta = body.get("Meta") or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise ConfigError("Meta: an object of string values")
    if len(meta) > MAX_META:
        raise ConfigError(f"Meta: at most {MAX_META} keys")
    checks = body.get("Checks") or ([body["Check"]] if body.get("Check") else [])
    if not isinstance(checks, list):
        raise ConfigError("Checks: a list of check definitions")
    check = None
    for item in checks[:1]:
        if not isinstance(item, dict):
            raise ConfigError("Check: an object")
        item = _folded(item)
        http, tcp = item.get("HTTP"), item.get("TCP")
        if http is None and tcp is None:
            continue  # TTL and script checks: not run by Socle (the service stays passing)
        if http is not None and not (
            isinstance(http, str) and http.startswith(("http://", "https://"))
        ):
            raise ConfigError("Check.HTTP: an http:// or https:// URL")
        if tcp is not None and (not isinstance(tcp, str) or ":" not in tcp):
            raise ConfigError("Check.TCP: HOST:PORT")
        interval = _duration(item.get("Interval", "10s"), "Check.Interval")
        timeout = _duration(item.get("Timeout", "5s"), "Check.Timeout")
        check = Probe(
            http=http,
            tcp=tcp,
            interval=max(interval, MIN_CHECK_INTERVAL),
            timeout=min(max(timeout, 0.001), max(interval, MIN_CHECK_INTERVAL)),
        )
    return AgentService(
        id=sid, name=name, address=address, port=port, tags=tuple(tags), meta=meta, check=check
    )


class AgentServices:
    """Agent-registered services: in the state store, mirrored into the registry."""

    def __init__(self, store: StateStore, registry: ServiceRegistry, checks: CheckLoops) -> None:
        self._store = store
        self._registry = registry
        self._checks = checks
        self.services: dict[str, AgentService] = {}

    def _follow(self, service: AgentService) -> None:
        """Run the service's check (if any); each result updates its registry entry."""
        if service.check is None:
            self._checks.remove(PREFIX + service.id)
            return

        def on_result(health: Health, output: str) -> None:
            if self.services.get(service.id) is not service:
                return
            known = self._registry.get(service.id)
            if known is not None and known.source is not Source.AGENT:
                # An app instance (or an ExternalService) took this ID since: a check
                # result must never replace what Socle itself registered.
                return
            self._registry.upsert(service.entry(health, output))

        self._checks.run(PREFIX + service.id, service.check, on_result)

    async def load(self) -> None:
        """Register what the store holds (at start)."""
        for record in await self._store.scan(PREFIX):
            service = AgentService.from_json(json.loads(record.value))
            self.services[service.id] = service
        self._registry.replace(
            Source.AGENT,
            [
                s.entry(Health.CRITICAL if s.check else Health.PASSING, "not checked yet")
                for s in self.services.values()
            ],
        )
        for service in self.services.values():
            self._follow(service)

    async def register(self, service: AgentService) -> None:
        known = self._registry.get(service.id)
        if known is not None and known.source is not Source.AGENT:
            raise ConfigError(
                f"service ID {service.id!r} is taken by a {known.source.value} entry",
                hint="pick another ID",
            )
        if service.id not in self.services and len(self.services) >= MAX_SERVICES:
            raise ConfigError(
                f"at most {MAX_SERVICES} services can be registered through the agent API",
                hint="deregister unused ones, or declare them as ExternalService manifests",
            )
        await self._store.put(PREFIX + service.id, json.dumps(service.to_json()).encode())
        self.services[service.id] = service
        health = Health.CRITICAL if service.check is not None else Health.PASSING
        previous = self._registry.get(service.id)
        if previous is not None and service.check is not None:
            health = previous.health  # keep the last result until the next check
        self._registry.upsert(service.entry(health))
        self._follow(service)

    async def deregister(self, service_id: str) -> None:
        if service_id not in self.services:
            raise NotFoundError(f"unknown service ID {service_id!r}")
        await self._store.delete(PREFIX + service_id)
        del self.services[service_id]
        self._checks.remove(PREFIX + service_id)
        self._registry.remove(service_id)


__all__ = ["PREFIX", "AgentService", "AgentServices", "Probe", "parse_registration"]
