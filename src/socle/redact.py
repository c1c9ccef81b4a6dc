"""Mask resolved secret values wherever text leaves the control plane.

The engine resolves secret references when it starts instances; every value it resolves is
added to one :class:`Redactor` (through :class:`RedactingReader`, wrapped around the secrets
reader at the composition root). The redactor then replaces those values with ``****`` in
every log record (:class:`RedactingFilter` on the server's handlers), in API error
messages and in status and revision messages. A value also shows up quoted by ``repr`` or
JSON, so those spellings are masked too (and quoted twice: an app's JSON line inside the
runtime's JSON log line).

Values shorter than :data:`MIN_LENGTH` are not masked: masking "1" or "yes" everywhere
would destroy every message and reveal the value by its holes anyway.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any, Protocol

MASK = "****"
MASK_BYTES = MASK.encode()
MIN_LENGTH = 4


class Redactor:
    """The set of secret values seen so far, and a function that masks them in text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._bytes_pattern: re.Pattern[bytes] | None = None
        self._lock = threading.Lock()  # log records come from threads too

    def add(self, value: str) -> None:
        if len(value) < MIN_LENGTH:
            return
        quoted = {
            value,
            repr(value)[1:-1],
            json.dumps(value)[1:-1],
            # JSON that keeps non-ASCII as is (the runtime's log files, most JSON loggers)
            json.dumps(value, ensure_ascii=False)[1:-1],
        }
        # Quoted twice: an app's own JSON (or repr) line inside the runtime's JSON log
        # line, which is what the log store masks before it decodes it.
        spellings = quoted | {
            json.dumps(inner, ensure_ascii=ascii_only)[1:-1]
            for inner in quoted
            for ascii_only in (True, False)
        }
        with self._lock:
            if spellings <= self._values:
                return
            self._values |= spellings
            # Longest first: a value that contains another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
            self._bytes_pattern = re.compile(b"|".join(re.escape(v.encode()) for v in ordered))

    def __call__(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(MASK, text)

    def mask_bytes(self, data: bytes) -> bytes:
        """UTF-8 ``data`` masked without decoding it (the log store's bulk path, about three
        times faster than decode, mask, encode). Same result as :meth:`__call__` on valid
        UTF-8: the encoding is self-synchronising, so a value's bytes match only where the
        value is. Callers make invalid UTF-8 valid first."""
        pattern = self._bytes_pattern
        return data if pattern is None else pattern.sub(MASK_BYTES, data)

    def deep(self, data: Any) -> Any:
        """``data`` (JSON-like) with every string masked."""
        if isinstance(data, str):
            return self(data)
        if isinstance(data, dict):
            return {k: self.deep(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.deep(v) for v in data]
        return data


class RedactingFilter(logging.Filter):
    """Formats a record's message once, masked; args are dropped so nothing re-formats it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        masked = self._redact(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True


class _Reader(Protocol):
    async def read_for_app(self, policies: list[str], path: str, key: str) -> tuple[str, int]: ...


class RedactingReader:
    """A secrets reader that remembers every value it hands out in ``redactor``."""

    def __init__(self, reader: _Reader, redactor: Redactor) -> None:
        self._reader = reader
        self._redactor = redactor

    async def read_for_app(self, policies: list[str], path: str, key: str) -> tuple[str, int]:
        value, version = await self._reader.read_for_app(policies, path, key)
        self._redactor.add(value)
        return value, version


def install(redactor: Redactor) -> None:
    """Mask every handler of the root logger (call after logging is configured)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(redactor))
