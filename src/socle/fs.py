"""Private files, private folders and lock files: the one way Socle writes them.

Everything under ``SOCLE_HOME`` is owner-only (the admin token, the dev unseal key, runtime
records, the state database), so the rules live here once:

- :func:`write_private` replaces a file atomically (a temporary file in the same folder,
  then ``rename``): readers see the old or the new content, never half of it, and the file
  is created ``0600``, never briefly wider (no ``chmod`` after the fact). The temporary file
  is opened with ``O_EXCL | O_NOFOLLOW``, so a planted symlink cannot redirect the write.
- :func:`private_dir` creates a folder ``0700`` and tightens an existing one;
  :func:`open_private_append` opens a log ``0600`` (tightening an older, wider one).
- :func:`tighten` walks a home made by an older version (or under a loose umask) once at
  start and removes group/other bits; the server then runs with :data:`UMASK`.
- :func:`try_lock` / :func:`lock` hold an ``flock``, which dies with its holder: a killed
  process never leaves a stale lock behind. The lock file is re-checked after locking: a lock
  taken on a file that someone replaced meanwhile protects nothing, so it is taken again.

Ground floor: imports nothing of Socle.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) owner-only, or tighten it to ``0700`` if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)
    return path


def write_private(path: Path, data: bytes | str, *, durable: bool = False) -> None:
    """Create or replace ``path`` with ``data``, mode 0600, atomically.

    The parent folder is created if missing (owner-only). ``durable`` also fsyncs the file
    before the rename, for data that must survive a power cut (not needed for files that
    are rewritten at every start).
    """
    body = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, PRIVATE_FILE)
    try:
        view = memoryview(body)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def open_private_append(path: Path) -> int:
    """A descriptor appending to ``path``, created 0600; an existing file is tightened to
    0600 (a log written by an older version may be wider). Symlinks are not followed."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


UMASK = 0o077
"""The control plane's umask: nothing it creates is readable by others."""


@dataclass
class Tightened:
    """What :func:`tighten` changed (for one log line)."""

    folders: int = 0
    files: int = 0


def _strip(path: str, mode: int, want: int | None = None) -> bool:
    new = want if want is not None else stat.S_IMODE(mode) & 0o700
    if stat.S_IMODE(mode) == new:
        return False
    os.chmod(path, new, follow_symlinks=False)
    return True


UNWALKED = ("releases", "volumes")
"""Folders of the home whose contents :func:`tighten` leaves alone (see there)."""


def tighten(home: Path) -> Tightened:
    """Walk ``home`` once: folders to 0700, files to their owner bits only.

    For homes made by older versions or under a loose umask (the WAL/SHM of SQLite, logs,
    releases). Symbolic links are never followed (a link planted in the home must not let
    us chmod a file elsewhere); entries owned by another uid (an app's volume, chowned on
    purpose) are left as they are, entries given to another group keep their group bits
    (shared on purpose with one app), and otherwise only group/other bits are removed, so
    executables in releases stay executable.

    The contents of ``releases/`` and ``volumes/`` (the folders themselves become 0700, which
    keeps everyone else out) are not walked: a sealed release is
    root-owned and world-readable on purpose (the app's uid reads its code through a
    read-only bind; its modes are part of its seal), a volume's data is the app's, and
    walking a volume of millions of files would let an app slow every start.
    """
    done = Tightened()
    try:
        top = os.lstat(home)
    except FileNotFoundError:
        return done
    if not stat.S_ISDIR(top.st_mode):
        return done
    if _strip(str(home), top.st_mode, 0o700):
        done.folders += 1
    for root, dirs, files in os.walk(home, followlinks=False):
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue  # an instance removed it meanwhile
            if stat.S_ISLNK(info.st_mode) or info.st_uid != top.st_uid:
                continue  # links are not followed; app-owned files (volumes) are the app's
            # Shared on purpose with one group (an app's gid, e.g. its read-only release): the
            # group keeps its bits; anyone else never.
            keep = 0o770 if info.st_gid != top.st_gid else 0o700
            try:
                if stat.S_ISDIR(info.st_mode):
                    want = 0o700 if keep == 0o700 else stat.S_IMODE(info.st_mode) & keep
                    done.folders += _strip(path, info.st_mode, want)
                elif _strip(path, info.st_mode, stat.S_IMODE(info.st_mode) & keep):
                    done.files += 1
            except FileNotFoundError:
                continue
        if root == str(home):
            dirs[:] = [d for d in dirs if d not in UNWALKED]
    return done


def lock(path: Path, *, blocking: bool) -> int | None:
    """Hold an exclusive flock on ``path`` (created 0600); close the descriptor to release.

    Non-blocking: None when another process holds it. The file is re-opened if it was
    replaced (or removed) between the open and the lock.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def try_lock(path: Path) -> int | None:
    """:func:`lock` without waiting: the descriptor, or None if another process holds it."""
    return lock(path, blocking=False)


__all__ = [
    "UMASK",
    "Tightened",
    "lock",
    "open_private_append",
    "private_dir",
    "tighten",
    "try_lock",
    "write_private",
]
