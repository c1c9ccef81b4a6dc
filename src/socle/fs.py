"""Private files, private folders and lock files: the one way Socle writes them.

Everything under ``SOCLE_HOME`` is owner-only (the admin token, the dev unseal key, runtime
records, the state database), so the rules live here once:

- :func:`write_private` replaces a file atomically (a temporary file in the same folder,
  then ``rename``): readers see the old or the new content, never half of it, and the file
  is created ``0600``, never briefly wider (no ``chmod`` after the fact). The temporary file
  is opened with ``O_EXCL | O_NOFOLLOW``, so a planted symlink cannot redirect the write.
- :func:`private_dir` creates a folder ``0700`` and tightens an existing one;
  :func:`open_private_append` opens a log ``0600`` (tightening an older, wider one).
- :func:`try_lock` / :func:`lock` hold an ``flock``, which dies with its holder: a killed
  process never leaves a stale lock behind. The lock file is re-checked after locking: a lock
  taken on a file that someone replaced meanwhile protects nothing, so it is taken again.

Ground floor: imports nothing of Socle.
"""

from __future__ import annotations

import fcntl
import os
import secrets
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


__all__ = ["lock", "open_private_append", "private_dir", "try_lock", "write_private"]
