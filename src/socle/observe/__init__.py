"""Observe: metrics, logs, traces and alerts of the apps and of Socle itself.

- :mod:`socle.observe.metrics` — the control plane's own metrics (one
  :class:`~socle.observe.metrics.registry.ControlPlaneMetrics` per control plane, no global
  registry), the per-instance exporter (cgroups and ``/proc``, no change to the app), the
  ``http_sd`` target list, and the embedded Prometheus it is scraped by.
- :mod:`socle.observe.alerts` — ``AlertRule`` and ``SLO`` compiled to rule files, the
  embedded Alertmanager, its webhook back into Socle and the remediation it runs.
- :mod:`socle.observe.logs` — the log store (see its own docstring).

Layering: observe reads the engine (declared objects) and the runtime (instances) through
their public faces; nothing below it imports it.
"""
