"""The AlertRule and SLO handlers: applied objects become rules; listeners hear of changes;
records survive a restart (restore)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from socle.engine.kinds import HandlerDeps
from socle.engine.kinds.alertrule import AlertRuleHandler, AlertRuleState, SLOHandler
from socle.errors import ManifestError
from socle.model.alertrule import AlertRule
from socle.model.slo import SLO


def deps() -> HandlerDeps:
    return cast(HandlerDeps, object())  # the rule handlers use none of the runtime parts


def rule(name: str, **spec: Any) -> AlertRuleState:
    obj = AlertRule.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "AlertRule",
            "metadata": {"name": name},
            "spec": {"expr": "up == 0", **spec},
        }
    )
    return AlertRuleState.of(obj)


async def test_apply_delete_and_restore() -> None:
    handler = AlertRuleHandler(deps())
    heard: list[int] = []
    handler.subscribe(lambda: heard.append(1))
    mem = rule("mem", actions=["restart"])
    assert await handler.activate({"mem": mem, "down": rule("down")}, 3) == set()
    assert sorted(handler.rules()) == ["down", "mem"] and heard == [1]
    assert handler.rules()["mem"].actions == ["restart"]
    rows = await handler.status()
    assert [(r["name"], r["revision"], r["message"]) for r in rows] == [
        ("down", 3, "up == 0"),
        ("mem", 3, "up == 0"),
    ]
    await handler.activate({"down": None}, 4)
    assert sorted(handler.rules()) == ["mem"] and heard == [1, 1]

    again = AlertRuleHandler(deps())
    await again.restore({"mem": handler.record("mem", mem, 3)})
    assert again.current() == {"mem": mem}
    assert again.decode(handler.encode("mem", mem)) == mem


async def test_slo_handler_compiles_burn_rate_rules() -> None:
    handler = SLOHandler(deps())
    obj = SLO.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "SLO",
            "metadata": {"name": "shop"},
            "spec": {"objective": 99.5, "total": "req_total", "errors": 'req_total{code="500"}'},
        }
    )
    state = AlertRuleState.of(obj, "SLO")
    await handler.activate({"shop": state}, 1)
    groups = handler.rule_groups("shop", handler.rules()["shop"])
    assert [g["name"] for g in groups] == ["socle-slo-shop-records", "socle-slo-shop-alerts"]
    (row,) = await handler.status()
    assert row["kind"] == "SLO" and row["message"].startswith("99.5% over")


def test_a_promql_rule_records_no_log_query_fields() -> None:
    """Rules applied before ``logQuery`` existed keep their manifest, hence their digest:
    an upgrade plans no update for them."""
    spec = rule("down").manifest["spec"]
    assert "logQuery" not in spec and "above" not in spec and spec["expr"] == "up == 0"


async def test_a_log_query_the_store_refuses_is_a_manifest_problem() -> None:
    seen: list[str] = []

    def check(query: str) -> str | None:
        seen.append(query)
        return None if "count_over_time" in query else "not a metric query"

    handler = AlertRuleHandler(cast(HandlerDeps, SimpleNamespace(log_query_check=check)))
    good = AlertRule.model_validate({
        "apiVersion": "socle/v1", "kind": "AlertRule", "metadata": {"name": "good"},
        "spec": {"logQuery": 'count_over_time({app="a"}[5m])', "above": 2},
    })  # fmt: skip
    bad = good.model_copy(
        update={"spec": good.spec.model_copy(update={"log_query": '{app="a"}'}), "metadata":
                good.metadata.model_copy(update={"name": "bad"})}
    )  # fmt: skip
    states = {"good": AlertRuleState.of(good), "bad": AlertRuleState.of(bad)}
    with pytest.raises(ManifestError) as caught:
        await handler._check(states, {"AlertRule/bad": "rules.yaml:7"})
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.path) == ("rules.yaml", 7, "spec.logQuery")
    assert "not a metric query" in problem.reason
    assert sorted(seen) == ['count_over_time({app="a"}[5m])', '{app="a"}']
    assert "logs: count_over_time" in handler.describe(states["good"])
