"""The log API's time window: what the store's 64-bit nanosecond timestamps can hold."""

from __future__ import annotations

from socle.api.routes.logs import _since, _window
from socle.observe.logs.model import NS


def test_a_huge_since_starts_at_the_epoch() -> None:
    start, end = _window(None, None, "99999999999999999999", now=1700000000 * NS)
    assert (start, end) == (0, 1700000000 * NS)


def test_a_tail_since_long_ago_starts_at_the_epoch() -> None:
    assert _since("99999999999999999999", now=1700000000 * NS) == 0
    assert _since("1h", now=1700000000 * NS) == (1700000000 - 3600) * NS
