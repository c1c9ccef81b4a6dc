"""The ``ExternalService`` kind: something Socle does not run, registered like an app.

A legacy database, an appliance, a SaaS endpoint: its ``addresses`` (IPs or host names) and
named ``ports`` enter the service registry, so it gets a DNS name
(``NAME.ENV.socle.internal``, SRV per port), catalog entries in the Consul API and, later,
routes and firewall rules, like an app. With ``health``, Socle probes each address (HTTP or
TCP) and only passing ones are served; without, they are always passing.

.. code-block:: yaml

    apiVersion: socle/v1
    kind: ExternalService
    metadata: {name: legacy-db}
    spec:
      addresses: [10.0.0.5, db1.example.com]
      ports: [{name: pg, port: 5432}]
      health: {tcp: {port: pg}, interval: 10s, timeout: 2s}
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from socle.model.app import PORT_NAME_RE, FieldError, HttpCheck, Metadata, Spec, TcpCheck
from socle.units import Duration

HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
MAX_ADDRESSES = 64
MIN_INTERVAL = 1.0


class ExternalPort(Spec):
    name: str
    port: int = Field(ge=1, le=65535)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PORT_NAME_RE.fullmatch(value):
            raise ValueError(
                f"invalid port name {value!r}: lowercase letter then letters, digits, '_'"
            )
        return value


class ExternalHttpCheck(HttpCheck):
    scheme: Literal["http", "https"] = "http"


class ExternalHealth(Spec):
    """A probe Socle runs against every address (passing: 2xx, or the port accepts)."""

    http: ExternalHttpCheck | None = None
    tcp: TcpCheck | None = None
    interval: Duration = 10.0
    timeout: Duration = 2.0

    @model_validator(mode="after")
    def _one_probe(self) -> ExternalHealth:
        if (self.http is None) == (self.tcp is None):
            raise ValueError("health needs exactly one of http or tcp")
        if self.interval < MIN_INTERVAL:
            raise FieldError(("interval",), "health interval must be at least 1s")
        if self.timeout > self.interval:
            raise FieldError(("timeout",), "health timeout cannot be longer than the interval")
        return self


def check_address(value: str) -> str:
    """An IP address or a DNS host name; ValueError naming it otherwise."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not HOSTNAME_RE.fullmatch(value):
            raise ValueError(
                f"invalid address {value!r}: an IPv4/IPv6 address or a DNS host name"
            ) from None
    return value


class ExternalServiceSpec(Spec):
    addresses: list[str] = Field(min_length=1, max_length=MAX_ADDRESSES)
    ports: list[ExternalPort] = Field(default_factory=list, max_length=32)
    health: ExternalHealth | None = None

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, value in enumerate(values):
            try:
                check_address(value)
            except ValueError as exc:
                raise FieldError((index,), str(exc)) from None
            if value.lower() in seen:
                raise FieldError((index,), f"address {value!r} is listed twice")
            seen.add(value.lower())
        return values

    @model_validator(mode="after")
    def _ports(self) -> ExternalServiceSpec:
        names: set[str] = set()
        for index, port in enumerate(self.ports):
            if port.name in names:
                raise FieldError(("ports", index, "name"), f"duplicate port name {port.name!r}")
            names.add(port.name)
        if self.health is not None:
            probe = self.health.http or self.health.tcp
            assert probe is not None
            if probe.port not in names:
                which = "http" if self.health.http is not None else "tcp"
                raise FieldError(
                    ("health", which, "port"),
                    f"health check port {probe.port!r} is not one of spec.ports "
                    f"({', '.join(sorted(names)) or 'none declared'})",
                )
        return self


class ExternalService(Spec):
    api_version: Literal["socle/v1"]
    kind: Literal["ExternalService"]
    metadata: Metadata
    spec: ExternalServiceSpec

    @property
    def name(self) -> str:
        return self.metadata.name
