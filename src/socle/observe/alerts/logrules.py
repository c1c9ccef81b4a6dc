"""AlertRules on the log store: ``spec.logQuery`` evaluated by Socle, alerted by Prometheus.

Prometheus cannot read the log store, so Socle evaluates each applied AlertRule's LogQL
metric query (``count_over_time({app="api"} |= "error" [5m])``) at every rule evaluation and
exports the answer at ``/metrics``:

- ``socle_log_query_value{socle_rule="NAME", ...the query's labels}``: one sample per series
  of the answer (none while no line matches);
- ``socle_log_query_failing{socle_rule="NAME"}``: 1 while the query cannot be evaluated
  (the reason is logged once per change).

The rule Prometheus evaluates is ``socle_log_query_value{socle_rule="NAME"} > above``
(:func:`socle.model.alertrule.to_rule_group`), so ``for``, routing, silences, notifiers and
actions are those of any AlertRule. A query is checked when the plan is made
(:func:`check_log_query`, handed to the engine), so a bad one never gets this far.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from socle.errors import SocleError
from socle.model.alertrule import LOG_QUERY_METRIC
from socle.observe.logs.logql import LogQLError, MetricQuery, parse, regexes
from socle.observe.logs.model import Series

log = logging.getLogger(__name__)

FAILING_METRIC = "socle_log_query_failing"
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_SERIES = 1000
"""Most series exported per rule: a query grouped by a label with unbounded values must
not grow the metrics page without end."""
NS = 1_000_000_000

RuleSpecs = Callable[[], Mapping[str, Mapping[str, Any]]]
"""The applied AlertRules' specs by name (JSON form: ``logQuery``, ``above``...)."""
Evaluate = Callable[[MetricQuery, int, int, int], list[Series]]
"""The log store's metric query: ``(query, start ns, end ns, step ns)`` -> series."""


def check_log_query(
    text: str, regex_check: Callable[[list[str]], None] | None = None
) -> str | None:
    """Why ``text`` cannot be an AlertRule's ``logQuery`` (None: it can): it must parse
    and be a metric query (a number per series), not a log query (lines); its regular
    expressions must be RE2 (``regex_check``: the log store's own check, blocking; a
    store that does not answer leaves them to the evaluator, which reports them)."""
    try:
        query = parse(text)
    except LogQLError as exc:
        return exc.message
    if not isinstance(query, MetricQuery):
        return (
            "a log query returns lines, not numbers: wrap it in a range function, "
            'e.g. count_over_time({app="api"} |= "error" [5m])'
        )
    patterns = regexes(query)
    if regex_check is not None and patterns:
        try:
            regex_check(patterns)
        except LogQLError as exc:
            return exc.message
        except SocleError as exc:  # the store is down: not a fault of the manifest
            log.warning("log query regular expressions not checked: %s", exc.message)
    return None


def _labels(rule: str, labels: Mapping[str, str]) -> dict[str, str]:
    """The exported labels: the query's own (valid names only; never ``socle_rule``, which
    names the rule), then ``socle_rule``."""
    kept = {
        k: str(v)
        for k, v in labels.items()
        if LABEL_NAME.fullmatch(k) and not k.startswith("__") and k != "socle_rule"
    }
    kept["socle_rule"] = rule
    return kept


class LogQueryRules(Collector):
    """Evaluates the log queries of the applied AlertRules; a collector of their results."""

    def __init__(self, rules: RuleSpecs, evaluate: Evaluate) -> None:
        self._rules = rules
        self._evaluate = evaluate
        self._values: dict[str, list[tuple[dict[str, str], float]]] = {}
        self._failing: dict[str, str] = {}

    async def run(self, interval: float) -> None:
        """Evaluate every ``interval`` seconds until cancelled."""
        while True:
            await self.evaluate_once()
            await asyncio.sleep(interval)

    async def evaluate_once(self, now_ns: int | None = None) -> None:
        """Evaluate each applied rule's query at ``now_ns`` (default: now), off the loop."""
        now = time.time_ns() if now_ns is None else now_ns
        values: dict[str, list[tuple[dict[str, str], float]]] = {}
        failing: dict[str, str] = {}
        for name, spec in sorted(self._rules().items()):
            text = spec.get("logQuery")
            if not text:
                continue
            try:
                query = parse(str(text))
                if not isinstance(query, MetricQuery):
                    raise LogQLError("not a metric query")
                series = await asyncio.to_thread(self._evaluate, query, now, now, NS)
            except Exception as exc:  # a broken store or query: reported, others go on
                reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                failing[name] = str(reason)[:300]
                if self._failing.get(name) != failing[name]:
                    log.warning("AlertRule %s: log query failed: %s", name, failing[name])
                continue
            values[name] = [
                (_labels(name, s.labels), float(s.points[-1][1]))
                for s in series[:MAX_SERIES]
                if s.points
            ]
        self._values, self._failing = values, failing

    def failing(self) -> Mapping[str, str]:
        return dict(self._failing)

    def collect(self) -> Iterable[Metric]:
        value = Metric(LOG_QUERY_METRIC, "Value of an AlertRule's log query (LogQL).", "gauge")
        for rows in self._values.values():
            for labels, number in rows:
                value.add_sample(LOG_QUERY_METRIC, labels, number)
        yield value
        failing = GaugeMetricFamily(
            FAILING_METRIC,
            "1 while an AlertRule's log query cannot be evaluated.",
            labels=["socle_rule"],
        )
        for name in sorted(self._failing):
            failing.add_metric([name], 1.0)
        yield failing


def log_query_specs(rules: Callable[[], Mapping[str, Any]]) -> RuleSpecs:
    """Specs by name from an AlertRule handler's ``rules()`` (states with a manifest)."""

    def specs() -> Mapping[str, Mapping[str, Any]]:
        found: dict[str, Mapping[str, Any]] = {}
        for name, state in rules().items():
            spec = (getattr(state, "manifest", None) or {}).get("spec") or {}
            if spec.get("logQuery"):
                found[name] = spec
        return found

    return specs


__all__: Sequence[str] = [
    "FAILING_METRIC",
    "LogQueryRules",
    "check_log_query",
    "log_query_specs",
]
