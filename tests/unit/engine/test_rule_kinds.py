"""The AlertRule and SLO handlers: applied objects become rules; listeners hear of changes;
records survive a restart (restore)."""

from __future__ import annotations

from typing import Any, cast

from socle.engine.kinds import HandlerDeps
from socle.engine.kinds.alertrule import AlertRuleHandler, AlertRuleState, SLOHandler
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
