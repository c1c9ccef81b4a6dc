"""The background-task helper: failures are logged with a traceback, kept and counted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable

import pytest

from socle.tasks import MAX_ERROR_CHARS, TaskMonitor, describe, within


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def boom(message: str) -> None:
    await asyncio.sleep(0)
    raise RuntimeError(message)


async def test_a_failed_task_is_logged_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    monitor = TaskMonitor(clock=clock)
    group = monitor.group("engine")
    task = group.spawn(boom("disk on fire"), "apply:3")
    assert task.get_name() == "engine/apply:3"
    with caplog.at_level(logging.ERROR, logger="socle.tasks"):
        await group.wait()
    assert monitor.failures == 1
    last = monitor.last_failure
    assert last is not None
    assert (last.task, last.time, last.error) == (
        "engine/apply:3",
        1000.0,
        "RuntimeError: disk on fire",
    )
    record = next(r for r in caplog.records if "engine/apply:3" in r.getMessage())
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert monitor.to_dict()["running"] == 0
    assert len(group) == 0


async def test_success_and_cancellation_are_not_failures() -> None:
    monitor = TaskMonitor()
    group = monitor.group("runtime")
    done = group.spawn(asyncio.sleep(0), "quick")
    forever = group.spawn(asyncio.sleep(3600), "forever")
    await done
    assert monitor.running() == 1
    await group.close()
    assert forever.cancelled()
    assert monitor.failures == 0 and monitor.last_failure is None
    assert monitor.running() == 0


async def test_the_last_failure_wins_and_recent_ones_are_listed() -> None:
    clock = Clock()
    monitor = TaskMonitor(clock=clock)
    group = monitor.group("controller")
    for n in range(3):
        clock.now += 1
        group.spawn(boom(f"n{n}"), f"reconcile:app{n}")
        await group.wait()
    shown = monitor.to_dict()
    assert shown["failures"] == 3
    assert shown["last_failure"] == {
        "task": "controller/reconcile:app2",
        "time": 1003.0,
        "error": "RuntimeError: n2",
    }
    recent = shown["recent_failures"]
    assert isinstance(recent, list)
    assert [f["task"] for f in recent] == [f"controller/reconcile:app{n}" for n in (2, 1, 0)]


async def test_report_records_a_handled_failure() -> None:
    monitor = TaskMonitor()
    try:
        raise ValueError("bad\nsecond line")
    except ValueError as exc:
        monitor.report("controller/reconcile:web", exc, message="retrying")
    assert monitor.last_failure is not None
    assert monitor.last_failure.error == "ValueError: bad"


def test_describe_is_one_bounded_line() -> None:
    assert describe(KeyError()) == "KeyError"
    assert len(describe(RuntimeError("x" * 10_000))) == MAX_ERROR_CHARS


async def test_close_waits_for_tasks_spawned_while_closing() -> None:
    monitor = TaskMonitor()
    group = monitor.group("engine")
    seen: list[str] = []

    async def parent() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            group.spawn(child(), "child")

    async def child() -> None:
        seen.append("child ran")
        await asyncio.sleep(3600)

    group.spawn(parent(), "parent")
    await asyncio.sleep(0)
    await group.close()
    assert len(group) == 0


async def _loop_ends_when_cancelled_as_it_wakes(
    waiter: Callable[[Awaitable[bool], float], Awaitable[bool]],
) -> bool:
    """A ``while True`` loop waiting for an event with a timeout, cancelled in the very
    iteration the event is set (what an ingress stop met when an ACME renewal woke it)."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await waiter(event.wait(), 10)
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    event.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    if not done:
        task.cancel()  # asyncio.wait_for swallowed the first one: end the loop now
        await asyncio.wait({task}, timeout=2)
    return bool(done)


async def test_within_never_loses_a_cancellation() -> None:
    assert await _loop_ends_when_cancelled_as_it_wakes(within)
    # Python 3.11's asyncio.wait_for loses it (why the project bans wait_for in src/).
    if sys.version_info < (3, 12):
        assert not await _loop_ends_when_cancelled_as_it_wakes(asyncio.wait_for)


async def test_within_times_out_and_returns_results() -> None:
    assert await within(asyncio.sleep(0, "done"), 1) == "done"
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(5), 0.01)
