"""Exclusive lock files: an ``flock`` dies with its holder, so a killed process never
leaves a stale lock behind."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_lock(path: Path) -> int | None:
    """Hold an exclusive lock on ``path`` (created 0600); None if another process holds it.

    Close the returned descriptor to release the lock.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
