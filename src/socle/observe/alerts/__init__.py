"""Alerts: rule files from ``AlertRule``, the embedded Alertmanager, remediation."""
