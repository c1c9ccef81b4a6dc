"""Backup → verify → restore of real homes: a SQLite store (live, in WAL), a release, a
volume (loop-mounted ext4 as root); PostgreSQL through real pg_dump/pg_restore; damaged
and tampered archives detected; refusals leave the target untouched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from socle.backup.manifest import Manifest
from socle.backup.operations import create_backup, restore_backup, verify_backup
from socle.errors import BackupError, ConfigError
from socle.runtime.local.volumes import LocalVolumeProvider
from socle.settings import Settings
from socle.state.registry import open_store
from tests.support.pg_server import PgServer
from tests.support.pg_server import pg_server as pg_server  # session fixture

MiB = 1024 * 1024
RELEASE = "r0123456789abcdef"


def _unmount_under(root: Path) -> None:
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        target = line.split()[4]
        if target.startswith(str(root) + "/"):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    try:
        yield tmp_path
    finally:
        _unmount_under(tmp_path)


def _settings(home: Path, store: str | None = None) -> Settings:
    return Settings(home=home, store=store)


async def _make_home(home: Path, *, store: str | None = None) -> dict[str, bytes]:
    """A home as a control plane leaves it; returns the store's records."""
    settings = _settings(home, store)
    home.mkdir(parents=True, mode=0o700)
    db = await open_store(settings.store or settings.db_path)
    records = {
        "apps/web": b'{"replicas": 1}',
        "revisions/1": b'{"number": 1}',
        "secrets/barrier/keyring": b"\x00ciphertext\xff",
    }
    for key, value in records.items():
        await db.put(key, value)
    # Keep the SQLite store open (WAL with unmerged pages) while backing up: the copy must
    # still hold every record.
    (home / "admin.token").write_text("s.admin-token\n")
    (home / "secrets-dev-unseal.key").write_text('{"unseal_key": "x"}')
    release = settings.releases_dir / "web" / RELEASE
    (release / "bin").mkdir(parents=True)
    (release / "app.py").write_text("print('hi')\n")
    (release / "bin" / "run").write_text("#!/bin/sh\nexec python3 app.py\n")
    (release / "bin" / "run").chmod(0o755)
    (release / "bin" / "python3").symlink_to("/usr/bin/python3")
    (release / "main.py").symlink_to("app.py")
    (release / ".socle-release.json").write_text('{"format": 1}')
    incomplete = settings.releases_dir / "web" / "rfedcba9876543210"
    incomplete.mkdir()  # no marker: an interrupted build, not a kept release
    (settings.releases_dir / "web" / f"{RELEASE}.build.log").write_text("log")
    provider = LocalVolumeProvider(settings.volumes_dir)
    info = await provider.ensure("data", 32 * MiB)
    (info.path / "notes.db").write_bytes(os.urandom(3 * MiB))
    (info.path / "big.bin").write_bytes(os.urandom(9 * MiB))  # restored on a writer thread
    (info.path / "sub").mkdir()
    (info.path / "sub" / "hello.txt").write_text("hello")
    if os.geteuid() == 0:  # an app's uid: kept through the restore
        os.chown(info.path / "sub" / "hello.txt", 1234, 1234)
    (info.path / "escape").symlink_to("/etc/passwd")  # an app's hostile link: skipped
    kept = await provider.ensure("old", 2 * MiB)
    (kept.path / "f").write_text("retained data")
    await provider.release("old", purge=False)
    # The store stays open until the test ends; the caller closes it.
    _OPEN.append(db)
    return records


_OPEN: list[object] = []


@pytest.fixture(autouse=True)
async def _close_stores() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().close()  # type: ignore[attr-defined]


async def test_round_trip_of_a_home(tmp: Path) -> None:
    source = tmp / "home"
    records = await _make_home(source)
    archive = tmp / "out" / "backup.tar"
    result = await create_backup(_settings(source), archive)
    assert archive.stat().st_mode & 0o777 == 0o600
    manifest = await verify_backup(archive)
    assert manifest.store == "sqlite"
    assert manifest.releases == [f"web/{RELEASE}"]
    assert sorted(manifest.volumes) == ["data", "old"]
    assert manifest.volumes["old"].retained
    names = {e.path for e in manifest.entries}
    assert "state/state.db" in names
    assert f"releases/web/{RELEASE}/bin/python3" in names
    assert not any("rfedcba9876543210" in n or n.endswith(".build.log") for n in names)
    assert not any("admin.token" in n or "unseal" in n for n in names)
    assert "volumes/data/data/escape" not in names
    assert any("escape" in s for s in result.manifest.skipped)
    assert not any("lost+found" in n for n in names)
    with tarfile.open(archive) as tar:
        raw = json.loads(tar.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
    assert "secrets-dev-unseal.key" in raw["excluded"] and "admin.token" in raw["excluded"]
    file_entry = next(e for e in raw["entries"] if e["path"].endswith("notes.db"))
    assert file_entry["size"] == 3 * MiB and len(file_entry["sha256"]) == 64

    target = tmp / "restored"
    restored = await restore_backup(_settings(target), archive)
    assert restored.store == "sqlite"
    assert target.stat().st_mode & 0o777 == 0o700
    store = await open_store(_settings(target).db_path)
    try:
        for key, value in records.items():
            record = await store.get(key)
            assert record is not None and record.value == value
    finally:
        await store.close()
    assert (_settings(target).db_path.stat().st_mode & 0o777) == 0o600
    assert not (target / "admin.token").exists()
    assert not (target / "secrets-dev-unseal.key").exists()
    release = target / "releases" / "web" / RELEASE
    assert (release / "app.py").read_text() == "print('hi')\n"
    assert (release / "bin" / "run").stat().st_mode & 0o777 == 0o755
    assert os.readlink(release / "bin" / "python3") == "/usr/bin/python3"
    assert os.readlink(release / "main.py") == "app.py"
    provider = LocalVolumeProvider(target / "volumes")
    data = await provider.info("data")
    assert data is not None and data.size_bytes == 32 * MiB and not data.retained
    for name in ("notes.db", "big.bin"):
        original = (source / "volumes" / "data" / "data" / name).read_bytes()
        assert (data.path / name).read_bytes() == original
    assert (data.path / "sub" / "hello.txt").read_text() == "hello"
    if os.geteuid() == 0:
        assert data.enforced and os.path.ismount(data.path)
        assert (data.path / "sub" / "hello.txt").stat().st_uid == 1234
    old = await provider.info("old")
    assert old is not None and old.retained
    assert (old.path / "f").read_text() == "retained data"


async def test_restore_refuses_a_non_empty_home_and_changes_nothing(tmp: Path) -> None:
    source = tmp / "home"
    await _make_home(source)
    archive = tmp / "b.tar"
    await create_backup(_settings(source), archive)
    target = tmp / "busy"
    target.mkdir()
    (target / "something").write_text("mine")
    with pytest.raises(BackupError, match="not empty") as caught:
        await restore_backup(_settings(target), archive)
    assert caught.value.hint and "--force" in caught.value.hint
    assert sorted(p.name for p in target.iterdir()) == ["something"]
    await restore_backup(_settings(target), archive, force=True)
    assert (target / "something").read_text() == "mine"
    assert (target / "state.db").is_file()
    # --force again over a restored home: volumes and releases are replaced, not merged.
    await restore_backup(_settings(target), archive, force=True)


async def test_restore_refuses_a_home_where_a_control_plane_runs(tmp: Path) -> None:
    from socle.fs import try_lock

    source = tmp / "home"
    await _make_home(source)
    archive = tmp / "b.tar"
    await create_backup(_settings(source), archive)
    target = tmp / "live"
    target.mkdir()
    fd = try_lock(target / "server.lock")
    assert fd is not None
    try:
        with pytest.raises(BackupError, match="control plane is running"):
            await restore_backup(_settings(target), archive, force=True)
    finally:
        os.close(fd)
    assert sorted(p.name for p in target.iterdir()) == ["server.lock"]


def _rewrite(archive: Path, out: Path, change: dict[str, bytes]) -> None:
    """Copy the archive, replacing some members' bytes (the manifest left as it was)."""
    with tarfile.open(archive) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isreg() else None  # type: ignore[union-attr]
            if member.name in change:
                data = change[member.name]
                member.size = len(data)
            import io

            dst.addfile(member, io.BytesIO(data) if data is not None else None)


async def test_tampered_truncated_and_emptied_archives_are_detected(tmp: Path) -> None:
    source = tmp / "home"
    await _make_home(source)
    archive = tmp / "b.tar"
    await create_backup(_settings(source), archive)
    with tarfile.open(archive) as tar:
        original = tar.extractfile("volumes/data/data/sub/hello.txt").read()  # type: ignore[union-attr]
        members = tar.getmembers()

    # Same size, different bytes: only the checksum can tell.
    tampered = tmp / "tampered.tar"
    _rewrite(archive, tampered, {"volumes/data/data/sub/hello.txt": b"HELLO"})
    assert original == b"hello"
    with pytest.raises(BackupError, match="SHA-256") as caught:
        await verify_backup(tampered)
    assert caught.value.entry == "volumes/data/data/sub/hello.txt"

    # A byte flipped in place inside the big file.
    flipped = tmp / "flipped.tar"
    shutil.copy(archive, flipped)
    big = next(m for m in members if m.name.endswith("notes.db"))
    with open(flipped, "r+b") as handle:
        handle.seek(big.offset_data + 1000)
        byte = handle.read(1)
        handle.seek(big.offset_data + 1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BackupError, match=r"notes\.db"):
        await verify_backup(flipped)

    # Truncated in the middle of the big file, and before the manifest.
    manifest_member = members[-1]
    assert manifest_member.name == "MANIFEST.json"
    for cut in (big.offset_data + 4096, manifest_member.offset_data + 10):
        truncated = tmp / f"cut-{cut}.tar"
        truncated.write_bytes(archive.read_bytes()[:cut])
        with pytest.raises(BackupError):
            await verify_backup(truncated)

    # An entry removed from the archive but still in the manifest.
    missing = tmp / "missing.tar"
    with tarfile.open(archive) as src, tarfile.open(missing, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            if member.name != "volumes/data/data/sub/hello.txt":
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    with pytest.raises(BackupError, match="missing from the archive") as caught:
        await verify_backup(missing)
    assert caught.value.entry == "volumes/data/data/sub/hello.txt"

    # Nothing restored from a bad archive.
    target = tmp / "never"
    with pytest.raises(BackupError):
        await restore_backup(_settings(target), tampered)
    assert not target.exists()


def _hostile(tmp: Path, name: str, build: object) -> Path:
    """An archive with one hostile member and a manifest that vouches for it."""
    import hashlib
    import io

    path = tmp / f"{name}.tar"
    entries = []
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in build:  # type: ignore[attr-defined]
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
            kind = "dir" if info.isdir() else "symlink" if info.issym() else "file"
            entry = {"path": info.name, "type": kind, "mode": info.mode}
            if kind == "file":  # hard links, devices and FIFOs pass for empty files
                body = data or b""
                entry.update(size=len(body), sha256=hashlib.sha256(body).hexdigest())
            if info.issym() or info.islnk():
                entry["target"] = info.linkname
            entries.append(entry)
        manifest = Manifest(created="now", socle_version="0", store="none").to_json()
        doc = json.loads(manifest)
        doc["volumes"] = {"v": {"size_bytes": 1 << 30}}
        doc["entries"] = entries
        raw = json.dumps(doc).encode()
        info = tarfile.TarInfo("MANIFEST.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = b"x", link: str = ""):  # type: ignore[no-untyped-def]
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o644
    info.linkname = link
    if data is not None:
        info.size = len(data)
    return info, data


@pytest.mark.parametrize(
    ("case", "members", "reason"),
    [
        ("absolute", [_member("/etc/cron.d/evil")], "absolute path"),
        ("dotdot", [_member("volumes/v/data/../../../../etc/x")], "'..'"),
        ("unknown-top", [_member("etc/passwd")], "unknown top-level"),
        (
            "symlink-out",
            [_member("volumes/v/data/l", tarfile.SYMTYPE, None, "../../../../etc")],
            "leads outside",
        ),
        (
            "symlink-abs",
            [_member("volumes/v/data/l", tarfile.SYMTYPE, None, "/etc")],
            "absolute target",
        ),
        (
            "write-through-link",
            [
                _member("volumes/v/data/l", tarfile.SYMTYPE, None, "sub"),
                _member("volumes/v/data/l/x"),
            ],
            "under the symlink",
        ),
        (
            "hardlink",
            [_member("volumes/v/data/h", tarfile.LNKTYPE, None, "volumes/v/data/x")],
            "hard links",
        ),
        ("device", [_member("volumes/v/data/sda", tarfile.BLKTYPE, None)], "device"),
        ("fifo", [_member("volumes/v/data/p", tarfile.FIFOTYPE, None)], "FIFO"),
        ("sparse", [_member("volumes/v/data/s", tarfile.GNUTYPE_SPARSE, None)], "sparse"),
    ],
)
async def test_hostile_archives_are_refused_before_anything_is_written(
    tmp: Path, case: str, members: list[object], reason: str
) -> None:
    archive = _hostile(tmp, case, members)
    target = tmp / "target"
    with pytest.raises(BackupError, match=reason):
        await verify_backup(archive)
    with pytest.raises(BackupError, match=reason):
        await restore_backup(_settings(target), archive)
    assert not target.exists()
    assert not Path("/etc/cron.d/evil").exists()


async def test_an_oversized_volume_is_refused(tmp: Path) -> None:
    big = b"y" * 4096
    archive = _hostile(tmp, "big", [_member("volumes/v/data/big", data=big)])
    # Shrink the volume's declared size below its content, and fix nothing else.
    with tarfile.open(archive) as tar:
        doc = json.loads(tar.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
    doc["volumes"]["v"]["size_bytes"] = 1024
    raw = json.dumps(doc).encode()
    fixed = tmp / "fixed.tar"
    import io

    with tarfile.open(archive) as src, tarfile.open(fixed, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            if member.name == "MANIFEST.json":
                member.size = len(raw)
                dst.addfile(member, io.BytesIO(raw))
            else:
                dst.addfile(member, src.extractfile(member))
    with pytest.raises(BackupError, match="would not fit"):
        await verify_backup(fixed)


async def test_a_volume_backup_restores_one_volume_into_a_home(tmp: Path) -> None:
    from socle.backup.operations import backup_volume

    source = tmp / "home"
    await _make_home(source)
    provider = LocalVolumeProvider(source / "volumes")
    out = tmp / "vb"
    result = await backup_volume(provider, "data", out, keep=2)
    manifest = await verify_backup(result.path)
    assert manifest.scope == "volume" and list(manifest.volumes) == ["data"]
    target = tmp / "other"
    await restore_backup(_settings(target), result.path)
    restored = LocalVolumeProvider(target / "volumes")
    info = await restored.info("data")
    assert info is not None and (info.path / "sub" / "hello.txt").read_text() == "hello"
    with pytest.raises(BackupError, match="already exists"):
        await restore_backup(_settings(target), result.path)
    # --force puts the backup's files back in place of what the volume holds now.
    (info.path / "sub" / "hello.txt").write_text("changed")
    (info.path / "new.txt").write_text("made after the backup")
    await restore_backup(_settings(target), result.path, force=True)
    assert (info.path / "sub" / "hello.txt").read_text() == "hello"
    assert not (info.path / "new.txt").exists()


async def test_a_store_kind_mismatch_is_refused(tmp: Path, pg_server: PgServer) -> None:
    source = tmp / "home"
    await _make_home(source)
    archive = tmp / "b.tar"
    await create_backup(_settings(source), archive)
    target = tmp / "pg-home"
    with pytest.raises(BackupError, match="sqlite state store but this home uses postgresql"):
        await restore_backup(_settings(target, pg_server.new_database()), archive)
    assert not target.exists()


async def test_postgresql_round_trip_with_pg_dump(tmp: Path, pg_server: PgServer) -> None:
    dsn = pg_server.new_database()
    source = tmp / "home"
    records = await _make_home(source, store=dsn)
    archive = tmp / "pg.tar"
    await create_backup(_settings(source, dsn), archive)
    manifest = await verify_backup(archive)
    assert manifest.store == "postgresql"
    assert "state/state.pgdump" in {e.path for e in manifest.entries}
    # The archive never holds the DSN's password.
    password = dsn.split(":")[2].split("@")[0]
    assert password.encode() not in archive.read_bytes()

    fresh = pg_server.new_database()
    target = tmp / "restored"
    await restore_backup(_settings(target, fresh), archive)
    store = await open_store(fresh)
    try:
        for key, value in records.items():
            record = await store.get(key)
            assert record is not None and record.value == value
    finally:
        await store.close()
    # The target database is no longer empty: a second restore needs --force.
    with pytest.raises(BackupError, match="not empty"):
        await restore_backup(_settings(tmp / "again", fresh), archive)
    await restore_backup(_settings(tmp / "again", fresh), archive, force=True)


async def test_a_dangerous_start_is_refused(tmp: Path) -> None:
    """Live instances of the home and an empty store: refuse; a store with data: fine."""
    from socle.backup.guard import check_start_safe
    from socle.runtime.local.procs import ProcRef
    from socle.runtime.local.records import InstanceRecord, RecordStore

    run_dir = tmp / "run"
    records = RecordStore(run_dir)
    records.ensure()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        ref = ProcRef.of(sleeper.pid)
        assert ref is not None
        spec = {
            "id": "web-0",
            "app": "web",
            "release": RELEASE,
            "ordinal": 0,
            "command": ["x"],
            "workdir": "/",
        }
        records.write(
            InstanceRecord(spec=spec, ports={}, isolation="none", sandbox=False, shim=ref)
        )
        store = await open_store(tmp / "state.db")
        try:
            with pytest.raises(ConfigError, match="empty or missing") as caught:
                await check_start_safe(store, run_dir, store_name="state.db")
            assert caught.value.hint and "socle backup restore" in caught.value.hint
            await store.put("apps/web", b"{}")
            await check_start_safe(store, run_dir, store_name="state.db")
        finally:
            await store.close()
    finally:
        sleeper.kill()
        sleeper.wait()
    empty = await open_store(tmp / "empty.db")
    try:
        await check_start_safe(empty, run_dir, store_name="state.db")  # nothing runs: fine
    finally:
        await empty.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
async def test_a_full_disk_fails_the_backup_cleanly(tmp: Path) -> None:
    source = tmp / "home"
    await _make_home(source)
    small = tmp / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    with pytest.raises(BackupError, match="the backup failed") as caught:
        await create_backup(_settings(source), small / "b.tar")
    assert "No space left" in caught.value.message
    assert list(small.iterdir()) == []  # no partial archive, no temporary folder


async def test_the_control_plane_makes_one_backup_at_a_time(tmp: Path) -> None:
    import asyncio

    from socle.backup.service import HomeBackups
    from socle.errors import ConflictError

    source = tmp / "home"
    await _make_home(source)
    backups = HomeBackups(_settings(source))
    first, second = await asyncio.gather(backups.create(), backups.create(), return_exceptions=True)
    assert not isinstance(first, BaseException)
    assert isinstance(second, ConflictError)
    assert first.path.parent == source / "backups"
    listed = await backups.list()
    assert [entry["path"] for entry in listed] == [str(first.path)]
