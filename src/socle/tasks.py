"""Background tasks: spawn them by name, never lose their failures.

A bare ``asyncio.create_task`` whose result nobody awaits swallows its exception until the
task is garbage-collected ("Task exception was never retrieved"), and a set kept only to hold
references hides it for good. Every long-lived part of the control plane (engine, rollout
controller, runtime driver, secrets leases, and later gitops, network, observe) therefore
spawns through a :class:`TaskGroup` taken from one :class:`TaskMonitor`, which

- logs a failed task with its traceback, once, under its name;
- keeps the count of failures and the last one (name, time, error), so that
  ``/api/v1/status`` and ``socle status`` can show them ("control plane" section);
- cancels and awaits a group's tasks on :meth:`TaskGroup.close`, so that a stopped component
  leaves nothing running.

Loops that catch their own errors and retry (a reconcile that fails, a watcher that backs
off) call :meth:`TaskMonitor.report` so that the failure is visible in the same place.

Ground floor: imports nothing of Socle, so that every subsystem may use it. The monitor is an
object passed in (the server builds one), not a global; a part built without one gets a
private monitor, which still logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger("socle.tasks")

T = TypeVar("T")

MAX_ERROR_CHARS = 500
"""An error message is cut to this length in status (the log keeps the whole traceback)."""

MAX_KEPT = 100
"""Distinct tasks whose last failure is kept (the oldest is forgotten first)."""


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``awaitable``'s result, or :class:`TimeoutError` after ``seconds`` (None: no limit).

    Use this, never ``asyncio.wait_for``: on Python 3.11 ``wait_for`` loses a cancellation
    that arrives just as the awaited thing completes (the wait returns its result instead),
    so a ``while True`` loop around it can outlive :meth:`TaskGroup.close` for ever -- seen
    as an ingress whose stop never returned once an ACME renewal woke it at that instant.
    ``asyncio.timeout`` counts cancellations and never swallows one."""
    async with asyncio.timeout(seconds):
        return await awaitable


@dataclass(frozen=True)
class Failure:
    """The last failure of a background task, as status shows it."""

    task: str
    time: float
    error: str

    def to_dict(self) -> dict[str, object]:
        return {"task": self.task, "time": self.time, "error": self.error}


def describe(exc: BaseException) -> str:
    """``Type: message``, one line, bounded: what status shows of an exception."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line[:MAX_ERROR_CHARS]


class TaskMonitor:
    """Failures of every background task of one control plane."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._failures = 0
        self._last: Failure | None = None
        self._by_task: dict[str, Failure] = {}
        self._groups: list[TaskGroup] = []

    def group(self, owner: str) -> TaskGroup:
        """A new group of tasks named ``owner/...`` (one per component or loop)."""
        group = TaskGroup(owner, self)
        self._groups.append(group)
        return group

    def report(self, task: str, exc: BaseException, *, message: str | None = None) -> None:
        """Record (and log with its traceback) a failure that the caller handled itself."""
        failure = Failure(task, self._clock(), describe(exc))
        self._failures += 1
        self._last = failure
        self._by_task.pop(task, None)
        self._by_task[task] = failure
        while len(self._by_task) > MAX_KEPT:
            del self._by_task[next(iter(self._by_task))]
        log.error(
            "%s: %s",
            task,
            message or "background task failed",
            exc_info=(type(exc), exc, exc.__traceback__),
        )

    @property
    def failures(self) -> int:
        return self._failures

    @property
    def last_failure(self) -> Failure | None:
        return self._last

    def running(self) -> int:
        return sum(len(g) for g in self._groups)

    def to_dict(self) -> dict[str, object]:
        """What ``/api/v1/status`` shows under ``control_plane.tasks``."""
        recent = sorted(self._by_task.values(), key=lambda f: f.time, reverse=True)[:10]
        return {
            "running": self.running(),
            "failures": self._failures,
            "last_failure": self._last.to_dict() if self._last else None,
            "recent_failures": [f.to_dict() for f in recent],
        }


class TaskGroup:
    """The background tasks of one owner; failures go to the monitor."""

    def __init__(self, owner: str, monitor: TaskMonitor | None = None) -> None:
        self.owner = owner
        self.monitor = monitor if monitor is not None else TaskMonitor()
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run ``coro`` in the background as ``owner/name``; its failure is logged and kept."""
        full = f"{self.owner}/{name}"
        task = asyncio.get_running_loop().create_task(coro, name=full)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.monitor.report(task.get_name(), exc)

    async def close(self) -> None:
        """Cancel every task of the group and wait for them to end."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)

    async def wait(self) -> None:
        """Wait for the tasks running now (and those they spawn) to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


__all__ = ["Failure", "TaskGroup", "TaskMonitor", "describe", "within"]
