"""Fixtures shared by every test tree, and the test tiers."""

from __future__ import annotations

from pathlib import Path

import pytest

_UNIT = Path(__file__).parent / "unit"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tiers by place: ``tests/unit`` is the fast tier (pure, no servers or processes), the
    rest is ``slow``. A unit test that needs more marks itself ``slow``."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            continue
        if Path(str(item.path)).is_relative_to(_UNIT):
            item.add_marker(pytest.mark.fast)
        else:
            item.add_marker(pytest.mark.slow)
