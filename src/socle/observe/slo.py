"""``socle slo``: each applied SLO's objective, error ratio, budget left and burn rates.

Read from the recording rules the SLO compiles to (``socle_slo:error_ratio{slo,window}``),
so the answer is what the burn-rate alerts see. Before Prometheus has enough samples the
figures are None ("no data yet").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from socle.model.slo import window_text
from socle.observe.metrics.prometheus import PrometheusQuery
from socle.units import parse_duration


async def _ratio(query: PrometheusQuery, name: str, window: str) -> float | None:
    data = await query.get(
        "query", {"query": f'socle_slo:error_ratio{{slo="{name}",window="{window}"}}'}
    )
    result = data.get("result") or []
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value  # NaN: no events in the window


async def report(query: PrometheusQuery, slos: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, state in sorted(slos.items()):
        spec = state.manifest["spec"]
        objective = float(spec["objective"])
        budget = 1 - objective / 100
        window = window_text(parse_duration(spec.get("window") or "30d"))
        ratio = await _ratio(query, name, window)
        burn = {w: await _ratio(query, name, w) for w in ("1h", "6h")}
        rows.append(
            {
                "name": name,
                "objective": objective,
                "window": window,
                "error_ratio": ratio,
                "budget_remaining": None if ratio is None else round(1 - ratio / budget, 6),
                "burn_rate": {
                    w: None if r is None else round(r / budget, 4) for w, r in burn.items()
                },
            }
        )
    return rows


__all__ = ["report"]
