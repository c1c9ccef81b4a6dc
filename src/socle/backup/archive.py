"""Write, verify and restore backup archives (the blocking work; callers run it in a thread).

Why a plain uncompressed tar: every Unix tool reads it, it streams at disk speed, and its
member list can be read by seeking over the data, so :func:`verify` knows the manifest (the
last member, written once every checksum is known) before it checks the first entry, and can
name the first bad one in archive order.

Why restore reads the archive twice: the first pass (:func:`verify`) checks every name,
type, symlink, size and checksum before anything is written, so a hostile or damaged archive
changes nothing; the second pass writes, hashing again, with ``O_EXCL|O_NOFOLLOW`` on every
file and symlinks created last, so nothing is ever written through a link.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import queue
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

from socle.backup.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    RELEASE_ID_RE,
    Entry,
    Manifest,
    check_path,
    check_symlink,
    entry_root,
)
from socle.errors import BackupError
from socle.model.app import NAME_RE

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
"""Called with the number of bytes just read or written."""

COPY_CHUNK = 1 << 20
WRITE_QUEUE = 16
THREADED_WRITE = 8 * COPY_CHUNK
"""Restored files from this size on are written by a :class:`BackgroundWriter`."""
"""Chunks (of up to :data:`COPY_CHUNK`) waiting for the writer thread."""
RELEASE_MARKER = ".socle-release.json"
"""A release folder is complete (and kept) only with this marker (see the release store)."""
EXT4_LOST_FOUND = "lost+found"
SPARSE_SLACK = 64 * 2**20
"""Holes a file may have and still be archived. An app makes a 16 TB sparse file in an
8 MiB volume for free; tar would write every zero of it into the backup."""


@dataclass(frozen=True)
class Item:
    """One thing to put in the archive: ``name`` inside it, ``source`` on disk."""

    name: str
    source: Path
    type: str  # "file" | "dir" | "symlink"
    size: int = 0
    root: Path | None = None
    """The tree ``source`` lies in (a volume an app writes to): ``source`` is then opened
    one component at a time below it, never through a symlink (see :func:`open_beneath`)."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_beneath(root: Path, source: Path, flags: int) -> int:
    """Open ``source`` (inside ``root``) without following a symlink anywhere below ``root``.

    Why: a volume is written by its app while root-run code (a backup) reads it. A path
    listed a moment ago may have a folder in it swapped for a symlink to ``/etc`` or to
    another app's volume; ``open(path, O_NOFOLLOW)`` only checks the last component. Each
    folder is opened relative to the previous one with ``O_NOFOLLOW``, so a swap makes the
    open fail (ELOOP/ENOTDIR) instead of leading out of the tree.
    """
    parts = source.relative_to(root).parts
    fd = os.open(root, _DIR_FLAGS)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            child = os.open(part, (flags | os.O_NOFOLLOW) if last else _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def _parent_of(item: Item) -> Iterator[tuple[int | None, str]]:
    """``(dir_fd, name)`` to reach ``item.source`` safely (fd None: a trusted plain path)."""
    if item.root is None or item.source == item.root:
        yield None, str(item.source)
        return
    fd = open_beneath(item.root, item.source.parent, _DIR_FLAGS)
    try:
        yield fd, item.source.name
    finally:
        os.close(fd)


def _noop(_: int) -> None:
    return None


# -- what to back up ---------------------------------------------------------------------


def walk_tree(root: Path, prefix: str, *, skip_top: tuple[str, ...] = ()) -> Iterator[Item | str]:
    """Items for ``root`` and everything under it, parents before children; a ``str`` is a
    path that was skipped and why (sockets, FIFOs, devices, unsafe symlinks, odd names).

    Folders are listed through :func:`open_beneath`: a folder swapped for a symlink after it
    was seen is skipped, never listed through the link (the items carry ``root`` so that
    reading them later is as careful)."""
    yield Item(prefix, root, "dir", root=root)
    stack: list[tuple[Path, str]] = [(root, prefix)]
    while stack:
        folder, name = stack.pop()
        try:
            fd = open_beneath(root, folder, _DIR_FLAGS)
        except OSError as exc:
            yield f"{name}: cannot list: {exc.strerror}"
            continue
        try:
            entries = sorted(os.scandir(fd), key=lambda e: e.name)
            found: list[tuple[str, os.stat_result, str]] = []
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                    link = os.readlink(entry.name, dir_fd=fd) if entry.is_symlink() else ""
                except OSError:
                    continue  # gone since the listing
                found.append((entry.name, st, link))
        except OSError as exc:
            yield f"{name}: cannot list: {exc.strerror}"
            continue
        finally:
            os.close(fd)
        for entry_name, st, link in found:
            if folder == root and entry_name in skip_top:
                continue
            child = f"{name}/{entry_name}"
            try:
                child.encode("utf-8")
            except UnicodeEncodeError:
                yield f"{child!r}: file name is not UTF-8"
                continue
            path = folder / entry_name
            if stat.S_ISDIR(st.st_mode):
                yield Item(child, path, "dir", root=root)
                stack.append((path, child))
            elif stat.S_ISREG(st.st_mode) and st.st_size > st.st_blocks * 512 + SPARSE_SLACK:
                yield (
                    f"{child}: sparse file of {st.st_size} bytes occupying "
                    f"{st.st_blocks * 512}: not backed up (its holes would be written out)"
                )
            elif stat.S_ISREG(st.st_mode):
                yield Item(child, path, "file", st.st_size, root=root)
            elif stat.S_ISLNK(st.st_mode):
                try:
                    check_symlink(child, link)
                except BackupError as exc:
                    yield f"{child}: {exc.message}"
                    continue
                yield Item(child, path, "symlink", root=root)
            else:
                yield f"{child}: not a file, folder or symlink (socket, FIFO or device)"


def release_roots(releases_dir: Path) -> list[tuple[str, Path]]:
    """``(app/id, folder)`` of every complete release (with its marker), sorted."""
    out: list[tuple[str, Path]] = []
    if not releases_dir.is_dir():
        return out
    for app_dir in sorted(releases_dir.iterdir()):
        if not NAME_RE.fullmatch(app_dir.name) or not app_dir.is_dir() or app_dir.is_symlink():
            continue
        for rel in sorted(app_dir.iterdir()):
            if (
                RELEASE_ID_RE.fullmatch(rel.name)
                and rel.is_dir()
                and not rel.is_symlink()
                and (rel / RELEASE_MARKER).is_file()
            ):
                out.append((f"{app_dir.name}/{rel.name}", rel))
    return out


# -- writing -----------------------------------------------------------------------------


class BackgroundWriter:
    """A write-only file whose writes happen on another thread.

    Why: reading and hashing a file and writing the archive then overlap (both release the
    GIL), instead of the disk waiting for the hash and the hash for the disk. At most
    :data:`WRITE_QUEUE` chunks wait in memory; an error of the writing thread is raised by
    the next :meth:`write` or by :meth:`close`."""

    def __init__(self, fd: int, *, durable: bool = True) -> None:
        self._fd = fd
        self._durable = durable
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=WRITE_QUEUE)
        self._error: OSError | None = None
        self._offset = 0
        self._thread = threading.Thread(target=self._run, name="socle-backup-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the producer learns of the error on its next write
            try:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as exc:
                self._error = exc

    def write(self, data: bytes) -> int:
        if self._error is not None:
            raise self._error
        self._queue.put(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def close(self) -> None:
        """Wait for every queued write; then fsync if ``durable``. Raises the writer's
        error, if any."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error
        if self._durable:
            os.fsync(self._fd)


class _HashingReader:
    """Hands tarfile a file's bytes while hashing them and reporting progress."""

    def __init__(self, handle: BinaryIO, progress: Progress) -> None:
        self._handle = handle
        self._progress = progress
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.sha256.update(data)
        self._progress(len(data))
        return data


class ArchiveWriter:
    """Adds items to a new tar and collects their manifest entries; the manifest goes last."""

    def __init__(self, handle: IO[bytes] | BackgroundWriter, progress: Progress = _noop) -> None:
        fileobj = cast(IO[bytes], handle)  # tarfile only calls write() and tell()
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed by finish())
        self._tar.copybufsize = COPY_CHUNK  # type: ignore[attr-defined]
        self._progress = progress
        self.entries: list[Entry] = []

    def add(self, item: Item) -> None:
        check_path(item.name)
        if item.type == "file":
            self._add_file(item)
            return
        try:
            with _parent_of(item) as (dir_fd, name):
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                target = os.readlink(name, dir_fd=dir_fd) if item.type == "symlink" else ""
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackupError(f"cannot read {item.source}: {exc.strerror}") from exc
        if (item.type == "dir") != stat.S_ISDIR(st.st_mode) or (
            item.type == "symlink" and not stat.S_ISLNK(st.st_mode)
        ):
            raise BackupError(
                f"{item.source} changed kind while the backup was being made",
                hint="run the backup again, or stop the app that writes it "
                "(see docs/backups.md, consistency)",
            )
        info = tarfile.TarInfo(item.name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = int(st.st_mtime)
        info.uid, info.gid = st.st_uid, st.st_gid
        if item.type == "dir":
            info.type = tarfile.DIRTYPE
            self._tar.addfile(info)
            self.entries.append(Entry(item.name, "dir", info.mode))
        else:
            check_symlink(item.name, target)  # it may have changed since the listing
            info.type = tarfile.SYMTYPE
            info.linkname = target
            self._tar.addfile(info)
            self.entries.append(Entry(item.name, "symlink", info.mode, target=target))

    def _add_file(self, item: Item) -> None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            if item.root is None:
                fd = os.open(item.source, flags)
            else:
                fd = open_beneath(item.root, item.source, flags)
        except FileNotFoundError:
            return  # deleted since the listing: it is not part of this backup
        except OSError as exc:
            raise BackupError(f"cannot read {item.source}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb", buffering=0) as handle:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return
            info = tarfile.TarInfo(item.name)
            info.size = st.st_size
            info.mode = stat.S_IMODE(st.st_mode)
            info.mtime = int(st.st_mtime)
            info.uid, info.gid = st.st_uid, st.st_gid
            reader = _HashingReader(handle, self._progress)
            try:
                self._tar.addfile(info, reader)
            except OSError as exc:
                if exc.errno is not None:  # a real I/O error (a full disk), not a short read
                    raise
                raise BackupError(
                    f"{item.source} changed size while it was being copied: {exc}",
                    hint="run the backup again, or stop the app that writes it "
                    "(see docs/backups.md, consistency)",
                ) from exc
        self.entries.append(
            Entry(item.name, "file", info.mode, info.size, reader.sha256.hexdigest())
        )

    def finish(self, manifest: Manifest) -> None:
        manifest.entries = self.entries
        data = manifest.to_json()
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size = len(data)
        info.mode = 0o600
        info.mtime = int(time.time())
        self._tar.addfile(info, io.BytesIO(data))
        self._tar.close()


# -- reading and checking ----------------------------------------------------------------


@dataclass
class Checked:
    """An archive whose every entry was checked against its manifest."""

    path: Path
    manifest: Manifest
    members: list[tarfile.TarInfo]


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")
    except FileNotFoundError as exc:
        raise BackupError(f"no backup archive at {path}") from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(
            f"{path} is not a readable tar archive: {exc}",
            hint="the file is damaged or not a Socle backup",
        ) from exc


def _bad(path: str, reason: str) -> BackupError:
    return BackupError(
        f"bad entry {path!r}: {reason}",
        entry=path,
        hint="the archive was damaged or tampered with; use another backup",
    )


def verify(path: Path, progress: Progress = _noop) -> Checked:
    """Check names, types, sizes and SHA-256 of every entry against the manifest.

    Raises BackupError naming the first bad entry (in archive order), then any entry the
    manifest lists that the archive lacks (truncated or removed)."""
    with _open_tar(path) as tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"{path}: truncated or damaged tar: {exc}") from exc
        manifest = _read_manifest(tar, members, path)
        expected = {e.path: e for e in manifest.entries}
        if len(expected) != len(manifest.entries):
            raise BackupError(f"{MANIFEST_NAME}: an entry is listed twice")
        seen: set[str] = set()
        symlinks: set[str] = set()
        for member in members[:-1]:
            name = member.name
            check_path(name)
            if name in seen:
                raise _bad(name, "appears twice in the archive")
            seen.add(name)
            parent = name.rpartition("/")[0]
            while parent:
                if parent in symlinks:
                    raise _bad(name, f"lies under the symlink {parent!r}")
                parent = parent.rpartition("/")[0]
            entry = expected.get(name)
            if entry is None:
                raise _bad(name, f"not listed in {MANIFEST_NAME}")
            _check_member(tar, member, entry, symlinks, progress)
        missing = [p for p in expected if p not in seen]
        if missing:
            raise _bad(missing[0], "listed in the manifest but missing from the archive")
        _check_consistency(manifest, members[:-1])
    return Checked(path, manifest, members[:-1])


def _read_manifest(tar: tarfile.TarFile, members: list[tarfile.TarInfo], path: Path) -> Manifest:
    if not members or members[-1].name != MANIFEST_NAME:
        raise BackupError(
            f"{path}: no {MANIFEST_NAME} at the end of the archive",
            entry=MANIFEST_NAME,
            hint="the archive is truncated or was not made by `socle backup create`",
        )
    if any(m.name == MANIFEST_NAME for m in members[:-1]):
        raise _bad(MANIFEST_NAME, "appears twice in the archive")
    info = members[-1]
    if not info.isreg() or info.size > MAX_MANIFEST_BYTES:
        raise _bad(MANIFEST_NAME, "not a regular file of a sane size")
    handle = tar.extractfile(info)
    if handle is None:
        raise _bad(MANIFEST_NAME, "unreadable")
    try:
        raw = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _bad(MANIFEST_NAME, f"truncated: {exc}") from exc
    if len(raw) != info.size:
        raise _bad(MANIFEST_NAME, "truncated")
    return Manifest.from_json(raw)


def _check_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    entry: Entry,
    symlinks: set[str],
    progress: Progress,
) -> None:
    name = member.name
    if member.islnk():
        raise _bad(name, "hard links are refused")
    if member.isdev() or member.isfifo():
        raise _bad(name, "device files and FIFOs are refused")
    if member.issparse():  # never written by a backup; its real size hides in a map
        raise _bad(name, "sparse entries are refused")
    if member.issym():
        if entry.type != "symlink" or entry.target != member.linkname:
            raise _bad(name, "symlink differs from the manifest")
        check_symlink(name, member.linkname)
        symlinks.add(name)
        return
    if member.isdir():
        if entry.type != "dir":
            raise _bad(name, "a folder where the manifest says " + entry.type)
        return
    if not member.isreg():
        raise _bad(name, "unsupported entry type")
    if entry.type != "file":
        raise _bad(name, "a file where the manifest says " + entry.type)
    if member.size != entry.size:
        raise _bad(name, f"size {member.size} differs from the manifest's {entry.size}")
    digest = hashlib.sha256()
    handle = tar.extractfile(member)
    if handle is None:
        raise _bad(name, "unreadable")
    read = 0
    try:
        while chunk := handle.read(COPY_CHUNK):
            digest.update(chunk)
            read += len(chunk)
            progress(len(chunk))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _bad(name, f"truncated: {exc}") from exc
    if read != entry.size:
        raise _bad(name, "truncated")
    if digest.hexdigest() != entry.sha256:
        raise _bad(name, "SHA-256 does not match the manifest (tampered or damaged)")


def _check_consistency(manifest: Manifest, members: list[tarfile.TarInfo]) -> None:
    """Entries agree with the manifest's summary: store kind, volumes, sizes."""
    state = [m.name for m in members if m.name.startswith("state/")]
    want = {"sqlite": ["state/state.db"], "postgresql": ["state/state.pgdump"], "none": []}
    if state != want[manifest.store]:
        raise BackupError(
            f"{MANIFEST_NAME}: store is {manifest.store!r} but the archive holds {state or 'no state'}"
        )
    if manifest.scope == "volume" and any(m.name.startswith("releases/") for m in members):
        raise BackupError(f"{MANIFEST_NAME}: a volume backup cannot hold releases")
    used: dict[str, int] = {}
    for member in members:
        parts = member.name.split("/")
        if parts[0] == "volumes":
            if parts[1] not in manifest.volumes:
                raise _bad(member.name, f"volume {parts[1]!r} is not in the manifest")
            used[parts[1]] = used.get(parts[1], 0) + (member.size if member.isreg() else 0)
    for name, total in used.items():
        if total > manifest.volumes[name].size_bytes:
            raise _bad(
                f"volumes/{name}/data",
                f"holds {total} bytes, more than the volume's size "
                f"({manifest.volumes[name].size_bytes}): it would not fit",
            )


# -- writing back ------------------------------------------------------------------------


def extract(
    checked: Checked,
    destination: Callable[[str], Path | None],
    *,
    chown: bool,
    progress: Progress = _noop,
) -> None:
    """Write every checked entry where ``destination(name)`` says (None: not by this pass).

    Files are created with ``O_EXCL|O_NOFOLLOW`` (a file already there, or a symlink in its
    place, is an error), hashed again while written (the archive may have changed since
    :func:`verify`), modes without setuid/setgid bits; symlinks come last, folder modes
    after everything was written into them.

    Every folder below an entry's root (``destination`` of its release, volume or state
    root) is opened or made one component at a time with ``O_NOFOLLOW``: an app still
    running (``socle down --keep-apps``) may put a symlink to ``/etc`` in place of a folder
    of its volume while the restore writes into it, and root must not follow it."""
    expected = {e.path: e for e in checked.manifest.entries}
    dirs: list[tuple[Path, Path, tarfile.TarInfo]] = []
    links: list[tuple[Path, Path, tarfile.TarInfo]] = []
    with _open_tar(checked.path) as tar:
        for member in checked.members:
            target = destination(member.name)
            if target is None:
                continue
            anchor = _anchor(member.name, target, destination)
            if member.isdir():
                if target == anchor:
                    _mkdirs(target)
                else:
                    os.close(_dir_beneath(anchor, target, make=True))
                dirs.append((anchor, target, member))
            elif member.issym():
                links.append((anchor, target, member))
            else:
                parent = _dir_beneath(anchor, target.parent, make=True)
                try:
                    entry = expected[member.name]
                    _write_file(tar, member, parent, target, entry, chown, progress)
                finally:
                    os.close(parent)
        for anchor, target, member in links:
            parent = _dir_beneath(anchor, target.parent, make=True)
            try:
                os.symlink(member.linkname, target.name, dir_fd=parent)
                if chown:
                    os.chown(
                        target.name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False
                    )
            finally:
                os.close(parent)
        for anchor, target, member in reversed(dirs):
            fd = _dir_beneath(anchor, target, make=False)
            try:
                os.fchmod(fd, _safe_mode(member.mode))
                if chown:
                    os.fchown(fd, member.uid, member.gid)
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)


def _anchor(name: str, target: Path, destination: Callable[[str], Path | None]) -> Path:
    """The folder an entry's writes may not leave: where its release or volume root goes
    (made by the restore itself, or the volume's mount), or the state staging folder."""
    root = entry_root(name)
    found = destination(root) if root != "state" else None
    if found is None or (found != target and found not in target.parents):
        return target.parent
    return found


def _dir_beneath(anchor: Path, folder: Path, *, make: bool) -> int:
    """A descriptor of ``folder`` (``anchor`` or below it), every component below
    ``anchor`` opened (and with ``make`` created, 0700) without following a symlink."""
    fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in folder.relative_to(anchor).parts:
            if make:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise BackupError(
                    f"refusing to write under {folder}: {part!r} is not a folder "
                    f"({exc.strerror}); a symlink was put in its place?",
                    hint="stop the apps that use this volume (socle down without "
                    "--keep-apps) and restore again",
                ) from exc
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _safe_mode(mode: int) -> int:
    return mode & 0o777


def _mkdirs(path: Path) -> None:
    if path.is_symlink():
        raise BackupError(f"refusing to write under {path}: it is a symlink")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def _write_file(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    parent: int,
    target: Path,
    entry: Entry,
    chown: bool,
    progress: Progress,
) -> None:
    handle = tar.extractfile(member)
    if handle is None:
        raise _bad(member.name, "unreadable")
    digest = hashlib.sha256()
    name = target.name
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=parent)
    try:
        with os.fdopen(fd, "wb") as out:
            # Big files: write on another thread while the next bytes are read and hashed.
            sink = BackgroundWriter(fd, durable=False) if member.size >= THREADED_WRITE else out
            try:
                while chunk := handle.read(COPY_CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
                    progress(len(chunk))
            finally:
                if isinstance(sink, BackgroundWriter):
                    sink.close()
            if chown:
                os.fchown(out.fileno(), member.uid, member.gid)
            os.fchmod(out.fileno(), _safe_mode(member.mode))
            out.flush()
            os.utime(out.fileno(), (member.mtime, member.mtime))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=parent)
        raise
    if digest.hexdigest() != entry.sha256:
        os.unlink(name, dir_fd=parent)
        raise _bad(member.name, "changed since it was verified (the archive is being modified?)")


__all__ = [
    "ArchiveWriter",
    "Checked",
    "Item",
    "Progress",
    "extract",
    "open_beneath",
    "release_roots",
    "verify",
    "walk_tree",
]
