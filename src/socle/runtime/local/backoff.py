"""Restart backoff: how long to wait before the next restart, and when it is a crash loop.

Kept as plain arithmetic on a counter so that it is trivially unit-tested and so that tests
of the driver can pass a faster policy instead of waiting for real backoff delays.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff: first restart immediate, then ``base``, ``base*factor``... capped.

    ``streak`` below is the number of restarts already done since the instance was last
    stable (ready, or running without a health check, for ``reset_after`` seconds).
    """

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 10.0
    """Seconds of stable running after which the streak starts again from zero."""
    crashloop_after: int = 5
    """Restarts in one streak after which the instance is reported as CRASHLOOP."""

    def delay(self, streak: int) -> float:
        """Seconds to wait before restart number ``streak + 1`` of the current streak."""
        if streak <= 0:
            return 0.0
        # min() before the power would overflow for a long crash loop: cap the exponent.
        exponent = min(streak - 1, 64)
        return min(self.cap, self.base * self.factor**exponent)

    def is_crashloop(self, streak: int) -> bool:
        return streak >= self.crashloop_after

    def stable(self, ready_since: float | None, now: float) -> bool:
        """Whether an instance ready since ``ready_since`` ran long enough to reset the streak."""
        return ready_since is not None and now - ready_since >= self.reset_after
