"""The PromQL proxy's bounds, checked before anything reaches Prometheus."""

from __future__ import annotations

from typing import Any, cast

import pytest

from socle.api.context import ApiContext
from socle.api.routes.metrics import _time, query_range
from socle.errors import ConfigError


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_a_time_that_is_not_a_number_of_seconds_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="not a time"):
        _time(value, "start", 0.0)


@pytest.mark.parametrize(
    "args",
    [
        {"start": "nan"},
        {"end": "nan"},
        {"start": "nan", "end": "nan", "step": "15s"},
        {"step": "9" * 400},  # digits only: float() gives inf
        {"start": "0", "step": "1"},  # decades at one point a second
    ],
)
async def test_range_bounds_hold_for_hostile_values(args: dict[str, Any]) -> None:
    """Refused before the control plane is even looked at (no Prometheus is needed)."""
    with pytest.raises(ConfigError):
        await query_range(cast(ApiContext, None), "ci", "up", **args)
