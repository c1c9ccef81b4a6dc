"""Scheduled volume backups: due once per matching minute, newest ``keep`` kept, failures
recorded without stopping the others. The clock is faked; the disk is real."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from socle.backup.operations import verify_backup
from socle.backup.schedule import VolumeBackupPlan, VolumeBackupScheduler
from socle.runtime.local.volumes import LocalVolumeProvider

MiB = 1024 * 1024


def at(day: int, hour: int, minute: int, second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, second, tzinfo=dt.UTC)


async def test_scheduled_backups_run_when_due_and_keep_the_newest(tmp_path: Path) -> None:
    provider = LocalVolumeProvider(tmp_path / "volumes", enforce=False)
    info = await provider.ensure("notes", 4 * MiB)
    (info.path / "notes.txt").write_text("v1")
    await provider.ensure("other", 4 * MiB)
    plans = [
        VolumeBackupPlan("notes", "0 3 * * *", keep=2),
        VolumeBackupPlan("other", "*/30 * * * *", keep=1),
        VolumeBackupPlan("ghost", "0 3 * * *", keep=1),  # no such volume: recorded, not fatal
        VolumeBackupPlan("notes-bad", "61 * * * *", keep=1),
    ]

    async def current() -> Sequence[VolumeBackupPlan]:
        return plans

    scheduler = VolumeBackupScheduler(provider, tmp_path / "backups", current)
    made = await scheduler.run_due(at(1, 3, 0, 5))
    assert sorted(p.parent.name for p in made) == ["notes", "other"]
    assert "ghost" in scheduler.failures and "notes-bad" in scheduler.failures
    assert await scheduler.run_due(at(1, 3, 0, 40)) == []  # same minute: not again
    assert await scheduler.run_due(at(1, 3, 1)) == []  # not due
    for day in (2, 3):
        (info.path / "notes.txt").write_text(f"v{day}")
        assert len(await scheduler.run_due(at(day, 3, 0))) == 2
    notes_dir = tmp_path / "backups" / "volumes" / "notes"
    kept = sorted(p.name for p in notes_dir.iterdir())
    assert kept == ["notes-20261102T030000Z.tar", "notes-20261103T030000Z.tar"]
    assert len(list((tmp_path / "backups" / "volumes" / "other").iterdir())) == 1
    for name in kept:
        manifest = await verify_backup(notes_dir / name)
        assert manifest.scope == "volume" and list(manifest.volumes) == ["notes"]
    assert (notes_dir / kept[-1]).stat().st_mode & 0o777 == 0o600
    assert scheduler.last["notes"] == notes_dir / kept[-1]


async def test_the_component_starts_and_stops(tmp_path: Path) -> None:
    provider = LocalVolumeProvider(tmp_path / "volumes", enforce=False)
    await provider.ensure("v", 2 * MiB)
    asked = asyncio.Event()

    async def plans() -> Sequence[VolumeBackupPlan]:
        asked.set()
        return [VolumeBackupPlan("v", "* * * * *", keep=1)]

    scheduler = VolumeBackupScheduler(provider, tmp_path / "backups", plans)
    assert scheduler.name == "volume-backups"
    await scheduler.start()
    await asyncio.wait_for(asked.wait(), 30)
    await scheduler.stop()
    await scheduler.stop()  # idempotent
