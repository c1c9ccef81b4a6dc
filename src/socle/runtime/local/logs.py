"""Reading instance logs: the JSON-lines files the shims write, rotated by size.

``<logs_dir>/<id>.log`` is the current file, ``<id>.log.1`` the newest backup, up to
``<id>.log.N`` the oldest. Readers go oldest first. Files outlive the instance (the lead's
GC removes them), so :func:`read_logs` works for stopped instances too.

Following polls the current file's size every 0.2 s while someone follows (no task exists
otherwise) and notices rotation by the inode behind the path changing: it finishes the old
file through its open descriptor, then opens the new one from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from socle.runtime.driver import InstanceId, LogLine

CHUNK = 1 << 20
FOLLOW_POLL = 0.2


def log_path(logs_dir: Path, instance_id: str) -> Path:
    return logs_dir / f"{instance_id}.log"


def log_files(logs_dir: Path, instance_id: str) -> list[Path]:
    """Existing files of an instance, oldest first."""
    base = log_path(logs_dir, instance_id)
    backups: list[tuple[int, Path]] = []
    for path in logs_dir.glob(f"{instance_id}.log.*"):
        suffix = path.name.rsplit(".", 1)[1]
        if suffix.isdigit():
            backups.append((int(suffix), path))
    files = [path for _, path in sorted(backups, reverse=True)]
    if base.exists():
        files.append(base)
    return files


def parse_line(raw: bytes, instance_id: InstanceId) -> LogLine | None:
    try:
        data = json.loads(raw)
        return LogLine(float(data["t"]), instance_id, str(data["s"]), str(data["m"]))
    except (ValueError, KeyError, TypeError):
        return None


class _Reader:
    """An open log file read forward in chunks, keeping a partial last line for later."""

    def __init__(self, path: Path, instance_id: InstanceId) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.inode = os.fstat(self.fd).st_ino
        self.instance = instance_id
        self.partial = b""

    def read(self, since: float | None) -> tuple[list[LogLine], bool]:
        """Up to CHUNK bytes of complete lines; the flag says there may be more."""
        data = os.read(self.fd, CHUNK)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        out = []
        for raw in lines:
            line = parse_line(raw, self.instance)
            if line is not None and (since is None or line.time >= since):
                out.append(line)
        return out, len(data) == CHUNK

    def has_more(self) -> bool:
        return os.fstat(self.fd).st_size > os.lseek(self.fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        os.close(self.fd)


def _open(path: Path, instance_id: InstanceId) -> _Reader | None:
    try:
        return _Reader(path, instance_id)
    except FileNotFoundError:
        return None


def read_logs(logs_dir: Path, instance_id: str, since: float | None = None) -> Iterator[LogLine]:
    """All stored lines of an instance, oldest first (blocking; works after it stopped)."""
    iid = InstanceId(instance_id)
    for path in log_files(logs_dir, iid):
        reader = _open(path, iid)
        if reader is None:
            continue
        try:
            more = True
            while more:
                lines, more = reader.read(since)
                yield from lines
        finally:
            reader.close()


def last_line(
    logs_dir: Path, instance_id: str, stream: str = "stderr", *, since: float | None = None
) -> str | None:
    """The newest line of one stream in the current file, not older than ``since`` (for
    status messages: a crash must not be explained by an earlier run's output; blocking)."""
    path = log_path(logs_dir, instance_id)
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 16384))
            tail = handle.read().split(b"\n")
    except OSError:
        return None
    for raw in reversed(tail):
        line = parse_line(raw, InstanceId(instance_id))
        if line is not None and line.stream == stream:
            return line.text if since is None or line.time >= since else None
    return None


def _newer_backups(logs_dir: Path, instance_id: str, reader: _Reader) -> list[Path]:
    """Backups rotated after the file ``reader`` has open, oldest first."""
    backups = [p for p in log_files(logs_dir, instance_id) if p.suffix != ".log"]
    for index, path in enumerate(backups):
        with contextlib.suppress(OSError):
            if path.stat().st_ino == reader.inode:
                return backups[index + 1 :]
    return backups


async def _drain(reader: _Reader, since: float | None) -> AsyncIterator[LogLine]:
    more = True
    while more:
        lines, more = await asyncio.to_thread(reader.read, since)
        for line in lines:
            yield line


async def _drain_files(
    paths: list[Path], instance_id: InstanceId, since: float | None
) -> AsyncIterator[LogLine]:
    """Every line of these whole (rotated) files, in order."""
    for path in paths:
        reader = _open(path, instance_id)
        if reader is None:
            continue
        try:
            async for line in _drain(reader, since):
                yield line
        finally:
            reader.close()


async def stream_logs(
    logs_dir: Path, instance_id: InstanceId, *, since: float | None, follow: bool
) -> AsyncIterator[LogLine]:
    """The async side: history oldest first, then (with ``follow``) new lines until cancelled."""
    path = log_path(logs_dir, instance_id)
    files = await asyncio.to_thread(log_files, logs_dir, instance_id)
    async for line in _drain_files([f for f in files if f != path], instance_id, since):
        yield line
    current = _open(path, instance_id)
    try:
        if current is not None:
            async for line in _drain(current, since):
                yield line
        while follow:
            await asyncio.sleep(FOLLOW_POLL)
            if current is None:
                current = _open(path, instance_id)
                if current is None:
                    continue
            if current.has_more():
                async for line in _drain(current, since):
                    yield line
            try:
                rotated = os.stat(path).st_ino != current.inode
            except FileNotFoundError:
                rotated = True
            if rotated:
                # What the shim wrote before rotating is still behind our descriptor; files
                # rotated in between (fast writers) are the backups newer than ours.
                async for line in _drain(current, since):
                    yield line
                skipped = await asyncio.to_thread(_newer_backups, logs_dir, instance_id, current)
                current.close()
                current = None
                async for line in _drain_files(skipped, instance_id, since):
                    yield line
                current = _open(path, instance_id)
                if current is not None:
                    async for line in _drain(current, since):
                        yield line
    finally:
        if current is not None:
            with contextlib.suppress(OSError):
                current.close()
