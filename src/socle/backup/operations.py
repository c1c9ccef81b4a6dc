"""Backups of a whole home, of one volume, and restores: what goes where, and in what order.

Create (works whether the control plane runs or not): the state store is copied first
(SQLite online backup or ``pg_dump``: a consistent snapshot even under writes), then the
kept releases, then each volume's files *while its apps keep running* — a file an app
rewrites during the copy is copied as it is at that moment, so an app's own consistency
(a SQLite file, say) needs its cooperation (see ``docs/backups.md``). The archive is written
as a hidden ``.partial`` file next to its final name and renamed once complete, so a crash
never leaves a half archive under the real name.

Restore: verify everything first (nothing written if anything is wrong), refuse a non-empty
home unless ``force``, then volumes (made by the volume provider, so sizes are enforced
again), releases, and the state store last, swapped in with a rename.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from socle import __version__
from socle.backup import statestore
from socle.backup.archive import (
    ArchiveWriter,
    BackgroundWriter,
    Checked,
    Item,
    extract,
    release_roots,
    verify,
    walk_tree,
)
from socle.backup.manifest import (
    PGDUMP_ENTRY,
    SQLITE_ENTRY,
    Manifest,
    StoreKind,
    VolumeEntry,
)
from socle.errors import BackupError
from socle.fs import try_lock
from socle.runtime.local.volumes import LocalVolumeProvider, check_volume_name
from socle.settings import Settings
from socle.state.registry import default_registry, open_store, sqlite_path

log = logging.getLogger(__name__)

CONSISTENCY_NOTE = (
    "volumes were copied while their apps kept running: files an app changed during the "
    "copy are as they were at that moment; apps that need a consistent copy (e.g. SQLite) "
    "should write their own backup file into the volume first"
)
SECRETS_NOTE = (
    "secrets are inside the state store as ciphertext only; a restored home starts sealed: "
    "unseal it with the operator's key shares (dev mode: copy secrets-dev-unseal.key from "
    "the old home, it is not in any backup)"
)


class Reporter(Protocol):
    """Where long operations say how far they are (the CLI draws a progress bar)."""

    def phase(self, description: str, total: int | None) -> None: ...

    def advance(self, amount: int) -> None: ...


class _Quiet:
    def phase(self, description: str, total: int | None) -> None:
        log.info("%s", description)

    def advance(self, amount: int) -> None:
        return None


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest
    size: int
    """Bytes of the archive."""
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "size": self.size,
            "seconds": round(self.seconds, 3),
            "store": self.manifest.store,
            "releases": self.manifest.releases,
            "volumes": sorted(self.manifest.volumes),
            "entries": len(self.manifest.entries),
            "data_bytes": self.manifest.total_bytes,
            "skipped": self.manifest.skipped,
        }


def utc_stamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")


def default_archive(settings: Settings) -> Path:
    return settings.backups_dir / f"socle-{utc_stamp()}.tar"


def _store_kind(settings: Settings) -> tuple[StoreKind, str]:
    scheme, url = default_registry().resolve(settings.store or settings.db_path)
    if scheme == "sqlite":
        return "sqlite", url
    if scheme in ("postgresql", "postgres"):
        return "postgresql", url
    raise BackupError(f"backups of a {scheme}: state store are not supported")


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


async def _volume_entries(
    provider: LocalVolumeProvider, names: list[str]
) -> dict[str, VolumeEntry]:
    out = {}
    for name in names:
        info = await provider.info(name)
        if info is not None:
            _check_mounted(name, info.path, info.enforced)
            out[name] = VolumeEntry(name, info.size_bytes, info.retained, info.enforced)
    return out


def _check_mounted(name: str, path: Path, enforced: bool) -> None:
    """An enforced volume's files live inside its image: unmounted, the folder is empty and
    a backup would silently miss them."""
    if enforced and not os.path.ismount(path):
        raise BackupError(
            f"volume {name}: its ext4 image is not mounted, its files cannot be read",
            hint="run the backup as root (it mounts the images), or start the control plane",
        )


def _write_archive(
    dest: Path,
    manifest: Manifest,
    sources: list[Item | str],
    state: tuple[str, Path] | None,
    reporter: Reporter,
) -> int:
    """Write ``dest`` through a hidden partial file; returns its size."""
    if dest.exists():
        raise BackupError(f"{dest} already exists", hint="give another file name")
    _private_dir(dest.parent)
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    out = BackgroundWriter(fd)
    try:
        try:
            writer = ArchiveWriter(out, reporter.advance)
            items = [s for s in sources if isinstance(s, Item)]
            manifest.skipped = [s for s in sources if isinstance(s, str)]
            total = sum(i.size for i in items) + (state[1].stat().st_size if state else 0)
            reporter.phase(f"writing {dest.name}", total)
            if state is not None:
                writer.add(Item(state[0], state[1], "file", state[1].stat().st_size))
            for item in items:
                writer.add(item)
            writer.finish(manifest)
        finally:
            try:
                out.close()  # every byte written and fsynced, or the writer's error
            finally:
                os.close(fd)
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return dest.stat().st_size


async def create_backup(
    settings: Settings,
    dest: Path | None = None,
    *,
    reporter: Reporter | None = None,
    provider: LocalVolumeProvider | None = None,
) -> BackupResult:
    """Back up the home ``settings`` names: state store, kept releases, volumes."""
    reporter = reporter or _Quiet()
    started = time.monotonic()
    dest = (dest or default_archive(settings)).absolute()
    kind, url = _store_kind(settings)
    if kind == "sqlite" and not sqlite_path(url).is_file():
        raise BackupError(
            f"no state store at {sqlite_path(url)}",
            hint="is SOCLE_HOME right? A home that never ran `socle server` has nothing to back up",
        )
    provider = provider or LocalVolumeProvider(settings.volumes_dir)
    await provider.start()  # after a reboot, enforced volumes' files are inside unmounted images
    volumes = await _volume_entries(provider, provider.names())
    releases = release_roots(settings.releases_dir)
    manifest = Manifest(
        created=dt.datetime.now(dt.UTC).isoformat(),
        socle_version=__version__,
        store=kind,
        volumes=volumes,
        releases=[name for name, _ in releases],
        notes=[SECRETS_NOTE, CONSISTENCY_NOTE],
    )

    def run() -> int:
        _private_dir(dest.parent)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".socle-backup-") as tmp:
            reporter.phase("copying the state store", None)
            if kind == "sqlite":
                snapshot = Path(tmp) / "state.db"
                statestore.sqlite_snapshot(sqlite_path(url), snapshot)
                state = (SQLITE_ENTRY, snapshot)
            else:
                snapshot = Path(tmp) / "state.pgdump"
                statestore.pg_dump(url, snapshot)
                state = (PGDUMP_ENTRY, snapshot)
            reporter.phase("listing releases and volumes", None)
            sources: list[Item | str] = []
            for name, root in releases:
                sources.extend(walk_tree(root, f"releases/{name}"))
            for name, entry in volumes.items():
                skip = ("lost+found",) if entry.enforced else ()
                sources.extend(
                    walk_tree(provider.data_path(name), f"volumes/{name}/data", skip_top=skip)
                )
            return _write_archive(dest, manifest, sources, state, reporter)

    try:
        size = await asyncio.to_thread(run)
    except OSError as exc:
        raise BackupError(
            f"the backup failed: {exc}", hint="nothing was left at " + str(dest)
        ) from exc
    return BackupResult(dest, manifest, size, time.monotonic() - started)


async def backup_volume(
    provider: LocalVolumeProvider,
    name: str,
    dest_dir: Path,
    *,
    keep: int,
    now: dt.datetime | None = None,
    reporter: Reporter | None = None,
) -> BackupResult:
    """One volume's files into ``dest_dir/<name>-<UTC>.tar``; keep the newest ``keep``."""
    check_volume_name(name)
    reporter = reporter or _Quiet()
    started = time.monotonic()
    info = await provider.info(name)
    if info is None:
        raise BackupError(f"no volume named {name!r}")
    _check_mounted(name, info.path, info.enforced)
    dest = dest_dir.absolute() / f"{name}-{utc_stamp(now)}.tar"
    manifest = Manifest(
        created=(now or dt.datetime.now(dt.UTC)).isoformat(),
        socle_version=__version__,
        store="none",
        scope="volume",
        volumes={name: VolumeEntry(name, info.size_bytes, info.retained, info.enforced)},
        notes=[CONSISTENCY_NOTE],
    )

    def run() -> int:
        skip = ("lost+found",) if info.enforced else ()
        sources = list(walk_tree(info.path, f"volumes/{name}/data", skip_top=skip))
        size = _write_archive(dest, manifest, sources, None, reporter)
        prune(dest_dir, f"{name}-", keep)
        return size

    try:
        size = await asyncio.to_thread(run)
    except OSError as exc:
        raise BackupError(f"the backup of volume {name} failed: {exc}") from exc
    return BackupResult(dest, manifest, size, time.monotonic() - started)


def prune(folder: Path, prefix: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` archives ``<prefix><UTC stamp>.tar`` in ``folder``
    (the stamp sorts by time); returns what was deleted."""
    archives = sorted(
        p for p in folder.glob(f"{prefix}*.tar") if p.is_file() and not p.name.startswith(".")
    )
    doomed = archives[: max(0, len(archives) - keep)]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


async def verify_backup(path: Path, *, reporter: Reporter | None = None) -> Manifest:
    """Check every entry of the archive; BackupError names the first bad one."""
    reporter = reporter or _Quiet()
    reporter.phase(f"verifying {path.name}", path.stat().st_size if path.exists() else None)
    checked = await asyncio.to_thread(verify, path, reporter.advance)
    return checked.manifest


def _home_is_empty(home: Path) -> bool:
    try:
        return not any(home.iterdir())
    except FileNotFoundError:
        return True


def _free_bytes(path: Path) -> int:
    while not path.exists():
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _clear(folder: Path, keep: tuple[str, ...] = ()) -> None:
    for child in folder.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


async def restore_backup(
    settings: Settings,
    archive: Path,
    *,
    force: bool = False,
    reporter: Reporter | None = None,
    provider: LocalVolumeProvider | None = None,
) -> Manifest:
    """Put a home back from ``archive`` (or one volume, for a volume backup).

    Refused, with nothing written: a bad archive; a non-empty home (a volume that exists,
    for a volume backup) without ``force``; a running control plane on the home; a store
    kind other than the one ``settings`` use; not enough free space."""
    reporter = reporter or _Quiet()
    home = settings.home.absolute()
    reporter.phase(
        f"verifying {archive.name}", archive.stat().st_size if archive.exists() else None
    )
    checked = await asyncio.to_thread(verify, archive, reporter.advance)
    manifest = checked.manifest
    provider = provider or LocalVolumeProvider(settings.volumes_dir)
    kind, url = _store_kind(settings)
    scope: Literal["home", "volume"] = manifest.scope
    lock_fd = _lock_home(home)
    try:
        if scope == "home":
            await _check_home_target(settings, manifest, kind, url, force=force)
        else:
            for name in manifest.volumes:
                if await provider.info(name) is not None and not force:
                    raise BackupError(
                        f"volume {name} already exists in {home}",
                        hint="pass --force to replace its files with the backup's",
                    )
        if manifest.total_bytes > _free_bytes(home):
            raise BackupError(
                f"not enough free space under {home} for {manifest.total_bytes} bytes"
            )
        await _write_back(settings, checked, kind, url, provider, reporter)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
    return manifest


def _lock_home(home: Path) -> int | None:
    """Hold the home's server lock while restoring: no control plane may start meanwhile,
    and none may be running (its lock would be held)."""
    lock = home / "server.lock"
    if not lock.exists():
        return None
    fd = try_lock(lock)
    if fd is None:
        raise BackupError(
            f"a Socle control plane is running with {home}",
            hint="stop it with `socle down` first; a restore never writes under a live one",
        )
    return fd


async def _check_home_target(
    settings: Settings, manifest: Manifest, kind: StoreKind, url: str, *, force: bool
) -> None:
    home = settings.home.absolute()
    if manifest.store != kind:
        raise BackupError(
            f"the backup holds a {manifest.store} state store but this home uses {kind}",
            hint="set SOCLE_STORE to a store of the backup's kind (unset it for SQLite)",
        )
    if not force and not _home_is_empty(home):
        raise BackupError(
            f"SOCLE_HOME {home} is not empty",
            hint="restore into an empty folder (set SOCLE_HOME), or pass --force to replace "
            "the state store, releases and volumes it holds with the backup's",
        )
    if kind == "postgresql" and not force:
        store = await open_store(url)
        try:
            if await store.keys(""):
                raise BackupError(
                    "the PostgreSQL state store SOCLE_STORE names is not empty",
                    hint="restore into an empty database, or pass --force to replace it",
                )
        finally:
            await store.close()


async def _write_back(
    settings: Settings,
    checked: Checked,
    kind: StoreKind,
    url: str,
    provider: LocalVolumeProvider,
    reporter: Reporter,
) -> None:
    manifest = checked.manifest
    home = settings.home.absolute()
    _private_dir(home)
    os.chmod(home, 0o700)
    for name, volume in manifest.volumes.items():
        info = await provider.ensure(name, volume.size_bytes)
        _clear(info.path, keep=("lost+found",) if info.enforced else ())
    staging = Path(tempfile.mkdtemp(dir=home, prefix=".restore-"))
    releases_dir = settings.releases_dir
    for name in manifest.releases:
        shutil.rmtree(releases_dir / name, ignore_errors=True)

    def destination(entry: str) -> Path | None:
        parts = entry.split("/")
        if parts[0] == "state":
            return staging / parts[1]
        if parts[0] == "releases":
            return releases_dir.joinpath(*parts[1:])
        if parts[0] == "volumes":
            return provider.data_path(parts[1]).joinpath(*parts[3:])
        return None

    def run() -> None:
        reporter.phase("restoring", manifest.total_bytes)
        _private_dir(releases_dir)
        extract(checked, destination, chown=os.geteuid() == 0, progress=reporter.advance)
        if manifest.store == "sqlite":
            restored = staging / "state.db"
            statestore.check_sqlite(restored)
            db = sqlite_path(url)
            _private_dir(db.parent)
            for suffix in ("-wal", "-shm"):  # a stale WAL would be replayed into the new file
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            os.chmod(restored, 0o600)
            os.replace(restored, db)
        elif manifest.store == "postgresql":
            reporter.phase("pg_restore", None)
            statestore.pg_restore(url, staging / "state.pgdump")

    try:
        await asyncio.to_thread(run)
    except OSError as exc:
        raise BackupError(
            f"the restore failed midway: {exc}",
            hint=f"{home} is partly restored; fix the cause (disk space?) and run the restore "
            "again with --force",
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for name, volume in manifest.volumes.items():
        if volume.retained:
            await provider.release(name, purge=False)


__all__ = [
    "BackupResult",
    "Reporter",
    "backup_volume",
    "create_backup",
    "default_archive",
    "prune",
    "restore_backup",
    "verify_backup",
]
