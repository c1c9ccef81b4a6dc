"""AlertRules with ``logQuery`` evaluated on a real log store (DuckDB), exported as the
gauge Prometheus alerts on: values per series of the query, none while nothing matches,
a failing query reported apart and the other rules still evaluated."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from socle.observe.alerts.logrules import LogQueryRules
from socle.observe.logs.model import Entry
from socle.observe.logs.store import LogStore

NS = 1_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    s = LogStore(tmp_path / "store")
    s.open()
    yield s
    s.close()


def page(rules: LogQueryRules) -> str:
    registry = CollectorRegistry()
    registry.register(rules)
    return generate_latest(registry).decode()


async def test_log_queries_become_the_gauge_prometheus_alerts_on(store: LogStore) -> None:
    now = time.time_ns()
    store.push(
        [
            Entry(now - 60 * NS + i, "GET / 500 error", {"app": "api", "env": "prod"})
            for i in range(3)
        ]
        + [Entry(now - 30 * NS, "GET / 200", {"app": "api", "env": "prod"})]
        + [Entry(now - 20 * NS, "boom: error", {"app": "web", "env": "prod"})]
        + [Entry(now - 3600 * NS, "an old error", {"app": "api", "env": "prod"})]
    )
    specs: dict[str, Mapping[str, Any]] = {
        "api-errors": {"logQuery": 'sum by (app) (count_over_time({env="prod"} |= "error" [5m]))'},
        "quiet": {"logQuery": 'count_over_time({app="nothing-here"}[5m])'},
        "not-a-log-rule": {"expr": "up == 0"},
    }
    rules = LogQueryRules(lambda: specs, store.metric)
    await rules.evaluate_once(now)
    text = page(rules)
    assert 'socle_log_query_value{app="api",socle_rule="api-errors"} 3.0' in text
    assert 'socle_log_query_value{app="web",socle_rule="api-errors"} 1.0' in text
    assert 'socle_rule="quiet"' not in text  # nothing matches: no sample, nothing fires
    assert "not-a-log-rule" not in text
    assert rules.failing() == {}

    # A query that cannot be evaluated is reported; the others still are.
    specs["broken"] = {"logQuery": '{app="api"}'}  # lines, not a number
    await rules.evaluate_once(now)
    text = page(rules)
    assert 'socle_log_query_failing{socle_rule="broken"} 1.0' in text
    assert 'socle_log_query_value{app="api",socle_rule="api-errors"} 3.0' in text

    # The lines age out of the window: the value drops with them.
    await rules.evaluate_once(now + 10 * 60 * NS)
    assert "socle_log_query_value{" not in page(rules)


async def test_a_query_label_cannot_pass_for_another_rule(store: LogStore) -> None:
    now = time.time_ns()
    store.push([Entry(now - NS, "x", {"app": "api", "socle_rule": "other"})])
    specs = {"mine": {"logQuery": 'count_over_time({app="api"}[5m])'}}
    rules = LogQueryRules(lambda: specs, store.metric)
    await rules.evaluate_once(now)
    text = page(rules)
    assert 'socle_rule="mine"' in text and 'socle_rule="other"' not in text
