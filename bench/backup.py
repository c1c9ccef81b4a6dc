"""Backup and restore of a 1 GiB volume: MB/s of create, verify and restore (JSON).

    .venv/bin/python bench/backup.py [--size-mib 1024]

Builds a home in a temporary folder (SQLite store with a few records, one volume holding
``--size-mib`` MiB in 64 MiB files of incompressible bytes; as root the volume is a real
loop-mounted ext4 image), then times ``create_backup``, ``verify_backup`` and
``restore_backup`` into a second home. Rates are data bytes (the volume's files) per second;
1 MB = 10^6 bytes. The volume was just written, so part of it is still in the page cache:
these are the figures of a backup right after activity, not of a cold disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from socle.backup.operations import create_backup, restore_backup, verify_backup  # noqa: E402
from socle.runtime.local.volumes import LocalVolumeProvider  # noqa: E402
from socle.settings import Settings  # noqa: E402
from socle.state.registry import open_store  # noqa: E402

MiB = 1024 * 1024
FILE_MIB = 64


def _unmount_under(root: Path) -> None:
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        target = line.split()[4]
        if target.startswith(str(root) + "/"):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)


async def bench(tmp: Path, size_mib: int) -> dict[str, object]:
    home = tmp / "home"
    home.mkdir(mode=0o700)
    settings = Settings(home=home)
    store = await open_store(settings.db_path)
    for i in range(100):
        await store.put(f"bench/{i}", os.urandom(256))
    await store.close()
    provider = LocalVolumeProvider(settings.volumes_dir)
    # Room for the data plus ext4's own metadata (journal, inode tables).
    info = await provider.ensure("data", (size_mib + max(64, size_mib // 8)) * MiB)
    block = os.urandom(MiB)
    written = 0
    for index in range((size_mib + FILE_MIB - 1) // FILE_MIB):
        with open(info.path / f"blob-{index:03d}", "wb") as handle:
            for _ in range(min(FILE_MIB, size_mib - written // MiB)):
                handle.write(block)
                written += MiB
    data_bytes = written

    archive = tmp / "backup.tar"
    t0 = time.perf_counter()
    result = await create_backup(settings, archive, provider=provider)
    create_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    await verify_backup(archive)
    verify_s = time.perf_counter() - t0
    target = Settings(home=tmp / "restored")
    t0 = time.perf_counter()
    await restore_backup(target, archive)
    restore_s = time.perf_counter() - t0
    restored = await LocalVolumeProvider(target.volumes_dir).info("data")
    assert restored is not None and restored.used_bytes >= data_bytes

    def rate(seconds: float) -> float:
        return round(data_bytes / seconds / 1e6, 1)

    return {
        "bench": "backup_restore_volume",
        "volume_bytes": data_bytes,
        "enforced": info.enforced,
        "archive_bytes": result.size,
        "create_s": round(create_s, 3),
        "create_MBps": rate(create_s),
        "verify_s": round(verify_s, 3),
        "verify_MBps": rate(verify_s),
        "restore_s": round(restore_s, 3),
        "restore_MBps": rate(restore_s),
        "note": "restore includes a full verify pass before writing",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="socle-bench-backup-", dir="/var/tmp") as name:
        tmp = Path(name)
        try:
            figures = asyncio.run(bench(tmp, args.size_mib))
        finally:
            _unmount_under(tmp)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
