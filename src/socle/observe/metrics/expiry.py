"""Gauges for what ends on a date: secrets-engine leases and ingress certificates.

Read at scrape time from what the secrets engine and the ingress already hold in memory
(nothing is read from storage, no secret value is touched); the built-in rules
(:mod:`socle.observe.alerts.rules`) alert on them:

- ``socle_secrets_leases{mount}``: leases the engine holds, per mount;
- ``socle_secrets_lease_final_expiry_timestamp_seconds{mount}``: the soonest time a lease of
  the mount ends *for good* -- it is not renewable, or its renewals already reached its max
  TTL -- so whoever uses it needs a new credential by then; no sample while every lease of
  the mount can still be renewed (``SocleSecretsLeaseEndingSoon``);
- ``socle_ingress_certificate_expiry_timestamp_seconds{route,host}``: ``notAfter`` of the
  certificate each TLS route serves (issued by the PKI engine, by ACME, or read from KV);
  the ingress renews them at two thirds of their life, so one close to its end means
  renewal is failing (``SocleIngressCertificateExpiringSoon``, ``...Expired``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from socle.observe.metrics.registry import ControlPlaneMetrics

LEASES = "socle_secrets_leases"
LEASE_FINAL = "socle_secrets_lease_final_expiry_timestamp_seconds"
INGRESS_CERT = "socle_ingress_certificate_expiry_timestamp_seconds"

LeaseSummary = Callable[[], Mapping[str, tuple[int, float | None]]]
"""Per mount path: (lease count, soonest final expiry or None)."""
RouteView = Callable[[], Iterable[Mapping[str, Any]]]
"""The ingress' routes as :meth:`socle.network.ingress.service.Ingress.view` lists them."""


def lease_gauges(metrics: ControlPlaneMetrics, summary: LeaseSummary | None) -> None:
    """Export (or, with None, stop exporting) the lease gauges from ``summary``."""
    if summary is None:
        metrics.gauge_source(LEASES, "", (), None)
        metrics.gauge_source(LEASE_FINAL, "", (), None)
        return
    metrics.gauge_source(
        LEASES,
        "Leases the secrets engine holds (dynamic credentials, PKI certificates...).",
        ("mount",),
        lambda: [((mount,), float(count)) for mount, (count, _) in sorted(summary().items())],
    )
    metrics.gauge_source(
        LEASE_FINAL,
        "Soonest time a lease of the mount ends for good (not renewable, or at its max TTL).",
        ("mount",),
        lambda: [
            ((mount,), final)
            for mount, (_, final) in sorted(summary().items())
            if final is not None
        ],
    )


def _timestamp(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def route_certificates(routes: Iterable[Mapping[str, Any]]) -> list[tuple[tuple[str, ...], float]]:
    """``((route, host), notAfter)`` of every route that serves a certificate."""
    samples: list[tuple[tuple[str, ...], float]] = []
    for route in routes:
        certificate = route.get("certificate")
        if not isinstance(certificate, Mapping):
            continue
        when = _timestamp(certificate.get("not_after"))
        if when is not None:
            samples.append(((str(route.get("name", "")), str(route.get("host", ""))), when))
    return sorted(samples)


def ingress_certificate_gauge(metrics: ControlPlaneMetrics, routes: RouteView | None) -> None:
    """Export (or, with None, stop exporting) the route certificates' expiry."""
    if routes is None:
        metrics.gauge_source(INGRESS_CERT, "", (), None)
        return
    metrics.gauge_source(
        INGRESS_CERT,
        "When the certificate a TLS route serves expires (notAfter).",
        ("route", "host"),
        lambda: route_certificates(routes()),
    )


__all__ = [
    "INGRESS_CERT",
    "LEASES",
    "LEASE_FINAL",
    "ingress_certificate_gauge",
    "lease_gauges",
    "route_certificates",
]
