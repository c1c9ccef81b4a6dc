"""LocalVolumeProvider on the real host: loop-mounted ext4 as root, plain folders otherwise."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from socle.errors import ConfigError
from socle.runtime.local.volumes import LocalVolumeProvider, enforcement_unavailable

MiB = 1024 * 1024
needs_loop = pytest.mark.skipif(
    enforcement_unavailable() is not None,
    reason=f"size enforcement unavailable: {enforcement_unavailable()}",
)


def _unmount_all(root: Path) -> None:
    """Tests never leave loop mounts behind, whatever failed."""
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        target = line.split()[4]
        if target.startswith(str(root) + "/"):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)


@pytest.fixture
async def volumes_dir(tmp_path: Path) -> AsyncIterator[Path]:
    root = tmp_path / "volumes"
    try:
        yield root
    finally:
        _unmount_all(tmp_path)


def _fill(path: Path, total: int) -> int:
    """Write up to ``total`` bytes into ``path``; the bytes written before ENOSPC."""
    written = 0
    chunk = b"x" * MiB
    with open(path, "wb") as handle:
        try:
            while written < total:
                handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
                written += len(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            return written
    return written


@needs_loop
async def test_enforced_volume_refuses_writes_beyond_its_size(volumes_dir: Path) -> None:
    provider = LocalVolumeProvider(volumes_dir)
    info = await provider.ensure("data", 16 * MiB)
    assert info.enforced and info.warning is None
    assert os.path.ismount(info.path)
    assert (volumes_dir / "data").stat().st_mode & 0o777 == 0o700
    assert (volumes_dir / "data" / "volume.json").stat().st_mode & 0o777 == 0o600
    options = next(
        line.split()[5]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] == str(info.path)
    )
    assert "nodev" in options and "nosuid" in options
    written = _fill(info.path / "big", 64 * MiB)
    assert written < 16 * MiB  # ENOSPC came before the size was passed
    after = await provider.info("data")
    assert after is not None and after.used_bytes > 8 * MiB


RESIZE_SCRIPT = """
import asyncio, errno, os, sys
from pathlib import Path
from socle.errors import ConfigError
from socle.runtime.local.volumes import LocalVolumeProvider

MiB = 1024 * 1024

def fill(path, total):
    written = 0
    with open(path, "wb") as handle:
        try:
            while written < total:
                handle.write(b"x" * MiB); handle.flush(); os.fsync(handle.fileno())
                written += MiB
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return written

async def main(root):
    provider = LocalVolumeProvider(root)
    info = await provider.ensure("grow", 8 * MiB)
    (info.path / "keep.txt").write_text("kept")
    grown = await provider.ensure("grow", 32 * MiB)
    assert grown.size_bytes == 32 * MiB
    assert (grown.path / "keep.txt").read_text() == "kept"
    assert fill(grown.path / "more", 64 * MiB) > 16 * MiB
    try:
        await provider.ensure("grow", 4 * MiB)
        raise AssertionError("shrinking below the data in use was allowed")
    except ConfigError as exc:
        assert "in use" in exc.message, exc.message
    (grown.path / "more").unlink()
    shrunk = await provider.ensure("grow", 16 * MiB)
    assert (shrunk.path / "keep.txt").read_text() == "kept"
    assert os.path.ismount(shrunk.path)
    assert fill(shrunk.path / "again", 64 * MiB) < 16 * MiB
    print("resize ok")

asyncio.run(main(Path(sys.argv[1])))
"""


@needs_loop
def test_resizing_an_enforced_volume_keeps_data(volumes_dir: Path) -> None:
    """Run in a private mount namespace: on a shared host, a sandbox started meanwhile
    (``bwrap --ro-bind / /``) would hold a copy of the mount and, rightly, make the offline
    resize refuse (see the next test)."""
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-c",
            RESIZE_SCRIPT,
            str(volumes_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    assert "resize ok" in done.stdout


@needs_loop
async def test_an_offline_resize_is_refused_while_another_mount_holds_it(
    volumes_dir: Path,
) -> None:
    provider = LocalVolumeProvider(volumes_dir)
    info = await provider.ensure("busy", 16 * MiB)
    (info.path / "f").write_text("x")
    # Like a sandbox: another mount namespace holds a copy of the mount.
    holder = subprocess.Popen(["unshare", "--mount", "sleep", "60"])
    try:
        ours = os.readlink("/proc/self/ns/mnt")
        while os.readlink(f"/proc/{holder.pid}/ns/mnt") == ours:
            await asyncio.sleep(0.02)  # until unshare has made its namespace
        with pytest.raises(ConfigError, match="running instances use it"):
            await provider.ensure("busy", 8 * MiB)
    finally:
        holder.kill()
        holder.wait()
    assert os.path.ismount(info.path)  # mounted again after the refusal
    assert (info.path / "f").read_text() == "x"
    after = await provider.info("busy")
    assert after is not None and after.size_bytes == 16 * MiB


@needs_loop
async def test_data_survives_a_lost_mount_and_a_new_provider(volumes_dir: Path) -> None:
    provider = LocalVolumeProvider(volumes_dir)
    info = await provider.ensure("notes", 8 * MiB)
    (info.path / "notes.db").write_bytes(b"important")
    # A reboot: the mount is gone, the image stays.
    subprocess.run(["umount", str(info.path)], check=True)
    assert not (info.path / "notes.db").exists()
    restarted = LocalVolumeProvider(volumes_dir)
    assert await restarted.start() == ["notes"]
    assert (info.path / "notes.db").read_bytes() == b"important"
    assert await restarted.start() == []  # idempotent: a mounted image is left alone
    again = await restarted.ensure("notes", 8 * MiB)
    assert (again.path / "notes.db").read_bytes() == b"important"


async def test_plain_folder_reports_usage_with_a_warning(volumes_dir: Path) -> None:
    provider = LocalVolumeProvider(volumes_dir, enforce=False)
    info = await provider.ensure("plain", 2 * MiB)
    assert not info.enforced
    assert info.warning is not None and "not enforced" in info.warning
    (info.path / "blob").write_bytes(os.urandom(3 * MiB))
    fresh = LocalVolumeProvider(volumes_dir, enforce=False)  # no usage cache yet
    measured = await fresh.info("plain")
    assert measured is not None
    assert measured.used_bytes >= 3 * MiB
    assert measured.warning is not None and "more than its size" in measured.warning
    with pytest.raises(ConfigError, match="in use"):
        await fresh.ensure("plain", 1 * MiB)


@pytest.mark.parametrize("enforce", [False, None])
async def test_retain_then_take_back_then_purge(volumes_dir: Path, enforce: bool | None) -> None:
    if enforce is None and enforcement_unavailable() is not None:
        pytest.skip("size enforcement unavailable")
    provider = LocalVolumeProvider(volumes_dir, enforce=enforce)
    info = await provider.ensure("kept", 4 * MiB)
    (info.path / "f").write_text("data")
    await provider.release("kept", purge=False)
    retained = await provider.info("kept")
    assert retained is not None and retained.retained
    assert [v.name for v in await provider.list()] == ["kept"]
    back = await provider.ensure("kept", 4 * MiB)
    assert not back.retained and (back.path / "f").read_text() == "data"
    await provider.release("kept", purge=True)
    assert await provider.info("kept") is None
    assert not (volumes_dir / "kept").exists()
    await provider.release("kept", purge=True)  # idempotent
    await provider.release("never-was", purge=False)


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "a\0b", "", "-x", "UPPER", "a" * 64])
async def test_hostile_names_are_refused(volumes_dir: Path, name: str) -> None:
    provider = LocalVolumeProvider(volumes_dir, enforce=False)
    with pytest.raises(ConfigError, match="invalid volume name"):
        await provider.ensure(name, 4 * MiB)
    with pytest.raises(ConfigError, match="invalid volume name"):
        await provider.release(name, purge=True)
    assert not volumes_dir.exists() or list(volumes_dir.iterdir()) == []


async def test_too_small_a_size_is_refused(volumes_dir: Path) -> None:
    provider = LocalVolumeProvider(volumes_dir, enforce=False)
    with pytest.raises(ConfigError, match="minimum"):
        await provider.ensure("tiny", 1000)
