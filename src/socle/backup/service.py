"""Backups the control plane makes for API callers (``POST /api/v1/backups``).

Why through the control plane at all, when ``socle backup create`` works on the home
directly: an operator who reaches Socle only through its API (``SOCLE_ADDR``, another
machine) can still get a consistent backup, written on the control plane's host under
``SOCLE_HOME/backups`` with a name Socle picks. Callers never choose a path: an API token
must not become a way to write files anywhere the control plane can.

One backup at a time: a second request while one runs is a conflict (409), not a queue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from socle.backup.operations import BackupResult, create_backup
from socle.errors import ConflictError
from socle.runtime.local.volumes import LocalVolumeProvider
from socle.settings import Settings


class HomeBackups:
    def __init__(self, settings: Settings, provider: LocalVolumeProvider | None = None) -> None:
        self._settings = settings
        self._provider = provider
        self._lock = asyncio.Lock()

    @property
    def folder(self) -> Path:
        return self._settings.backups_dir

    async def create(self) -> BackupResult:
        if self._lock.locked():
            raise ConflictError(
                "a backup is already being made",
                hint="wait for it to finish (GET /api/v1/backups lists the archives)",
            )
        async with self._lock:
            return await create_backup(self._settings, None, provider=self._provider)

    async def list(self) -> list[dict[str, object]]:
        """The home's archives (``socle-*.tar``), newest first."""

        def run() -> list[dict[str, object]]:
            if not self.folder.is_dir():
                return []
            out: list[dict[str, object]] = []
            for path in self.folder.glob("socle-*.tar"):
                st = path.stat()
                modified = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).isoformat()
                out.append(
                    {"name": path.name, "path": str(path), "size": st.st_size, "modified": modified}
                )
            return sorted(out, key=lambda e: str(e["name"]), reverse=True)

        return await asyncio.to_thread(run)


__all__ = ["HomeBackups"]
