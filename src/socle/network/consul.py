"""The registry in Consul's words: catalog, health and agent JSON shapes.

Socle is one Consul "node" (this host) in datacenter ``dc1``. Each registered instance is
one Consul service instance per named port (an instance with two ports is two catalog
entries, ``ID-PORTNAME``; with one port or none, its ID as is), so that Prometheus's
``consul_sd_configs`` and other clients get one ``Address:Port`` target per entry. The
Socle environment, instance, port name and labels are tags (``env=ENV``, ``port=NAME``,
``KEY=VALUE``) and ``ServiceMeta`` entries, so clients can filter on them.

Pure functions of registry entries: the HTTP side lives in :mod:`socle.api.consul`.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

from socle.network.registry import Health, ServiceInstance, Source

DATACENTER = "dc1"


@dataclass(frozen=True)
class Node:
    """This host as a Consul node."""

    name: str
    address: str = "127.0.0.1"
    datacenter: str = DATACENTER

    @property
    def id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.name}.socle"))

    def to_consul(self, index: int) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Node": self.name,
            "Address": self.address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": {"lan": self.address, "wan": self.address},
            "Meta": {"socle": "true"},
            "CreateIndex": index,
            "ModifyIndex": index,
        }


def local_node() -> Node:
    return Node(name=os.uname().nodename or "socle")


@dataclass(frozen=True)
class ConsulService:
    """One Consul service instance: one registry entry and one of its ports."""

    entry: ServiceInstance
    port_name: str | None
    port: int

    @property
    def id(self) -> str:
        if self.port_name is None or len(self.entry.ports) <= 1:
            return self.entry.id
        return f"{self.entry.id}-{self.port_name}"

    @property
    def tags(self) -> list[str]:
        e = self.entry
        tags = [f"env={e.environment}"]
        if self.port_name is not None and e.source is not Source.AGENT:
            tags.append(f"port={self.port_name}")
        tags += [f"{k}={v}" for k, v in sorted(e.labels.items())]
        tags += [t for t in e.tags if t not in tags]
        return tags

    @property
    def meta(self) -> dict[str, str]:
        e = self.entry
        # What a registration says comes first, what Socle knows last: an agent
        # registration cannot claim ``source=runtime`` (pass for an app Socle runs).
        meta = {
            **dict(e.meta),
            **{k: v for k, v in e.labels.items()},
            "environment": e.environment,
            "instance": e.id,
            "source": e.source.value,
        }
        if self.port_name is not None:
            meta["port_name"] = self.port_name
        return meta

    def service_json(self, index: int) -> dict[str, Any]:
        """The ``Service`` object of ``/v1/health/service`` (and ``/v1/agent/services``)."""
        e = self.entry
        return {
            "ID": self.id,
            "Service": e.service,
            "Tags": self.tags,
            "Address": e.address,
            "TaggedAddresses": {
                "lan_ipv4": {"Address": e.address, "Port": self.port},
                "wan_ipv4": {"Address": e.address, "Port": self.port},
            },
            "Meta": self.meta,
            "Port": self.port,
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "PeerName": "",
            "CreateIndex": index,
            "ModifyIndex": index,
        }

    def catalog_json(self, node: Node, index: int) -> dict[str, Any]:
        """One row of ``/v1/catalog/service/NAME``."""
        e = self.entry
        return {
            "ID": node.id,
            "Node": node.name,
            "Address": node.address,
            "Datacenter": node.datacenter,
            "TaggedAddresses": {"lan": node.address, "wan": node.address},
            "NodeMeta": {"socle": "true"},
            "ServiceKind": "",
            "ServiceID": self.id,
            "ServiceName": e.service,
            "ServiceTags": self.tags,
            "ServiceAddress": e.address,
            "ServiceTaggedAddresses": {
                "lan_ipv4": {"Address": e.address, "Port": self.port},
                "wan_ipv4": {"Address": e.address, "Port": self.port},
            },
            "ServiceWeights": {"Passing": 1, "Warning": 1},
            "ServiceMeta": self.meta,
            "ServicePort": self.port,
            "ServiceEnableTagOverride": False,
            "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
            "ServiceConnect": {},
            "CreateIndex": index,
            "ModifyIndex": index,
        }

    def checks_json(self, node: Node, index: int) -> list[dict[str, Any]]:
        """The node's check and the service's own, as ``/v1/health/service`` lists them."""
        e = self.entry
        base = {
            "Node": node.name,
            "Notes": "",
            "Type": "",
            "Definition": {},
            "CreateIndex": index,
            "ModifyIndex": index,
        }
        return [
            {
                **base,
                "CheckID": "serfHealth",
                "Name": "Serf Health Status",
                "Status": Health.PASSING.value,
                "Output": "Agent alive and reachable",
                "ServiceID": "",
                "ServiceName": "",
                "ServiceTags": [],
            },
            {
                **base,
                "CheckID": f"service:{self.id}",
                "Name": f"Service '{e.service}' check",
                "Status": e.health.value,
                "Output": e.output or ("ready" if e.healthy else ""),
                "ServiceID": self.id,
                "ServiceName": e.service,
                "ServiceTags": self.tags,
                "Type": "socle",
            },
        ]

    def health_json(self, node: Node, index: int) -> dict[str, Any]:
        return {
            "Node": node.to_consul(index),
            "Service": self.service_json(index),
            "Checks": self.checks_json(node, index),
        }


def consul_services(entries: list[ServiceInstance]) -> list[ConsulService]:
    """Consul service instances of ``entries``: one per named port, ports in name order."""
    out: list[ConsulService] = []
    for entry in entries:
        if not entry.ports:
            out.append(ConsulService(entry, None, 0))
            continue
        for name, port in sorted(entry.ports.items()):
            out.append(ConsulService(entry, name, port))
    return out


def matches_tags(service: ConsulService, tags: list[str]) -> bool:
    """Consul's ``?tag=`` filter: every tag asked for is on the service."""
    have = set(service.tags)
    return all(t in have for t in tags)


def catalog_services(entries: list[ServiceInstance]) -> dict[str, list[str]]:
    """``/v1/catalog/services``: service name to the union of its tags, sorted."""
    out: dict[str, set[str]] = {}
    for service in consul_services(entries):
        out.setdefault(service.entry.service, set()).update(service.tags)
    return {name: sorted(tags) for name, tags in sorted(out.items())}


__all__ = [
    "DATACENTER",
    "ConsulService",
    "Node",
    "catalog_services",
    "consul_services",
    "local_node",
    "matches_tags",
]
