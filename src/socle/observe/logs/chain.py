"""The integrity chain of sealed log segments, and its offline verifier.

Every sealed segment (an immutable Parquet file under ``segments/``) gets one line in
``chain.jsonl``; retention removing a segment appends a ``drop`` line *before* the file is
unlinked. Each line carries the SHA-256 of the previous line (``prev``) and of its own body
(``hash``), like the secrets audit chain, and a seal line carries the SHA-256 of the
segment's bytes. ``chain.head`` holds the last line's hash, written after the line, so a
chain cut at the end is caught too (unless the head file is rewritten as well: anchor the
head printed by ``socle logs verify`` elsewhere to catch that).

:func:`verify` needs nothing but the files (no DuckDB, no running server) and reports every
problem: an edited or removed chain line, a segment missing without a ``drop`` line, a
``drop`` line retention would not have written (not the oldest live segment: a segment
removed by hand and chained again), a segment whose bytes changed, a segment file the
chain does not know.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from socle.fs import write_private
from socle.observe.logs.model import LogStoreError

CHAIN = "chain.jsonl"
HEAD = "chain.head"
SEGMENTS = "segments"
GENESIS = ""
DROP_REASONS = ("age", "size")
"""Why retention drops a segment (the only writer of drop lines)."""


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (blocking)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _line(entry: dict[str, Any], prev: str) -> tuple[bytes, str]:
    body = json.dumps({**entry, "prev": prev}, sort_keys=True, separators=(",", ":"))
    own = hashlib.sha256(body.encode()).hexdigest()
    return (body[:-1] + f',"hash":"{own}"}}').encode(), own


@dataclass
class Segment:
    """One sealed segment as the chain describes it."""

    n: int
    file: str
    sha256: str
    rows: int
    bytes: int
    min_ts: int
    max_ts: int
    max_seq: int
    apps: list[str] = field(default_factory=list)
    dropped: bool = False


class Chain:
    """The writer side: appends seal and drop lines, keeps the live segments in memory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.segments: dict[int, Segment] = {}
        self.gone: set[int] = set()
        """Segments dropped by retention or replaced by a compaction (files may linger
        after a crash: they are removed at the next open)."""
        self.head = GENESIS
        self.next_n = 1
        self.max_seq = 0
        path = root / CHAIN
        if path.exists():
            content = path.read_bytes()
            *complete, torn = content.split(b"\n")
            for number, raw in enumerate(complete, 1):
                try:
                    entry = json.loads(raw)
                    self._apply(entry)
                    self.head = str(entry["hash"])
                except (ValueError, KeyError, TypeError):
                    raise LogStoreError(
                        f"{path}:{number}: not a chain line; the log store will not write "
                        "after a chain it cannot read",
                        hint="run `socle logs verify` to see what was changed",
                    ) from None
            if torn:
                self._drop_torn(path, len(content) - len(torn))

    def _drop_torn(self, path: Path, keep: int) -> None:
        """A last line without its newline: an append cut by a crash (power loss) before
        its fsync, so before the head named it. Then, and only then, it is cut off; a
        head naming anything else means the chain was cut by hand, and nothing is
        written after it (its seal's file is an orphan the store removes; its rows are
        still hot)."""
        head_file = self.root / HEAD
        head = head_file.read_text().strip() if head_file.exists() else GENESIS
        if head != self.head:
            raise LogStoreError(
                f"{path} ends with a partial line and {HEAD} names "
                f"{head[:12] or 'nothing'}, not the last whole line",
                hint="run `socle logs verify`: the chain was cut or edited",
            )
        with open(path, "r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())

    def _apply(self, entry: dict[str, Any]) -> None:
        if entry["kind"] == "seal":
            seg = Segment(
                **{
                    k: entry[k]
                    for k in Segment.__dataclass_fields__
                    if k in entry and k != "dropped"
                }
            )
            self.segments[seg.n] = seg
            self.next_n = max(self.next_n, seg.n + 1)
            self.max_seq = max(self.max_seq, seg.max_seq)
            for old in entry.get("replaces", []):
                self.segments.pop(int(old), None)
                self.gone.add(int(old))
        elif entry["kind"] == "drop":
            self.segments.pop(int(entry["n"]), None)
            self.gone.add(int(entry["n"]))

    def append(self, entry: dict[str, Any]) -> None:
        """Write one line durably (fsync), then the head file; then apply it in memory."""
        line, own = _line(entry, self.head)
        fd = os.open(self.root / CHAIN, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        write_private(self.root / HEAD, own + "\n")
        self.head = own
        self._apply(entry)

    def live(self) -> list[Segment]:
        return [self.segments[n] for n in sorted(self.segments)]

    def path(self, seg: Segment) -> Path:
        return self.root / SEGMENTS / seg.file


@dataclass
class Report:
    ok: bool
    segments: int
    dropped: int
    lines: int
    head: str
    problems: list[str]

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "segments": self.segments,
            "dropped": self.dropped,
            "chain_lines": self.lines,
            "head": self.head,
            "problems": self.problems,
        }


def verify(root: Path) -> Report:
    """Check the chain and every live segment under ``root`` (blocking; read-only)."""
    problems: list[str] = []
    prev = GENESIS
    live: dict[int, dict[str, Any]] = {}
    dropped: set[int] = set()
    count = 0
    chain = root / CHAIN
    raw_lines = chain.read_bytes().splitlines() if chain.exists() else []
    for number, raw in enumerate(raw_lines, 1):
        count = number
        try:
            entry = json.loads(raw)
            claimed = str(entry.pop("hash"))
        except (ValueError, KeyError, AttributeError):
            problems.append(f"{CHAIN}:{number}: not a chain line")
            break
        if entry.get("prev") != prev:
            problems.append(f"{CHAIN}:{number}: does not follow the line before (edited/removed)")
        line, own = _line({k: v for k, v in entry.items() if k != "prev"}, str(entry.get("prev")))
        if own != claimed or line != raw:
            problems.append(f"{CHAIN}:{number}: line was edited (its hash does not match)")
        prev = claimed
        if entry.get("kind") == "seal":
            live[int(entry["n"])] = entry
            for old in entry.get("replaces", []):  # a compaction: merged into this one
                dropped.add(int(old))
                live.pop(int(old), None)
        elif entry.get("kind") == "drop":
            n = int(entry["n"])
            # Retention drops the oldest live segment first, for age or size, and nothing
            # else writes drop lines: any other drop is a segment removed by hand and
            # chained again to hide it.
            if n not in live:
                problems.append(f"{CHAIN}:{number}: drops segment {n}, which is not live")
            elif n != min(live):
                problems.append(
                    f"{CHAIN}:{number}: drops segment {n} while the older segment {min(live)} "
                    "is kept (retention drops the oldest first: removed by hand?)"
                )
            if entry.get("reason") not in DROP_REASONS:
                problems.append(f"{CHAIN}:{number}: drop reason {entry.get('reason')!r} unknown")
            dropped.add(n)
            live.pop(n, None)
    head_file = root / HEAD
    head = head_file.read_text().strip() if head_file.exists() else GENESIS
    if head != prev:
        problems.append(
            f"{HEAD}: names {head[:12] or 'nothing'}, the chain ends at "
            f"{prev[:12] or 'nothing'} (lines cut off the end of the chain)"
        )
    known: set[str] = set()
    for n, entry in sorted(live.items()):
        path = root / SEGMENTS / str(entry["file"])
        known.add(path.name)
        if not path.exists():
            problems.append(f"segment {n} ({path.name}) is missing (removed without retention)")
        elif file_digest(path) != entry["sha256"]:
            problems.append(f"segment {n} ({path.name}) was modified (SHA-256 differs)")
    seg_dir = root / SEGMENTS
    dropped_files = {f"{n:08d}.parquet" for n in dropped}
    if seg_dir.exists():
        for path in sorted(seg_dir.iterdir()):
            if (
                path.name not in known
                and path.name not in dropped_files
                and path.suffix == ".parquet"
            ):
                problems.append(f"segment file {path.name} is not in the chain (added by hand?)")
    return Report(not problems, len(live), len(dropped), count, prev, problems)


__all__ = ["CHAIN", "HEAD", "SEGMENTS", "Chain", "Report", "Segment", "file_digest", "verify"]
