"""Prometheus rule files: one per applied ``AlertRule``, plus Socle's built-in rules.

Built-in rules watch what every platform needs without anyone writing a manifest (names
start with ``Socle``; ``socle_rule`` is empty, so no remediation runs for them):

- ``SocleInstanceCrashLooping``: 3 restarts or more within 5 minutes;
- ``SocleInstanceMemoryNearLimit``: above 90 % of its memory limit for a minute;
- ``SocleDown``: Prometheus cannot scrape the control plane;
- ``SocleApplyFailed``: an apply ended failed or rolled back in the last 15 minutes;
- ``SocleCertificateExpiringSoon``: the API's TLS certificate expires within 14 days;
- ``SocleVolumeBackupFailing``: the last scheduled backup of a volume failed;
- ``SocleBackgroundTaskFailing``: background tasks of the control plane keep failing;
- ``SocleEnvironmentOutOfSync``: a GitOps source has been ``out of sync`` (a commit not
  applied: auto-sync off, or drift) or ``failed`` for 10 minutes;
- ``SocleIngressCertificateExpiringSoon``: a TLS route's certificate expires within 7 days
  (the ingress renews at two thirds of a certificate's life, ten days before the end of
  the PKI's 30-day certificates: this one means renewal keeps failing);
  ``SocleIngressCertificateExpired`` (critical): it has expired;
- ``SocleSecretsLeaseEndingSoon``: a secrets-engine lease that can no longer be renewed
  (not renewable, or at its max TTL) ends within an hour: its users need new credentials.

Metric names and the gauges behind them: :mod:`socle.observe.metrics.expiry` and
:mod:`socle.observe.metrics.certs`. Each expression is tested with ``promtool test rules``
(``tests/integration/observe/test_builtin_rules.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import yaml

BUILTIN_FILE = "socle-builtin.yml"

BUILTIN_RULES: list[dict[str, Any]] = [
    {
        "alert": "SocleInstanceCrashLooping",
        "expr": "increase(socle_instance_restarts_total[5m]) >= 3",
        "labels": {"severity": "critical", "socle_rule": ""},
        "annotations": {
            "summary": "{{ $labels.instance }} of {{ $labels.app }} restarted "
            '{{ $value | printf "%.0f" }} times in 5 minutes',
        },
    },
    {
        "alert": "SocleInstanceMemoryNearLimit",
        "expr": "socle_instance_memory_bytes / socle_instance_memory_limit_bytes > 0.9",
        "for": "1m",
        "labels": {"severity": "warning", "socle_rule": ""},
        "annotations": {
            "summary": "{{ $labels.instance }} of {{ $labels.app }} uses "
            "{{ $value | humanizePercentage }} of its memory limit",
        },
    },
    {
        "alert": "SocleDown",
        "expr": 'up{job="socle"} == 0',
        "for": "1m",
        "labels": {"severity": "critical", "socle_rule": ""},
        "annotations": {"summary": "Prometheus cannot scrape the Socle control plane"},
    },
    {
        "alert": "SocleApplyFailed",
        "expr": 'increase(socle_applies_total{status=~"failed|rolled_back"}[15m]) > 0',
        "labels": {"severity": "warning", "socle_rule": ""},
        "annotations": {"summary": "an apply ended {{ $labels.status }}"},
    },
    {
        "alert": "SocleCertificateExpiringSoon",
        "expr": "socle_tls_certificate_expiry_timestamp_seconds - time() < 14 * 86400",
        "labels": {"severity": "warning", "socle_rule": ""},
        "annotations": {
            "summary": "the certificate in {{ $labels.file }} expires in "
            "{{ $value | humanizeDuration }}",
        },
    },
    {
        "alert": "SocleIngressCertificateExpiringSoon",
        "expr": "socle_ingress_certificate_expiry_timestamp_seconds - time() < 7 * 86400",
        "labels": {"severity": "warning", "socle_rule": ""},
        "annotations": {
            "summary": "the certificate of route {{ $labels.route }} ({{ $labels.host }}) "
            "expires in {{ $value | humanizeDuration }}: its renewal keeps failing",
        },
    },
    {
        "alert": "SocleIngressCertificateExpired",
        "expr": "socle_ingress_certificate_expiry_timestamp_seconds - time() <= 0",
        "labels": {"severity": "critical", "socle_rule": ""},
        "annotations": {
            "summary": "the certificate of route {{ $labels.route }} ({{ $labels.host }}) "
            "has expired: clients refuse the route",
        },
    },
    {
        "alert": "SocleSecretsLeaseEndingSoon",
        "expr": "socle_secrets_lease_final_expiry_timestamp_seconds - time() < 3600",
        "labels": {"severity": "warning", "socle_rule": ""},
        "annotations": {
            "summary": "a lease of {{ $labels.mount }} that can no longer be renewed ends in "
            "{{ $value | humanizeDuration }}: its users need new credentials",
        },
    },
    {
        "alert": "SocleVolumeBackupFailing",
        "expr": "socle_volume_backup_failing == 1",
        "labels": {"severity": "warning", "socle_rule": ""},
        "annotations": {"summary": "the last scheduled backup of {{ $labels.volume }} failed"},
    },
    {
        "alert": "SocleEnvironmentOutOfSync",
        "expr": "max by (env, source, state) (socle_gitops_source_out_of_sync) == 1",
        "for": "10m",
        "labels": {"severity": "warning", "socle_rule": ""},
        "annotations": {
            "summary": "environment {{ $labels.env }} does not run the commit of source "
            "{{ $labels.source }} ({{ $labels.state }} for 10 minutes or more): "
            "see `socle source list`",
        },
    },
    {
        "alert": "SocleBackgroundTaskFailing",
        "expr": "increase(socle_background_task_failures_total[10m]) > 3",
        "labels": {"severity": "warning", "socle_rule": ""},
        "annotations": {"summary": "background tasks of the control plane keep failing"},
    },
]


def builtin_rule_files() -> dict[str, str]:
    return {
        BUILTIN_FILE: yaml.safe_dump(
            {"groups": [{"name": "socle-builtin", "rules": BUILTIN_RULES}]}, sort_keys=False
        )
    }


class RuleKind(Protocol):
    kind: str

    def rules(self) -> Mapping[str, Any]: ...

    def rule_groups(self, name: str, state: Any) -> list[dict[str, Any]]: ...


def rule_files(handlers: Iterable[RuleKind]) -> dict[str, str]:
    """``<kind>-<name>.yml`` per applied AlertRule and SLO (from their handlers)."""
    files: dict[str, str] = {}
    for handler in handlers:
        for name, state in sorted(handler.rules().items()):
            groups = handler.rule_groups(name, state)
            files[f"{handler.kind.lower()}-{name}.yml"] = yaml.safe_dump(
                {"groups": groups}, sort_keys=False
            )
    return files


__all__ = ["BUILTIN_FILE", "BUILTIN_RULES", "builtin_rule_files", "rule_files"]
