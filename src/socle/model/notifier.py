"""The ``Notifier`` kind: a webhook that GitOps events are posted to (sync started /
succeeded / failed, drift detected / corrected, rollback, promotion waiting for approval,
approval given) and alerts (firing, resolved: Alertmanager calls Socle back, see
:mod:`socle.observe.alerts.forward`), as plain JSON or Slack- / Teams-compatible bodies.

Like ``Source``, a notifier never carries a credential: ``secret`` is a secrets-engine
path whose ``secret`` key signs each body (HMAC-SHA256 in ``X-Socle-Signature-256``).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from socle.model.app import NAME_RE, Metadata, Spec, no_controls
from socle.model.source import SECRET_PATH_RE, check_env

EVENTS = (
    "sync started",
    "sync succeeded",
    "sync failed",
    "drift detected",
    "drift corrected",
    "rollback",
    "promotion waiting for approval",
    "approval given",
    "alert firing",
    "alert resolved",
)
"""The events a notifier can subscribe to (the issue's words)."""

ALERT_EVENTS = ("alert firing", "alert resolved")
SEVERITIES = ("info", "warning", "critical")
"""An alert's ``severity`` label, as AlertRules and the built-in rules set it."""


METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("100.100.100.200", "fd00:ec2::254", "fd20:ce::254")
)
"""Cloud metadata services outside the link-local ranges (Alibaba, AWS and GCP over IPv6)."""
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not be posted to ``address`` (None: it may).

    Link-local addresses (where cloud metadata services answer), multicast and the
    unspecified address, also written inside IPv6 (``::ffff:169.254.169.254``, NAT64's
    ``64:ff9b::a9fe:a9fe``, 6to4's ``2002:a9fe:a9fe::``).
    Loopback and private addresses stay allowed: in-house receivers live there.
    """
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4 inside IPv6: mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4.
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        elif address.sixtofour is not None:
            address = address.sixtofour
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        return f"{address} is link-local/multicast/unspecified"
    return None


def check_url(value: str) -> str:
    """An ``http(s)://host[:port]/path`` URL without credentials, controls or spaces, and
    never a link-local address (cloud metadata services live there), however written:
    the legacy IPv4 forms ``getaddrinfo`` still accepts (``2852039166``, ``0xa9.254.0.1``,
    ``0251.0376.0251.0376``) are refused outright. Names are checked again at every
    delivery, once resolved (:func:`socle.gitops.notify.resolve`)."""
    no_controls(value)
    if len(value) > 2048 or any(c.isspace() for c in value):
        raise ValueError("invalid webhook URL: at most 2048 characters, no spaces")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid webhook URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("invalid webhook URL: http:// or https:// and a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "the webhook URL must not hold credentials: put an HMAC key in `secret` instead"
        )
    if port == 0:
        raise ValueError("invalid webhook URL: port 0")
    host = parts.hostname.rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            socket.inet_aton(host)
        except OSError:
            return value  # a name: checked once resolved, at each delivery
        raise ValueError(
            f"invalid webhook URL: write the IPv4 address {host!r} as four decimal numbers"
        ) from None
    why = forbidden_address(address)
    if why is not None:
        raise ValueError(f"the webhook URL may not point there: {why}")
    return value


class AlertFilter(Spec):
    """Which alerts a notifier receives (every alert when a field is unset)."""

    severity: list[Literal["info", "warning", "critical"]] | None = Field(
        default=None, min_length=1
    )
    """Only alerts whose ``severity`` label is one of these."""
    app: list[str] | None = Field(default=None, min_length=1, max_length=100)
    """Only alerts whose ``app`` label is one of these (alerts about no app never match)."""

    @field_validator("app")
    @classmethod
    def _apps(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for name in value:
            if not NAME_RE.fullmatch(name):
                raise ValueError(f"invalid app name {name!r}")
        return sorted(set(value))

    @field_validator("severity")
    @classmethod
    def _severities(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else sorted(set(value), key=SEVERITIES.index)

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether an alert with ``labels`` passes this filter."""
        if self.severity is not None and labels.get("severity") not in self.severity:
            return False
        return self.app is None or labels.get("app") in self.app


class NotifierSpec(Spec):
    url: str = Field(min_length=1)
    format: Literal["json", "slack", "teams"] = "json"
    events: list[str] = Field(default_factory=lambda: list(EVENTS), min_length=1)
    env: str | None = None
    """Only events of this environment (all environments when unset)."""
    secret: str | None = None
    """Secrets-engine path whose ``secret`` key signs each body (HMAC-SHA256)."""
    alerts: AlertFilter | None = None
    """Which alerts (events ``alert firing`` / ``alert resolved``) to receive: by
    ``severity`` and ``app`` labels; every alert when unset. ``env`` applies to alerts too
    (their ``env`` label)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e not in EVENTS]
        if unknown:
            raise ValueError(f"unknown event {unknown[0]!r} (known: {', '.join(EVENTS)})")
        return sorted(set(value), key=EVENTS.index)

    @field_validator("env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        return None if value is None else check_env(value)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and (not SECRET_PATH_RE.fullmatch(value) or ".." in value):
            raise ValueError(f"invalid secrets path {value!r}")
        return value


class Notifier(Spec):
    api_version: Literal["socle/v1"]
    kind: Literal["Notifier"]
    metadata: Metadata
    spec: NotifierSpec

    @property
    def name(self) -> str:
        return self.metadata.name
