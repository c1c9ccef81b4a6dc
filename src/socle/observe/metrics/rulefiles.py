"""One writer for Prometheus' rule files: changes coalesce and the last state always wins.

Applies that change ``AlertRule`` or ``SLO`` objects call :meth:`RuleWriter.changed` (a
plain callback, from the engine's commit). That only raises a "dirty" flag and wakes the
single writer task; the writer reads the rule files *when it runs*, not when it was told,
so

- any number of changes in a burst cost one write (plus one more for the changes that
  arrive while a write is under way), never one task each racing the others;
- a write never ends with older content than a change it was told about: the flag is
  cleared before the files are read, so a change during a write makes one more pass;
- changes heard before the writer is running (an apply that lands while Prometheus is still
  starting) are kept in the flag and written as soon as it runs.

A failed write (promtool refuses a file, a check times out on a loaded machine, the reload
fails while Prometheus restarts) is logged with its traceback and recorded in the task
monitor under ``prometheus/rules`` (``socle status`` shows it), kept in :meth:`to_dict`
(the component's status), and tried again with a growing delay, at once when something
changes. The live rule files are only ever replaced by a set that promtool accepted, so
Prometheus keeps running with the previous rules meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from socle.tasks import TaskGroup, describe, within

log = logging.getLogger("socle.observe")

RETRY_FIRST = 1.0
"""Seconds before the first retry of a failed write (doubled up to :data:`RETRY_MAX`)."""
RETRY_MAX = 60.0
TASK = "rules"
"""The writer's task name in its group (``prometheus/rules`` in status)."""


class RuleWriter:
    """The rule files' single writer (see the module docstring)."""

    def __init__(
        self,
        files: Callable[[], Mapping[str, str]],
        write: Callable[[Mapping[str, str]], Awaitable[None]],
        tasks: TaskGroup,
        *,
        clock: Callable[[], float] = time.time,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self._files = files
        """The rule files as they should be now (read without awaiting: one consistent view)."""
        self._write = write
        self._tasks = tasks
        self._clock = clock
        self._retry_first = retry_first
        self._retry_max = retry_max
        self._dirty = asyncio.Event()
        self._writing = False
        self._task: asyncio.Task[None] | None = None
        self.files: list[str] = []
        """Names of the rule files last written."""
        self.writes = 0
        self.written_at: float | None = None
        self.error: str | None = None
        """Why the last write failed (None once a write succeeds)."""
        self.failed_at: float | None = None

    def changed(self) -> None:
        """Something the rule files come from changed: write them again (soon, once)."""
        self._dirty.set()

    async def write_now(self) -> None:
        """Write the current rule files at once, in the caller (before Prometheus starts:
        a refusal fails the start, as a bad config does). Changes heard meanwhile stay
        pending for :meth:`run`."""
        self._dirty.clear()
        await self._pass()

    def run(self) -> None:
        """Start the writer task (once); changes heard before it are written first."""
        if self._task is None or self._task.done():
            self._task = self._tasks.spawn(self._loop(), TASK)

    @property
    def pending(self) -> bool:
        """Whether the rule files on disk may lag the applied objects: a change not
        written yet, a write under way, or a failed one waiting for its retry."""
        return self._dirty.is_set() or self._writing or self.error is not None

    async def _pass(self) -> None:
        files = dict(self._files())  # after the flag was cleared: later changes make a new pass
        self._writing = True
        try:
            await self._write(files)
        finally:
            self._writing = False
        self.files = sorted(files)
        self.writes += 1
        self.written_at = self._clock()
        if self.error is not None:
            log.info("Prometheus rule files written again after a failure (%s)", self.error)
        self.error = None

    async def _loop(self) -> None:
        delay = self._retry_first
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._pass()
            except Exception as exc:  # recorded, shown and retried: never silent
                self.error = describe(exc)
                self.failed_at = self._clock()
                self._tasks.monitor.report(
                    f"{self._tasks.owner}/{TASK}",
                    exc,
                    message="rule files NOT written, Prometheus keeps the previous ones "
                    f"(retry in {delay:g}s or at the next change)",
                )
                # Try again after a delay (Prometheus restarting, promtool slow under load),
                # at once if something changes meanwhile (maybe the fix).
                if not self._dirty.is_set():
                    with contextlib.suppress(TimeoutError):
                        await within(self._dirty.wait(), delay)
                self._dirty.set()
                delay = min(delay * 2, self._retry_max)
            else:
                delay = self._retry_first

    def to_dict(self) -> dict[str, object]:
        """The rule files' part of the component's status."""
        return {
            "files": list(self.files),
            "writes": self.writes,
            "written_at": self.written_at,
            "pending": self.pending,
            "error": self.error,
            "failed_at": self.failed_at,
        }


__all__ = ["RETRY_FIRST", "RETRY_MAX", "RuleWriter"]
