"""Scrape targets in Prometheus' ``http_sd`` format, computed from what runs now.

``GET /api/v1/metrics/targets?job=...`` answers a list of target groups
(``[{"targets": ["host:port"], "labels": {...}}]``, Prometheus' documented shape):

- ``socle``: the control plane itself (``/metrics``);
- ``socle-instances``: the per-instance exporter (``/metrics/instances``), whose series carry
  their own ``app``/``env``/``instance``/``release`` labels;
- ``apps``: every running instance of an App with ``spec.metrics`` (its named port and
  path), labelled ``app``, ``env``, ``instance``, ``release``.

Pure: instances and app specs in, groups out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from socle.runtime.driver import InstanceStatus

SOCLE_PATH = "/metrics"
INSTANCES_PATH = "/metrics/instances"


def app_targets(
    instances: Iterable[InstanceStatus], metrics: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One group per running instance of an app that opted in (``metrics[app]``)."""
    groups: list[dict[str, Any]] = []
    for status in sorted(instances, key=lambda s: s.id):
        spec = metrics.get(status.app)
        if spec is None or status.pid is None:
            continue
        port = status.ports.get(str(spec.get("port")))
        if port is None:
            continue
        groups.append(
            {
                "targets": [f"{status.address}:{port}"],
                "labels": {
                    "__metrics_path__": str(spec.get("path") or "/metrics"),
                    "app": status.app,
                    "env": status.environment,
                    "instance": status.id,
                    "release": status.release,
                },
            }
        )
    return groups


def socle_targets(address: str, job: str) -> list[dict[str, Any]]:
    """The control plane's own target (``host:port`` of the main listener) for ``job``."""
    path = INSTANCES_PATH if job == "socle-instances" else SOCLE_PATH
    return [{"targets": [address], "labels": {"__metrics_path__": path}}]


__all__ = ["INSTANCES_PATH", "SOCLE_PATH", "app_targets", "socle_targets"]
