"""The ingress certificate gauge reads the routes the ingress serves: one sample per TLS
route (``route``, ``host``), nothing for plain or broken ones; stopping removes it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from socle.observe.metrics.expiry import INGRESS_CERT, ingress_certificate_gauge, route_certificates
from socle.observe.metrics.registry import ControlPlaneMetrics
from socle.tasks import TaskMonitor

NOT_AFTER = datetime(2027, 1, 31, 12, 0, tzinfo=UTC)

ROUTES: list[dict[str, Any]] = [
    {"name": "shop", "host": "shop.example", "certificate": {"not_after": NOT_AFTER.isoformat()}},
    {"name": "plain", "host": "plain.example", "certificate": None},
    {"name": "odd", "host": "odd.example", "certificate": {"not_after": "soon"}},
    {"name": "acme", "host": "a.example", "certificate": {"not_after": "2027-03-01T00:00:00+00:00",
                                                          "acme": True}},
]  # fmt: skip


def test_route_certificates() -> None:
    assert route_certificates(ROUTES) == [
        (("acme", "a.example"), datetime(2027, 3, 1, tzinfo=UTC).timestamp()),
        (("shop", "shop.example"), NOT_AFTER.timestamp()),
    ]
    assert route_certificates([]) == []


def test_gauge_is_read_at_scrape_time_and_removed_on_stop() -> None:
    metrics = ControlPlaneMetrics(TaskMonitor())
    routes = list(ROUTES)
    ingress_certificate_gauge(metrics, lambda: routes)
    page = metrics.exposition().decode()
    assert f'{INGRESS_CERT}{{host="shop.example",route="shop"}} 1.8013968e+09' in page
    assert 'route="plain"' not in page and 'route="odd"' not in page
    routes.pop(0)  # the route was removed: gone at the next scrape
    assert 'route="shop"' not in metrics.exposition().decode()
    ingress_certificate_gauge(metrics, None)
    assert INGRESS_CERT not in metrics.exposition().decode()
