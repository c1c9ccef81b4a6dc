"""Request metrics cannot be grown by clients: route templates, bounded methods and codes."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from socle.api.instrument import timed
from socle.observe.metrics.registry import ControlPlaneMetrics


def _series(metrics: ControlPlaneMetrics) -> set[tuple[str, str, str]]:
    found = set()
    for family in metrics.api_seconds.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                labels = sample.labels
                found.add((labels["route"], labels["method"], labels["code"]))
    return found


async def test_hostile_paths_and_methods_add_no_series() -> None:
    api = FastAPI()

    @api.get("/api/v1/apps/{name}")
    async def app(name: str) -> dict[str, str]:
        return {"name": name}

    metrics = ControlPlaneMetrics()
    transport = httpx.ASGITransport(app=timed(api, metrics))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for i in range(60):
            await client.get(f"/api/v1/apps/app-{i}")
            await client.get(f"/api/v1/nothing-{i}/x")
            await client.request(f"M{i}", f"/api/v1/apps/app-{i}")
    assert _series(metrics) == {
        ("/api/v1/apps/{name}", "GET", "2xx"),
        ("unmatched", "GET", "4xx"),
        ("/api/v1/apps/{name}", "OTHER", "4xx"),
    }
