"""Restart backoff arithmetic."""

from __future__ import annotations

import pytest

from socle.runtime.local import BackoffPolicy


def test_first_restart_is_immediate_then_doubles_to_the_cap() -> None:
    policy = BackoffPolicy()
    delays = [policy.delay(n) for n in range(10)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_huge_streaks_do_not_overflow() -> None:
    assert BackoffPolicy().delay(10_000) == 30.0


@pytest.mark.parametrize(("streak", "crashloop"), [(0, False), (4, False), (5, True), (9, True)])
def test_crashloop_after_five_restarts(streak: int, crashloop: bool) -> None:
    assert BackoffPolicy().is_crashloop(streak) is crashloop


def test_stability_resets_after_ten_seconds_ready() -> None:
    policy = BackoffPolicy()
    assert not policy.stable(None, 100.0)
    assert not policy.stable(95.0, 100.0)
    assert policy.stable(90.0, 100.0)


def test_custom_policy() -> None:
    policy = BackoffPolicy(base=0.1, factor=3, cap=1.0)
    assert [policy.delay(n) for n in range(5)] == pytest.approx([0.0, 0.1, 0.3, 0.9, 1.0])
