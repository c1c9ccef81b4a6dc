"""The ``AlertRule`` kind: a PromQL condition that fires an alert, and what Socle does then.

::

    apiVersion: socle/v1
    kind: AlertRule
    metadata: {name: api-memory}
    spec:
      expr: socle_instance_memory_bytes{app="api"} > 200e6
      for: 30s
      severity: warning            # info | warning | critical
      labels: {team: web}
      annotations: {summary: "api uses more than 200 MB"}
      actions: [restart]           # remediation Socle runs when it fires

Or on the log store, with a LogQL metric query instead of ``expr``::

    spec:
      logQuery: sum by (app) (count_over_time({app="api"} |= "error" [5m]))
      above: 10                    # fires while a series of the query is above this
      for: 1m

Socle evaluates each log query at every scrape interval and exports the result as
``socle_log_query_value{socle_rule="NAME", ...the query's labels}``; the rule's PromQL is
then ``socle_log_query_value{socle_rule="NAME"} > above``, so routing, silences, ``for`` and
actions work as for any AlertRule.

Compiled to one Prometheus rule group per object (:func:`to_rule_group`); the PromQL itself
is checked by ``promtool check rules`` when a plan is made (the engine's handler), so a
bad expression is refused before anything changes. The ``restart`` action restarts the
instance named by the alert's ``instance`` label (the per-instance exporter's), or every
instance of its ``app`` label; it is rate-limited per rule and app and recorded.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from socle.model.app import CONTROLS, Metadata, Spec
from socle.units import Duration, parse_duration

LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
RESERVED_LABELS = frozenset({"alertname", "severity", "socle_rule"})
MAX_EXPR = 4096

MAX_COMMAND_ARGS = 64


class RunCommand(Spec):
    command: list[str] = Field(min_length=1, max_length=MAX_COMMAND_ARGS)
    """Argument list (never a shell string), run in the app's sandbox as the app."""
    timeout: Duration = Field(default=30.0, gt=0, le=600)

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        for arg in value:
            if CONTROLS.search(arg) or "\0" in arg or len(arg) > 4096:
                raise ValueError("command arguments must be printable and at most 4096 characters")
        return value


class RunAction(Spec):
    """``{run: {command: [...], timeout: 30s}}``: a command in each alerting instance's
    sandbox (a cache flush, a thread dump); its exit status is the remediation's result."""

    run: RunCommand


class ScaleBy(Spec):
    by: int = Field(ge=-100, le=100)
    """Instances to add (negative: to remove), within the app's ``spec.autoscale`` bounds."""

    @field_validator("by")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("scale by must not be 0")
        return value


class ScaleAction(Spec):
    """``{scale: {by: 1}}``: change the app's instance count within its autoscale bounds."""

    scale: ScaleBy


Action = Literal["restart", "rollback"] | RunAction | ScaleAction
"""``restart`` the alerting instances; ``rollback`` the app to its previous healthy
revision; ``{run: ...}`` a command in the app's sandbox; ``{scale: {by: N}}``."""


MAX_LABELS = 32
"""Labels (and, apart, annotations) one rule may set: each is copied into every alert,
every notification and Alertmanager's memory."""
MAX_LABEL_VALUE = 1024
MAX_ANNOTATION = 4096


def _label_names(value: dict[str, str], what: str) -> dict[str, str]:
    if len(value) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} {what}s (found {len(value)})")
    longest = MAX_ANNOTATION if what == "annotation" else MAX_LABEL_VALUE
    for name, text in value.items():
        if not LABEL_RE.fullmatch(name) or name.startswith("__") or len(name) > 128:
            raise ValueError(f"{what} name {name[:80]!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
        if len(text) > longest:
            raise ValueError(f"{what} {name!r} is longer than {longest} characters")
        if CONTROLS.search(text):
            raise ValueError(f"{what} {name!r} holds control characters")
    return value


LOG_QUERY_METRIC = "socle_log_query_value"
"""The gauge a log-query AlertRule's results are exported as (one series per result)."""


class AlertRuleSpec(Spec):
    expr: str | None = Field(default=None, min_length=1, max_length=MAX_EXPR)
    """PromQL; the alert fires for every series it returns."""
    log_query: str | None = Field(default=None, min_length=1, max_length=MAX_EXPR)
    """A LogQL metric query over the log store (instead of ``expr``), e.g.
    ``count_over_time({app="api"} |= "error" [5m])``."""
    above: float | None = None
    """With ``logQuery``: the alert fires for every series whose value is above this (0:
    any matching line)."""
    for_: Duration = Field(default=0.0, alias="for", ge=0, le=7 * 86400)
    """How long the condition must hold before the alert fires."""
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    actions: list[Action] = Field(default_factory=list, max_length=4)
    """Remediation when the alert fires: ``restart``, ``rollback``, ``{run: {command}}``,
    ``{scale: {by: N}}``."""

    @field_validator("expr", "log_query")
    @classmethod
    def _expr(cls, value: str | None) -> str | None:
        if value is not None and CONTROLS.search(value.replace("\n", " ").replace("\t", " ")):
            raise ValueError("the query holds control characters")
        return value

    @model_validator(mode="after")
    def _one_query(self) -> AlertRuleSpec:
        if (self.expr is None) == (self.log_query is None):
            raise ValueError("an AlertRule needs exactly one of expr (PromQL) or logQuery (LogQL)")
        if self.above is not None and self.log_query is None:
            raise ValueError("above goes with logQuery (with expr, write the comparison in it)")
        return self

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name in RESERVED_LABELS:
                raise ValueError(f"label {name!r} is set by Socle; use spec.severity or the name")
        return _label_names(value, "label")

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        return _label_names(value, "annotation")

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: list[Action]) -> list[Action]:
        return unique_actions(value)


def unique_actions(value: list[Action]) -> list[Action]:
    names = [
        a if isinstance(a, str) else "run" if isinstance(a, RunAction) else "scale" for a in value
    ]
    if len(set(names)) != len(names):
        raise ValueError("an action is listed twice")
    return value


class AlertRule(Spec):
    api_version: Literal["socle/v1"]
    kind: Literal["AlertRule"]
    metadata: Metadata
    spec: AlertRuleSpec

    @property
    def name(self) -> str:
        return self.metadata.name


def prometheus_duration(seconds: float) -> str:
    """Prometheus' duration syntax (integers only): ``30s``, ``1500ms``."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def alert_name(rule: str) -> str:
    """The Prometheus ``alertname`` of AlertRule ``rule`` (names may hold '-')."""
    return rule


def to_rule_group(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One Prometheus rule group from an AlertRule's rendered spec (JSON form, camelCase).

    ``socle_rule`` names the object the alert came from: the webhook looks the actions up
    in the applied AlertRule, never in what the alert says.
    """
    expr = spec.get("expr")
    if expr is None:  # a log query: the value Socle exports for it, compared
        above = float(spec.get("above") or 0)
        expr = f'{LOG_QUERY_METRIC}{{socle_rule="{name}"}} > {above:g}'
    rule: dict[str, Any] = {
        "alert": alert_name(name),
        "expr": expr,
        "labels": {
            **dict(spec.get("labels") or {}),
            "severity": spec.get("severity", "warning"),
            "socle_rule": name,
        },
    }
    hold = parse_duration(spec.get("for") or 0)
    if hold:
        rule["for"] = prometheus_duration(hold)
    if spec.get("annotations"):
        rule["annotations"] = dict(spec["annotations"])
    return {"name": f"socle-{name}", "rules": [rule]}


__all__ = [
    "LOG_QUERY_METRIC",
    "Action",
    "AlertRule",
    "AlertRuleSpec",
    "RunAction",
    "ScaleAction",
    "alert_name",
    "prometheus_duration",
    "to_rule_group",
    "unique_actions",
]
