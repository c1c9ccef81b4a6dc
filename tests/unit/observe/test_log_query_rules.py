"""AlertRules on the log store: ``logQuery`` and ``above`` in the manifest, the rule
Prometheus evaluates, and the LogQL check made when a plan is made."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from socle.model.alertrule import AlertRule, to_rule_group
from socle.observe.alerts.logrules import check_log_query

ERRORS = 'sum by (app) (count_over_time({app="api"} |= "error" [5m]))'


def rule(**spec: Any) -> AlertRule:
    return AlertRule.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "AlertRule",
            "metadata": {"name": "api-errors"},
            "spec": spec,
        }
    )


def test_a_log_query_rule_compiles_to_the_exported_value_compared() -> None:
    obj = rule(logQuery=ERRORS, above=10, **{"for": "1m"}, actions=["restart"])
    spec = obj.model_dump(mode="json", by_alias=True)["spec"]
    group = to_rule_group(obj.name, spec)
    assert group["rules"][0]["expr"] == 'socle_log_query_value{socle_rule="api-errors"} > 10'
    assert group["rules"][0]["for"] == "60s"
    assert group["rules"][0]["labels"]["socle_rule"] == "api-errors"
    # Without above: any matching line.
    spec = rule(logQuery=ERRORS).model_dump(mode="json", by_alias=True)["spec"]
    assert to_rule_group("x", spec)["rules"][0]["expr"].endswith("> 0")
    # A PromQL rule is unchanged.
    spec = rule(expr="up == 0").model_dump(mode="json", by_alias=True)["spec"]
    assert to_rule_group("x", spec)["rules"][0]["expr"] == "up == 0"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({}, "exactly one of expr"),
        ({"expr": "up", "logQuery": ERRORS}, "exactly one of expr"),
        ({"expr": "up > 1", "above": 1}, "above goes with logQuery"),
        ({"logQuery": 'count_over_time({app="a"}[5m])\x07'}, "control characters"),
        ({"logQuery": ERRORS, "above": "many"}, "above"),
    ],
)
def test_bad_log_query_rules_are_refused(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        rule(**spec)


def test_the_log_query_check() -> None:
    assert check_log_query(ERRORS) is None
    assert check_log_query('rate({app="a"} | json | level="error" [1m])') is None
    refused = check_log_query('{app="api"} |= "error"')
    assert refused is not None and "returns lines, not numbers" in refused
    broken = check_log_query('count_over_time({app="api"[5m])')
    assert broken is not None and "expected" in broken
    assert check_log_query('count_over_time({app=""}[5m])') is not None  # Loki's rule


def test_regular_expressions_are_checked_by_the_log_store() -> None:
    """The parse leaves RE2 syntax to the store: a plan asks it (its own RE2), so a bad
    expression is a manifest problem, not a rule that fails at every evaluation; a store
    that does not answer leaves it to the evaluator."""
    from socle.errors import SocleError
    from socle.observe.logs.logql import LogQLError

    asked: list[list[str]] = []

    def store(patterns: list[str]) -> None:
        asked.append(patterns)
        if "(?=x)" in patterns:
            raise LogQLError("query: bad regular expression '(?=x)': invalid perl operator")

    good = 'count_over_time({app=~"api|web"} |~ "\\\\p{L}+" [5m])'
    assert check_log_query(good, store) is None
    assert asked == [["api|web", "\\p{L}+"]]
    bad = 'count_over_time({app="api"} |~ "(?=x)" [5m])'
    assert "invalid perl operator" in (check_log_query(bad, store) or "")

    def down(_: list[str]) -> None:
        raise SocleError("the log worker does not answer")

    assert check_log_query(bad, down) is None
    assert check_log_query(ERRORS) is None  # no regular expression: nothing to ask
