"""The SLO kind: validation and its recording and multi-window burn-rate rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from socle.model.slo import SLO, to_rule_groups, window_text


def slo(**spec: Any) -> SLO:
    base = {"objective": 99.9, "total": 'req_total{app="api"}', "errors": 'req_total{code="500"}'}
    base.update(spec)
    return SLO.model_validate(
        {"apiVersion": "socle/v1", "kind": "SLO", "metadata": {"name": "api"}, "spec": base}
    )


def test_rules_record_ratios_and_alert_on_two_windows_at_once() -> None:
    spec = slo(window="28d").model_dump(mode="json", by_alias=True)["spec"]
    records, alerts = to_rule_groups("api", spec)
    windows = [r["labels"]["window"] for r in records["rules"] if "window" in r["labels"]]
    assert windows == ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "28d"]
    first = records["rules"][0]
    assert first["expr"] == (
        'sum(rate(req_total{code="500"}[5m])) / sum(rate(req_total{app="api"}[5m]))'
    )
    names = [a["alert"] for a in alerts["rules"]]
    assert names == [
        "api-burn-page-fast", "api-burn-page-slow", "api-burn-ticket-fast", "api-burn-ticket-slow"
    ]  # fmt: skip
    fast = alerts["rules"][0]
    # Both windows must burn: the long one proves it matters, the short one that it still does.
    assert 'window="1h"} > (14.4 * 0.001) and ignoring(window)' in fast["expr"]
    assert 'window="5m"} > (14.4 * 0.001)' in fast["expr"]
    assert fast["labels"]["socle_rule"] == "SLO/api" and fast["labels"]["severity"] == "critical"
    assert alerts["rules"][3]["labels"]["severity"] == "warning"


def test_good_events_form() -> None:
    spec = slo(errors=None, good='lat_bucket{le="0.3"}').model_dump(mode="json", by_alias=True)
    expr = to_rule_groups("api", spec["spec"])[0]["rules"][0]["expr"]
    assert expr.startswith('1 - sum(rate(lat_bucket{le="0.3"}[5m]))')


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"objective": 100}, "less than 100"),
        ({"objective": 0}, "greater than 0"),
        ({"good": "x"}, "exactly one of errors or good"),
        ({"errors": None}, "exactly one of errors or good"),
        ({"total": "req_total[5m]"}, "Socle adds the rate windows"),
        ({"window": "10m"}, "greater than or equal to 3600"),
    ],
)
def test_bad_slos_are_refused(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        slo(**spec)


def test_window_text() -> None:
    assert [window_text(s) for s in (86400 * 30, 7200, 90, 61)] == ["30d", "2h", "90s", "61s"]
