"""The ``SLO`` kind: an objective over a window, alerted on by multi-window burn rates.

::

    apiVersion: socle/v1
    kind: SLO
    metadata: {name: api-availability}
    spec:
      objective: 99.9                    # percent of good events
      window: 30d
      total: http_requests_total{app="api"}                 # a counter of every event
      errors: http_requests_total{app="api",code=~"5.."}    # ...of bad ones (or `good:`)
      severity: critical
      actions: []                        # as AlertRule: remediation when a burn alert fires

``total`` and ``errors`` (or ``good``) are counter selectors; Socle takes their rates.
Compiled (:func:`to_rule_groups`) to recording rules of the error ratio over 5m, 30m, 1h,
2h, 6h, 1d, 3d and the window, and to the four burn-rate alerts of the SRE workbook
(multi-window, multi-burn-rate): 14.4x over 1h and 5m, 6x over 6h and 30m (page), 3x over 1d
and 2h, 1x over 3d and 6h (ticket). A latency objective is the same with ``good`` =
the histogram bucket under the threshold and ``total`` = its ``+Inf`` bucket (or ``_count``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from socle.model.alertrule import MAX_EXPR, Action
from socle.model.app import CONTROLS, Metadata, Spec
from socle.units import Duration, parse_duration

RATE_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

BURN_ALERTS: tuple[tuple[str, float, str, str, str], ...] = (
    # (name suffix, burn-rate factor, long window, short window, speed)
    ("page-fast", 14.4, "1h", "5m", "page"),
    ("page-slow", 6.0, "6h", "30m", "page"),
    ("ticket-fast", 3.0, "1d", "2h", "ticket"),
    ("ticket-slow", 1.0, "3d", "6h", "ticket"),
)


def _selector(value: str) -> str:
    if CONTROLS.search(value.replace("\n", " ")):
        raise ValueError("holds control characters")
    if "[" in value:
        raise ValueError("give the counter selector itself; Socle adds the rate windows")
    return value


class SLOSpec(Spec):
    objective: float = Field(gt=0, lt=100)
    """Percent of events that must be good, e.g. 99.9."""
    window: Duration = Field(default=30 * 86400.0, ge=3600, le=365 * 86400)
    total: str = Field(min_length=1, max_length=MAX_EXPR)
    errors: str | None = Field(default=None, min_length=1, max_length=MAX_EXPR)
    good: str | None = Field(default=None, min_length=1, max_length=MAX_EXPR)
    severity: Literal["info", "warning", "critical"] = "critical"
    actions: list[Action] = Field(default_factory=list, max_length=4)

    @field_validator("total", "errors", "good")
    @classmethod
    def _selectors(cls, value: str | None) -> str | None:
        return None if value is None else _selector(value)

    @model_validator(mode="after")
    def _one_of(self) -> SLOSpec:
        if (self.errors is None) == (self.good is None):
            raise ValueError("an SLO needs exactly one of errors or good (with total)")
        return self


class SLO(Spec):
    api_version: Literal["socle/v1"]
    kind: Literal["SLO"]
    metadata: Metadata
    spec: SLOSpec

    @property
    def name(self) -> str:
        return self.metadata.name


def window_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def error_ratio(spec: dict[str, Any], window: str) -> str:
    total = f"sum(rate({spec['total']}[{window}]))"
    if spec.get("errors"):
        return f"sum(rate({spec['errors']}[{window}])) / {total}"
    return f"1 - sum(rate({spec['good']}[{window}])) / {total}"


def to_rule_groups(name: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Recording and alerting rules of SLO ``name`` (its rendered spec, JSON form)."""
    window = window_text(parse_duration(spec.get("window") or "30d"))
    budget = 1 - float(spec["objective"]) / 100
    labels = {"slo": name}
    records = [
        {
            "record": "socle_slo:error_ratio",
            "expr": error_ratio(spec, w),
            "labels": {**labels, "window": w},
        }
        for w in dict.fromkeys((*RATE_WINDOWS, window))
    ]
    records.append(
        {"record": "socle_slo:error_budget", "expr": f"vector({budget:.6g})", "labels": labels}
    )

    def ratio(w: str) -> str:
        return f'socle_slo:error_ratio{{slo="{name}",window="{w}"}}'

    alerts = [
        {
            "alert": f"{name}-burn-{suffix}",
            "expr": f"{ratio(long)} > ({factor} * {budget:.6g}) and ignoring(window) "
            f"{ratio(short)} > ({factor} * {budget:.6g})",
            "labels": {
                "severity": spec.get("severity", "critical") if speed == "page" else "warning",
                "socle_rule": f"SLO/{name}",
                "slo": name,
                "speed": speed,
            },
            "annotations": {
                "summary": f"SLO {name}: error budget burning {factor:g}x too fast "
                f"over {long} and {short}",
            },
        }
        for suffix, factor, long, short, speed in BURN_ALERTS
    ]
    return [
        {"name": f"socle-slo-{name}-records", "rules": records},
        {"name": f"socle-slo-{name}-alerts", "rules": alerts},
    ]


__all__ = ["BURN_ALERTS", "SLO", "SLOSpec", "error_ratio", "to_rule_groups", "window_text"]
