"""Reading the shims' log files into the store, from the last committed offset.

A shim appends JSON lines to ``<logs_dir>/<id>.log`` and rotates it to ``.log.1`` ... by
renaming, so a file keeps its inode: the offset of an instance is (inode, position), and
after a rotation the file with that inode is found again among the backups and read to its
end before the newer ones. Only complete lines are read from the current file (the shim may
be writing the rest). A file rotated out of reach while the control plane was down is
counted as lost lines (logged), never silently skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from socle.observe.logs.model import Chunk, InstanceLabels, Store
from socle.runtime.local.logs import log_files

log = logging.getLogger("socle.observe.logs")

CHUNK = 32 * 1024 * 1024
"""Most bytes read from one file at once."""
BATCH_BYTES = 64 * 1024 * 1024
"""Most bytes held before they are stored (bounds memory during a catch-up)."""
MAX_LINE_BYTES = 128 * 1024
"""More than a shim's longest line (16 KiB of text, JSON-escaped)."""


def instance_ids(logs_dir: Path) -> list[str]:
    if not logs_dir.is_dir():
        return []
    ids = set()
    for path in logs_dir.glob("*.log*"):
        name, _, suffix = path.name.rpartition(".log")
        if name and (not suffix or suffix[1:].isdigit()):
            ids.add(name)  # ``<id>.log`` or a backup ``<id>.log.N`` (mid-rotation)
    return sorted(ids)


def _read(path: Path, inode: int, pos: int, whole: bool) -> bytes | None:
    """Bytes from ``pos`` up to the last newline (all of them for a rotated file); None if
    the path is gone or is another file now (rotated since it was listed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_ino != inode:
            return None
        data = os.pread(fd, CHUNK, pos)
    finally:
        os.close(fd)
    if not whole or len(data) == CHUNK:
        cut = data.rfind(b"\n")
        data = data[: cut + 1]
    return data


def chunks_of(
    logs_dir: Path,
    instance: str,
    labels: InstanceLabels,
    offset: tuple[int, int] | None,
) -> Iterator[Chunk]:
    """What ``instance``'s files hold past ``offset``, as chunks to store in this order
    (each with the offset to commit with it)."""
    files = log_files(logs_dir, instance)
    inodes = []
    for path in files:
        try:
            inodes.append(os.stat(path).st_ino)
        except FileNotFoundError:
            inodes.append(-1)
    start_index, pos = 0, 0
    if offset is not None:
        inode, saved = offset
        if inode in inodes:
            start_index, pos = inodes.index(inode), saved
        else:
            log.warning(
                "log files of %s were rotated away before they were read: lines lost", instance
            )
    for index in range(start_index, len(files)):
        current = index == len(files) - 1
        while True:
            inode = inodes[index]
            data = _read(files[index], inode, pos, whole=not current)
            if data is None:
                return  # rotated under us: the next pass lists the files again
            if not data:
                if not current:
                    # A rotated file read to its end: the offset moves to the next one.
                    yield Chunk(instance, labels, b"", inodes[index + 1], 0)
                break
            pos += len(data)
            yield Chunk(instance, labels, data, inode, pos)
            if current and len(data) < CHUNK - MAX_LINE_BYTES:
                break
        pos = 0


def tail_instance(
    store: Store,
    logs_dir: Path,
    instance: str,
    labels: InstanceLabels,
    offset: tuple[int, int] | None,
) -> int:
    """Store what ``instance``'s files hold past ``offset``; returns the lines stored."""
    return sum(store.ingest_chunks([c]) for c in chunks_of(logs_dir, instance, labels, offset))


def _unchanged(logs_dir: Path, instance: str, offset: tuple[int, int]) -> bool:
    """Whether the current file is the one read last and has not grown: one ``stat`` per
    idle instance and pass (200 quiet instances cost 200 stats every half second)."""
    try:
        st = os.stat(logs_dir / f"{instance}.log")
    except FileNotFoundError:
        return False
    return (st.st_ino, st.st_size) == offset


def tail_all(store: Store, logs_dir: Path, labels_of: Callable[[str], InstanceLabels]) -> int:
    """One pass over every instance's files (blocking), stored in as few transactions as
    the memory budget allows (each commit costs a WAL sync)."""
    offsets = store.offsets()
    total = 0
    batch: list[Chunk] = []
    size = 0
    present = instance_ids(logs_dir)
    store.forget(sorted(set(offsets) - set(present)))
    for instance in present:
        offset = offsets.get(instance)
        if offset is not None and _unchanged(logs_dir, instance, offset):
            continue
        for chunk in chunks_of(logs_dir, instance, labels_of(instance), offset):
            batch.append(chunk)
            size += len(chunk.data)
            if size >= BATCH_BYTES:
                total += store.ingest_chunks(batch)
                batch, size = [], 0
    if batch:
        total += store.ingest_chunks(batch)
    return total


__all__ = ["chunks_of", "instance_ids", "tail_all", "tail_instance"]
