"""The ``NetworkPolicy`` kind: which traffic may reach an app, or the machine itself.

Kubernetes habits: a policy *selects* the instances it protects (``spec.app``, or
``spec.labels`` like a ``podSelector``'s ``matchLabels``, optionally in one
``spec.environment``); once at least one policy selects an instance, every ingress to it is
denied except what some selecting policy's ``ingress`` rules allow (the union of them). A
rule allows ``from`` peers (an app by name, apps by labels, whole environments, CIDRs) on
``ports`` (named ports of the selected app; none: all of its ports). A policy with
``ingress: []`` denies everything.

The machine has its own policy in the same kind: ``spec.host: true``. One kind rather than
a separate ``HostPolicy`` because the rule grammar is the same (``from`` CIDRs or apps,
``ports``), users write and review both in the same ruleset, and ``socle plan`` shows both as
one firewall; what differs (ports are numbers: the machine has no named ports) is checked
here. A host policy guards only the ports it names ("admin ports only from given CIDRs", like
a pfSense rule set): other ports keep working, and loopback is always allowed so that a
policy cannot lock the local CLI out.

.. code-block:: yaml

    apiVersion: socle/v1
    kind: NetworkPolicy
    metadata: {name: api-from-web}
    spec:
      app: api
      ingress:
        - from: [{app: web}, {labels: {tier: frontend}}, {cidr: 10.20.0.0/16}]
          ports: [http]
    ---
    apiVersion: socle/v1
    kind: NetworkPolicy
    metadata: {name: admin}
    spec:
      host: true
      ingress:
        - from: [{cidr: 192.168.1.0/24}]
          ports: [22, 7780]

Every value that reaches the nftables ruleset is validated here (names, label keys, CIDRs,
port numbers); label *values* never reach it at all (the compiler resolves selectors to
addresses), so no manifest text can inject nft syntax.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator, model_validator

from socle.model.app import (
    NAME_RE,
    PORT_NAME_RE,
    FieldError,
    Metadata,
    Spec,
)
from socle.model.kinds import Reference

MAX_RULES = 64
MAX_PEERS = 256
MAX_PORTS = 64


def _check_name(value: str, what: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid {what} {value!r}: 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _labels(value: dict[str, str]) -> dict[str, str]:
    # Same rules as metadata.labels (keys and values), then non-empty.
    Metadata(name="x", labels=value)
    if not value:
        raise ValueError("labels must name at least one label (an empty selector selects all)")
    return value


class Peer(Spec):
    """Where traffic may come from: an app (by name and/or labels, optionally in one
    environment), a whole environment, or a CIDR."""

    app: str | None = None
    labels: dict[str, str] | None = None
    environment: str | None = None
    cidr: str | None = None

    @field_validator("app")
    @classmethod
    def _app(cls, value: str | None) -> str | None:
        return None if value is None else _check_name(value, "app name")

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str | None) -> str | None:
        return None if value is None else _check_name(value, "environment name")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else _labels(value)

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"invalid cidr {value!r}: {exc}") from None
        return str(network)

    @model_validator(mode="after")
    def _one_kind(self) -> Peer:
        workload = self.app is not None or self.labels is not None or self.environment is not None
        if self.cidr is not None and workload:
            raise ValueError("a peer is either a cidr or apps (app/labels/environment), not both")
        if self.cidr is None and not workload:
            raise ValueError("a peer needs one of app, labels, environment or cidr")
        return self


PortRef = str | int


class IngressRule(Spec):
    from_: list[Peer] | None = Field(default=None, alias="from", max_length=MAX_PEERS)
    """None: from anywhere; ``[]`` is refused (it would mean nothing, which is no rule)."""
    ports: list[PortRef] | None = Field(default=None, max_length=MAX_PORTS)
    """Named ports of the selected app (host policies: numbers); None: every port."""
    protocol: Literal["tcp", "udp"] = "tcp"

    @field_validator("from_")
    @classmethod
    def _from(cls, value: list[Peer] | None) -> list[Peer] | None:
        if value is not None and not value:
            raise ValueError("from: [] allows nothing; leave from out to allow any source")
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: list[PortRef] | None) -> list[PortRef] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("ports: [] allows nothing; leave ports out to allow every port")
        seen: set[PortRef] = set()
        for index, port in enumerate(value):
            if isinstance(port, bool):
                raise FieldError((index,), "a port is a name or a number")
            if isinstance(port, int):
                if not 1 <= port <= 65535:
                    raise FieldError((index,), f"port {port} is not between 1 and 65535")
            elif not PORT_NAME_RE.fullmatch(port):
                raise FieldError(
                    (index,),
                    f"invalid port name {port!r}: lowercase letter then letters, digits, '_'",
                )
            if port in seen:
                raise FieldError((index,), f"port {port!r} is listed twice")
            seen.add(port)
        return value


class NetworkPolicySpec(Spec):
    app: str | None = None
    """The app this policy protects (in every environment unless ``environment``)."""
    labels: dict[str, str] | None = None
    """Or: every app whose labels include all of these."""
    environment: str | None = None
    """Only the selected apps' instances in this environment."""
    host: bool = False
    """A policy for the machine itself (ports are numbers)."""
    ingress: list[IngressRule] = Field(max_length=MAX_RULES)
    """Allowed traffic; ``[]`` denies everything to what is selected."""

    @field_validator("app")
    @classmethod
    def _app(cls, value: str | None) -> str | None:
        return None if value is None else _check_name(value, "app name")

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str | None) -> str | None:
        return None if value is None else _check_name(value, "environment name")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else _labels(value)

    @model_validator(mode="after")
    def _selects(self) -> NetworkPolicySpec:
        if self.host:
            for field in ("app", "labels", "environment"):
                if getattr(self, field) is not None:
                    raise FieldError((field,), f"a host policy (host: true) takes no {field}")
            for r, rule in enumerate(self.ingress):
                if rule.ports is None:
                    raise FieldError(
                        ("ingress", r),
                        "a host policy rule needs ports (the admin ports it guards)",
                    )
                for p, port in enumerate(rule.ports):
                    if not isinstance(port, int):
                        raise FieldError(
                            ("ingress", r, "ports", p),
                            f"host policy ports are numbers, not {port!r}",
                        )
            return self
        if (self.app is None) == (self.labels is None):
            raise ValueError("a policy selects with exactly one of app, labels or host: true")
        for r, rule in enumerate(self.ingress):
            for p, port in enumerate(rule.ports or []):
                if isinstance(port, int):
                    raise FieldError(
                        ("ingress", r, "ports", p),
                        f"app ports are named (spec.ports of the app), not {port}: "
                        "instances get a new port number at every start",
                    )
        return self


class NetworkPolicy(Spec):
    api_version: Literal["socle/v1"]
    kind: Literal["NetworkPolicy"]
    metadata: Metadata
    spec: NetworkPolicySpec

    @property
    def name(self) -> str:
        return self.metadata.name


# -- readable rules (plans, status) -------------------------------------------------------


def _peer_text(peer: Peer) -> str:
    if peer.cidr is not None:
        return f"cidr {peer.cidr}"
    parts = []
    if peer.app is not None:
        parts.append(f"app {peer.app}")
    if peer.labels is not None:
        parts.append("labels " + ",".join(f"{k}={v}" for k, v in sorted(peer.labels.items())))
    if peer.environment is not None:
        parts.append(f"environment {peer.environment}")
    return " ".join(parts)


def _target_text(spec: NetworkPolicySpec) -> str:
    if spec.host:
        return "this machine"
    if spec.app is not None:
        what = f"app {spec.app}"
    else:
        labels = spec.labels or {}
        what = "apps labelled " + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return what + (f" in {spec.environment}" if spec.environment is not None else "")


def rule_text(spec: NetworkPolicySpec, rule: IngressRule) -> str:
    ports = (
        f"{rule.protocol} ports " + ", ".join(str(p) for p in rule.ports)
        if rule.ports is not None
        else "every port"
    )
    sources = ", ".join(_peer_text(p) for p in rule.from_) if rule.from_ is not None else "anywhere"
    return f"allow {ports} to {_target_text(spec)} from {sources}"


def describe(spec: NetworkPolicySpec) -> list[str]:
    """The policy as readable rules, in order, ending with what it denies (for plans)."""
    lines = [rule_text(spec, rule) for rule in spec.ingress]
    if spec.host:
        guarded = sorted({p for r in spec.ingress for p in (r.ports or []) if isinstance(p, int)})
        lines.append(
            "deny other sources to this machine's ports " + ", ".join(map(str, guarded))
            if guarded
            else "guards no port"
        )
    else:
        lines.append(f"deny other ingress to {_target_text(spec)}")
    return lines


def networkpolicy_references(policy: NetworkPolicy) -> list[Reference]:
    """Apps named by ``spec.app`` and ``from[].app``: a misspelt app is refused at validate
    (file:line), rather than silently selecting nothing."""
    refs: list[Reference] = []
    spec = policy.spec
    if spec.app is not None:
        refs.append(Reference(("spec", "app"), "App", spec.app, field="app"))
    for r, rule in enumerate(spec.ingress):
        for p, peer in enumerate(rule.from_ or []):
            if peer.app is not None:
                path = ("spec", "ingress", r, "from", p, "app")
                refs.append(Reference(path, "App", peer.app, field="app"))
    return refs


__all__ = [
    "IngressRule",
    "NetworkPolicy",
    "NetworkPolicySpec",
    "Peer",
    "describe",
    "networkpolicy_references",
    "rule_text",
]
