"""Scheduled backups of volumes (``Volume`` ``spec.backup: {schedule, keep}``).

A component with ``start``/``stop``: once a minute (UTC) it asks ``plans()`` which volumes
have a schedule (the engine's Volume objects; the server wires the callable), and backs up
each volume whose schedule matches that minute into ``backups_dir/volumes/<name>/``, keeping
the newest ``keep`` archives. Backups run one after another, so a burst of schedules at
03:00 does not put every volume's disk reads at once on the host.

A failing backup is logged and kept in :attr:`VolumeBackupScheduler.failures` (for
``socle status``), and does not stop the others or the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from socle.backup.operations import backup_volume
from socle.errors import SocleError
from socle.model.cron import Cron, parse
from socle.runtime.local.volumes import LocalVolumeProvider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeBackupPlan:
    """One volume's schedule, as its manifest says."""

    volume: str
    schedule: str
    keep: int = 7


Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class VolumeBackupScheduler:
    """Runs :func:`~socle.backup.operations.backup_volume` on each volume's schedule.

    A control-plane component: ``name``, ``start()``, ``stop()``."""

    name = "volume-backups"

    def __init__(
        self,
        provider: LocalVolumeProvider,
        backups_dir: Path,
        plans: Callable[[], Awaitable[Sequence[VolumeBackupPlan]]],
        *,
        clock: Clock = _utc_now,
    ) -> None:
        self.provider = provider
        self.dir = backups_dir / "volumes"
        self._plans = plans
        self._clock = clock
        self._crons: dict[str, Cron] = {}
        self._done: dict[str, dt.datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self.failures: dict[str, str] = {}
        """Volume name → why its last scheduled backup failed (cleared by a success)."""
        self.last: dict[str, Path] = {}
        """Volume name → its newest scheduled archive."""

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="socle-volume-backups")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _cron(self, text: str) -> Cron:
        cron = self._crons.get(text)
        if cron is None:
            cron = self._crons[text] = parse(text)
        return cron

    async def run_due(self, now: dt.datetime | None = None) -> list[Path]:
        """Back up every volume whose schedule matches the minute of ``now`` (once per
        minute per volume, however often this is called); returns the archives made."""
        minute = (now or self._clock()).astimezone(dt.UTC).replace(second=0, microsecond=0)
        made: list[Path] = []
        for plan in await self._plans():
            try:
                due = self._cron(plan.schedule).matches(minute)
            except ValueError as exc:
                self.failures[plan.volume] = f"bad schedule {plan.schedule!r}: {exc}"
                continue
            if not due or self._done.get(plan.volume) == minute:
                continue
            self._done[plan.volume] = minute
            try:
                result = await backup_volume(
                    self.provider,
                    plan.volume,
                    self.dir / plan.volume,
                    keep=max(1, plan.keep),
                    now=minute,
                )
            except (SocleError, OSError) as exc:
                reason = getattr(exc, "message", None) or str(exc)
                self.failures[plan.volume] = reason
                log.error("scheduled backup of volume %s failed: %s", plan.volume, reason)
                continue
            self.failures.pop(plan.volume, None)
            self.last[plan.volume] = result.path
            made.append(result.path)
            log.info("volume %s backed up to %s", plan.volume, result.path)
        return made

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_due()
            except Exception:  # a bug here must not end scheduled backups for good
                log.exception("volume backup scheduler failed; trying again next minute")
            now = self._clock()
            next_minute = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
            await asyncio.sleep(max(0.5, (next_minute - now).total_seconds() + 0.1))


__all__ = ["VolumeBackupPlan", "VolumeBackupScheduler"]
