"""The tamper-evident line format of audit files, and its offline verifier.

Each line is one JSON object that ends with two fields added by the writer::

    {..., "prev_hash": "<sha256 of the previous line>", "hash": "<sha256 of this line's body>"}

``prev_hash`` chains every line to the one before it (the first line of a file has ""), so
a deleted or reordered line breaks the chain at the next line. ``hash`` covers the line
itself (everything before ``,"hash":...``), so an edited line is caught *at that line*
unless the editor also recomputed it, in which case the next line's ``prev_hash`` catches
it. The verifier works on the bytes as written (no re-serialisation), needs no key, and
reports the first bad line.

What a chain without a key cannot catch: lines cut off at the end of the file, or a whole
file rewritten with a fresh chain. ``verify`` prints the last hash and the line count so
an operator can anchor them elsewhere (a ticket, another host) and compare later.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socle.secrets.core import _json

GENESIS = ""
_SUFFIX = re.compile(rb',"hash":"([0-9a-f]{64})"\}$')


def digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def dumps(value: Any) -> bytes:
    """The JSON of audit lines: compact, ASCII only (``json.dumps`` with those options)."""
    return _json.dumps(value)


def seal_line(entry: dict[str, Any], prev_hash: str) -> bytes:
    """Serialise ``entry`` as one chained line (without the newline)."""
    body = dumps({**entry, "prev_hash": prev_hash})
    return body[:-1] + b',"hash":"' + digest(body).encode() + b'"}'


def seal_body(fields: bytes, prev_hash: str) -> tuple[bytes, str]:
    """:func:`seal_line` for an entry already serialised: ``fields`` is its JSON without
    the closing brace (``{"time":...``, at least one field), as the audit writer builds it.
    Returns the line and its digest (the next line's ``prev_hash``), hashing the shared
    prefix of the two only once."""
    body = fields + b',"prev_hash":"' + prev_hash.encode() + b'"'
    prefix = hashlib.sha256(body)
    own = prefix.copy()
    own.update(b"}")
    suffix = b',"hash":"' + own.hexdigest().encode() + b'"}'
    prefix.update(suffix)
    return body + suffix, prefix.hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    lines: int
    """Lines checked (all of them when ``ok``)."""
    bad_line: int | None = None
    """1-based number of the first line that fails, when not ``ok``."""
    reason: str = ""
    last_hash: str = GENESIS

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "lines": self.lines,
            "bad_line": self.bad_line,
            "reason": self.reason,
            "last_hash": self.last_hash,
        }


def verify_lines(lines: Iterable[bytes]) -> VerifyResult:
    previous = GENESIS
    count = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\n")
        count = number
        match = _SUFFIX.search(line)
        if match is None:
            return VerifyResult(False, number - 1, number, "not a chained audit line", previous)
        body = line[: match.start()] + b"}"
        if digest(body) != match.group(1).decode():
            return VerifyResult(
                False, number - 1, number, "line was modified (hash mismatch)", previous
            )
        try:
            entry = json.loads(body)
        except ValueError:
            return VerifyResult(False, number - 1, number, "line is not valid JSON", previous)
        if not isinstance(entry, dict) or entry.get("prev_hash") != previous:
            return VerifyResult(
                False,
                number - 1,
                number,
                "chain broken: prev_hash does not match the previous line "
                "(a line was removed, reordered or modified before this one)",
                previous,
            )
        previous = digest(line)
    return VerifyResult(True, count, None, "", previous)


def verify_file(path: Path) -> VerifyResult:
    with path.open("rb") as handle:
        return verify_lines(handle)


def last_line_hash(path: Path) -> str:
    """The hash to chain the next line to when appending to an existing file."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            end = handle.tell()
            if end == 0:
                return GENESIS
            block = 4096
            position = end
            data = b""
            while position > 0:
                step = min(block, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
                stripped = data.rstrip(b"\n")
                cut = stripped.rfind(b"\n")
                if cut >= 0:
                    return digest(stripped[cut + 1 :])
            return digest(data.rstrip(b"\n"))
    except FileNotFoundError:
        return GENESIS
