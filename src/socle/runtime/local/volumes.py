"""The local volume provider: one folder per volume under ``SOCLE_HOME/volumes``.

Layout (everything owner-only)::

    volumes/<name>/               0700
    volumes/<name>/volume.json    0600  size, created, enforced, retained
    volumes/<name>/image.ext4           sparse ext4 image (enforced volumes only)
    volumes/<name>/data/                the data root bound into instances (Mount.source)

Why a loop-mounted ext4 image per volume: it is the one way to make ``size`` a real limit on
any host filesystem without quotas (a write beyond it fails with ENOSPC inside the app, and
nothing else on the host fills up). It needs root, loop devices and ``mkfs.ext4``
(e2fsprogs). Where any of that is missing, the volume is a plain folder: its usage is
measured (walked in a thread, cached for :data:`USAGE_CACHE_SECONDS`) and reported with a
warning, never enforced.

Why resizing may need the apps stopped: growing a mounted ext4 needs ``CAP_SYS_RESOURCE``
(some hosts do not give it to root); without it, and always for shrinking, the image is
resized unmounted, which is only safe when no sandbox still holds a copy of the mount, so it
is refused until the apps that mount the volume are stopped.

Why mounts are re-established by :meth:`LocalVolumeProvider.start`: a reboot or a crash
drops them while ``volume.json`` and the image stay; an already mounted image is left alone,
so calling it twice, or while apps use the volume, is safe.

Errors: a bad name or size, or a shrink below the data in use, is a
:class:`~socle.errors.ConfigError`; a failing ``mkfs``/``mount``/``resize2fs`` is a
:class:`~socle.errors.RuntimeDriverError` naming the command and its output.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
import shutil
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socle.errors import ConfigError, RuntimeDriverError
from socle.fs import write_private
from socle.model.app import NAME_RE
from socle.runtime.volumes import VolumeInfo

log = logging.getLogger(__name__)

META_FILE = "volume.json"
IMAGE_FILE = "image.ext4"
DATA_DIR = "data"
META_VERSION = 1
MIN_SIZE = 1024 * 1024
"""The smallest volume: an ext4 image needs room for its own metadata."""
USAGE_CACHE_SECONDS = 5.0
MOUNT_OPTIONS = "loop,nodev,nosuid"
TOOL_TIMEOUT = 600.0


def check_volume_name(name: str) -> str:
    """A volume name becomes a folder name: DNS-label rules, so no ``..``, ``/`` or NUL."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError(
            f"invalid volume name {name!r}",
            hint="use 1-63 lowercase letters, digits and '-', starting and ending with a "
            "letter or digit",
        )
    return name


@dataclass
class _Meta:
    size_bytes: int
    created: float
    enforced: bool
    retained: bool = False

    def to_json(self) -> bytes:
        return (
            json.dumps(
                {
                    "version": META_VERSION,
                    "size_bytes": self.size_bytes,
                    "created": self.created,
                    "enforced": self.enforced,
                    "retained": self.retained,
                },
                indent=1,
                sort_keys=True,
            ).encode()
            + b"\n"
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Meta:
        if data.get("version") != META_VERSION:
            raise ValueError(f"unknown volume metadata version {data.get('version')!r}")
        size = data["size_bytes"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError("size_bytes must be a positive integer")
        return cls(
            size_bytes=size,
            created=float(data["created"]),
            enforced=bool(data["enforced"]),
            retained=bool(data.get("retained", False)),
        )


def enforcement_unavailable() -> str | None:
    """Why sizes cannot be enforced on this host (None when they can)."""
    if os.geteuid() != 0:
        return "not running as root (loop mounts need it)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control is missing)"
    for tool in ("mkfs.ext4", "resize2fs", "e2fsck", "mount", "umount", "losetup", "findmnt"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package e2fsprogs / mount)"
    return None


def _run(argv: list[str]) -> str:
    """Run a system tool; its failure becomes a RuntimeDriverError quoting its output."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeDriverError(f"{argv[0]} failed: {exc}") from exc
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-500:]
        raise RuntimeDriverError(
            f"`{' '.join(argv)}` exited {done.returncode}: {output}",
            hint="check the host's loop devices and free disk space",
        )
    return done.stdout


def tree_usage(root: Path) -> int:
    """Bytes allocated by the files under ``root`` (symlinks not followed, each inode once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
    return total


class LocalVolumeProvider:
    """:class:`~socle.runtime.volumes.VolumeProvider` on this host's disk.

    ``enforce``: None picks loop-mounted ext4 images when the host allows it
    (:func:`enforcement_unavailable`), False forces plain folders, True refuses to work
    without enforcement.
    """

    def __init__(self, volumes_dir: Path, *, enforce: bool | None = None) -> None:
        self.dir = volumes_dir.absolute()
        reason = enforcement_unavailable()
        if enforce is True and reason is not None:
            raise ConfigError(f"volume sizes cannot be enforced: {reason}")
        self._unenforced_reason: str | None = (
            "plain folders were asked for" if enforce is False else reason
        )
        self._lock = threading.Lock()
        self._usage: dict[str, tuple[float, int]] = {}

    # -- the protocol ------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Mount every enforced volume that is not mounted (after a reboot or a crash).

        Idempotent: mounted images are left alone. Returns the names mounted now; a volume
        that cannot be mounted is logged, not fatal (the others still come back)."""
        return await asyncio.to_thread(self._start)

    async def ensure(self, name: str, size_bytes: int) -> VolumeInfo:
        check_volume_name(name)
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, int):
            raise ConfigError(f"volume {name}: size must be a number of bytes")
        if size_bytes < MIN_SIZE:
            raise ConfigError(
                f"volume {name}: size {size_bytes} bytes is below the minimum of 1Mi",
                hint="ask for at least 1Mi",
            )
        return await asyncio.to_thread(self._ensure, name, size_bytes)

    async def info(self, name: str) -> VolumeInfo | None:
        check_volume_name(name)
        return await asyncio.to_thread(self._info, name)

    async def list(self) -> list[VolumeInfo]:
        return await asyncio.to_thread(self._list)

    async def release(self, name: str, *, purge: bool) -> None:
        check_volume_name(name)
        await asyncio.to_thread(self._release, name, purge)

    # -- paths -------------------------------------------------------------------------

    def volume_dir(self, name: str) -> Path:
        return self.dir / check_volume_name(name)

    def data_path(self, name: str) -> Path:
        """The folder that holds the volume's files (bound into instances)."""
        return self.volume_dir(name) / DATA_DIR

    def names(self) -> builtins.list[str]:
        """Every volume with readable metadata, sorted."""
        if not self.dir.is_dir():
            return []
        return sorted(
            entry.name
            for entry in os.scandir(self.dir)
            if NAME_RE.fullmatch(entry.name) and (Path(entry.path) / META_FILE).is_file()
        )

    def size_of(self, name: str) -> int | None:
        meta = self._read_meta(name)
        return meta.size_bytes if meta else None

    # -- the work, in a thread ---------------------------------------------------------

    def _start(self) -> builtins.list[str]:
        mounted: builtins.list[str] = []
        with self._lock:
            for name in self.names():
                meta = self._read_meta(name)
                if meta is None or not meta.enforced:
                    continue
                if os.path.ismount(self.data_path(name)):
                    continue
                try:
                    self._mount(name)
                except RuntimeDriverError as exc:
                    log.error("volume %s: cannot mount its image: %s", name, exc.message)
                    continue
                mounted.append(name)
        if mounted:
            log.info("volumes mounted again: %s", ", ".join(mounted))
        return mounted

    def _read_meta(self, name: str) -> _Meta | None:
        path = self.volume_dir(name) / META_FILE
        try:
            return _Meta.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeDriverError(
                f"volume {name}: unreadable metadata {path}: {exc}",
                hint="restore the file from a backup, or purge the volume",
            ) from exc

    def _write_meta(self, name: str, meta: _Meta) -> None:
        write_private(self.volume_dir(name) / META_FILE, meta.to_json(), durable=True)

    def _ensure(self, name: str, size: int) -> VolumeInfo:
        with self._lock:
            meta = self._read_meta(name)
            if meta is None:
                meta = self._create(name, size)
            else:
                if meta.enforced and not os.path.ismount(self.data_path(name)):
                    self._mount(name)
                if size != meta.size_bytes:
                    self._resize(name, meta, size)
                    meta.size_bytes = size
                if meta.retained:
                    log.info("volume %s: taken back with its data", name)
                meta.retained = False
                self._write_meta(name, meta)
            self._usage.pop(name, None)
            return self._describe(name, meta)

    def _create(self, name: str, size: int) -> _Meta:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        vdir = self.volume_dir(name)
        vdir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(vdir, 0o700)
        (vdir / DATA_DIR).mkdir(mode=0o700, exist_ok=True)
        enforced = False
        if self._unenforced_reason is None:
            try:
                self._make_image(vdir / IMAGE_FILE, size)
                enforced = True
            except RuntimeDriverError as exc:
                (vdir / IMAGE_FILE).unlink(missing_ok=True)
                log.warning("volume %s: size not enforced, ext4 image failed: %s", name, exc)
        meta = _Meta(size_bytes=size, created=time.time(), enforced=enforced)
        if enforced:
            try:
                self._mount(name)
            except RuntimeDriverError:
                (vdir / IMAGE_FILE).unlink(missing_ok=True)
                raise
        # Metadata last: a crash before this line leaves a folder `names()` ignores and
        # the next ensure() redoes from scratch.
        self._write_meta(name, meta)
        return meta

    def _make_image(self, image: Path, size: int) -> None:
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)  # sparse: takes no space until written
        finally:
            os.close(fd)
        # -m 0: no blocks reserved for root, so the app gets the whole size.
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", image.parent.name[:16], str(image)])

    def _mount(self, name: str) -> None:
        data = self.data_path(name)
        data.mkdir(mode=0o700, exist_ok=True)
        _run(["mount", "-o", MOUNT_OPTIONS, str(self.volume_dir(name) / IMAGE_FILE), str(data)])

    def _loop_device(self, name: str) -> str:
        source = _run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(self.data_path(name))])
        device = source.strip().splitlines()[0] if source.strip() else ""
        if not device.startswith("/dev/loop"):
            raise RuntimeDriverError(f"volume {name}: not mounted from a loop device ({device!r})")
        return device

    def _resize(self, name: str, meta: _Meta, size: int) -> None:
        used = self._used(name, meta, fresh=True)
        if size < used:
            raise ConfigError(
                f"volume {name}: cannot shrink to {size} bytes, {used} bytes are in use",
                hint="delete data first, or keep the current size",
            )
        if not meta.enforced:
            return
        image = self.volume_dir(name) / IMAGE_FILE
        if size > meta.size_bytes:
            os.truncate(image, size)
            device = self._loop_device(name)
            _run(["losetup", "-c", device])  # the loop device sees the new length
            try:
                _run(["resize2fs", device])  # online grow of the mounted ext4
                return
            except RuntimeDriverError as exc:
                # Online resizing needs CAP_SYS_RESOURCE, which some hosts (containers,
                # this CI's VM) do not give root: grow it offline instead.
                log.info("volume %s: online grow refused (%s); growing offline", name, exc)
        self._offline_resize(name, image, size)

    def _offline_resize(self, name: str, image: Path, size: int) -> None:
        """Unmount, check, resize the image and mount it again.

        Only when nothing else holds the file system: a sandbox's bind mount keeps the loop
        device alive after our unmount, and resizing under a live mount corrupts it. So the
        loop device must be gone after unmounting, or the resize is refused."""
        data = self.data_path(name)
        _run(["umount", str(data)])
        try:
            if _run(["losetup", "-j", str(image)]).strip():
                raise ConfigError(
                    f"volume {name}: cannot resize while running instances use it",
                    hint="stop the apps that mount it (or scale them to 0), then apply again",
                )
            fsck = subprocess.run(
                ["e2fsck", "-f", "-p", str(image)],
                capture_output=True,
                text=True,
                timeout=TOOL_TIMEOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if fsck.returncode not in (0, 1):  # 1: errors corrected
                raise RuntimeDriverError(
                    f"volume {name}: e2fsck exited {fsck.returncode}: "
                    f"{(fsck.stdout + fsck.stderr).strip()[-500:]}"
                )
            if size > os.stat(image).st_size:
                os.truncate(image, size)
            _run(["resize2fs", str(image), f"{size // 1024}K"])
            if size < os.stat(image).st_size:
                os.truncate(image, size)
        finally:
            self._mount(name)

    def _describe(self, name: str, meta: _Meta) -> VolumeInfo:
        used = self._used(name, meta)
        warning = None
        if not meta.enforced:
            reason = self._unenforced_reason or "the ext4 image could not be made"
            warning = f"size not enforced ({reason}); usage is measured only"
        if used > meta.size_bytes:
            over = f"uses {used} bytes, more than its size of {meta.size_bytes}"
            warning = f"{warning}; {over}" if warning else over
        return VolumeInfo(
            name=name,
            path=self.data_path(name),
            size_bytes=meta.size_bytes,
            used_bytes=used,
            enforced=meta.enforced,
            warning=warning,
            retained=meta.retained,
        )

    def _used(self, name: str, meta: _Meta, *, fresh: bool = False) -> int:
        data = self.data_path(name)
        if meta.enforced and os.path.ismount(data):
            st = os.statvfs(data)
            return (st.f_blocks - st.f_bfree) * st.f_frsize
        now = time.monotonic()
        cached = self._usage.get(name)
        if not fresh and cached is not None and now - cached[0] < USAGE_CACHE_SECONDS:
            return cached[1]
        used = tree_usage(data)
        self._usage[name] = (now, used)
        return used

    def _info(self, name: str) -> VolumeInfo | None:
        with self._lock:
            meta = self._read_meta(name)
            return None if meta is None else self._describe(name, meta)

    def _list(self) -> builtins.list[VolumeInfo]:
        with self._lock:
            out = []
            for name in self.names():
                meta = self._read_meta(name)
                if meta is not None:
                    out.append(self._describe(name, meta))
            return out

    def _release(self, name: str, purge: bool) -> None:
        with self._lock:
            vdir = self.volume_dir(name)
            meta = self._read_meta(name)
            if meta is None and not vdir.exists():
                return
            if not purge:
                if meta is not None and not meta.retained:
                    meta.retained = True
                    self._write_meta(name, meta)
                    log.info("volume %s: retained with its data until a purge", name)
                return
            data = self.data_path(name)
            if os.path.ismount(data):
                try:
                    _run(["umount", str(data)])
                except RuntimeDriverError:
                    # Busy (a process sits in it): detach now, the kernel frees it later.
                    _run(["umount", "-l", str(data)])
            if os.path.ismount(data):
                raise RuntimeDriverError(f"volume {name}: {data} is still mounted")
            shutil.rmtree(vdir)
            self._usage.pop(name, None)
            log.info("volume %s: purged", name)


__all__ = ["LocalVolumeProvider", "check_volume_name", "enforcement_unavailable", "tree_usage"]
