"""A temp-dir VolumeProvider: a small real implementation of our own interface, for
testing the Volume handler and App mounts without loop devices. Sizes are reported, never
enforced (like the local provider on a host without loop devices)."""

from __future__ import annotations

import shutil
from pathlib import Path

from socle.errors import ConfigError
from socle.runtime.volumes import VolumeInfo


class DirVolumes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sizes: dict[str, int] = {}
        self.retained: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def _info(self, name: str) -> VolumeInfo:
        path = self.root / name
        used = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        size = self.sizes[name]
        return VolumeInfo(
            name=name,
            path=path,
            size_bytes=size,
            used_bytes=used,
            enforced=False,
            warning="size not enforced (test provider)",
            retained=name in self.retained,
        )

    async def ensure(self, name: str, size_bytes: int) -> VolumeInfo:
        self.calls.append(("ensure", name))
        path = self.root / name
        if name in self.sizes and size_bytes < self._info(name).used_bytes:
            raise ConfigError(f"volume {name}: cannot shrink below the data in use")
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.sizes[name] = size_bytes
        self.retained.discard(name)
        return self._info(name)

    async def info(self, name: str) -> VolumeInfo | None:
        return self._info(name) if name in self.sizes else None

    async def list(self) -> list[VolumeInfo]:
        return [self._info(n) for n in sorted(self.sizes)]

    async def release(self, name: str, *, purge: bool) -> None:
        self.calls.append(("purge" if purge else "retain", name))
        if name not in self.sizes:
            return
        if purge:
            shutil.rmtree(self.root / name, ignore_errors=True)
            del self.sizes[name]
            self.retained.discard(name)
        else:
            self.retained.add(name)
