"""Loki's wire formats: push bodies in, query answers out (pure functions), and the
forwarder that copies stored lines to a real Loki.

Shapes follow Loki's HTTP API documentation: a push is ``{"streams": [{"stream": {labels},
"values": [["<ns>", "<line>"(, {metadata})], ...]}]}``; a log query answers
``{"status": "success", "data": {"resultType": "streams", "result": [{"stream", "values"}]}}``
with nanosecond strings, a metric query ``"matrix"`` (``[[<seconds>, "<value>"], ...]``)
or, for an instant query, ``"vector"`` (``"value": [<seconds>, "<value>"]``).

Protobuf+snappy and gzip bodies are decoded into the JSON shape by :mod:`.pushwire`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from socle.errors import ConfigError, SocleError
from socle.fs import write_private
from socle.observe.logs.model import NS, Entry, Row, Series

log = logging.getLogger("socle.observe.logs")

LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_LABELS = 30
MAX_LABEL_VALUE = 1024
MAX_LINE = 256 * 1024
MAX_ENTRIES = 100_000
MAX_NS = 2**63 - 1
OWN_APP = "socle"
"""The ``app`` label of Socle's own log records (see ``service.StoreHandler``): reserved."""


class PushError(ConfigError):
    """A push body that is not Loki's JSON push format."""


class UnsupportedPush(SocleError):
    """A push in a format this server cannot read (another content type or encoding)."""

    http_status = 415


def parse_time(value: str, what: str) -> int:
    """Nanoseconds from Loki's time forms: integer nanoseconds, float seconds, RFC 3339."""
    text = value.strip()
    try:
        if re.fullmatch(r"[0-9]{13,19}", text):
            ns = int(text)
        elif re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
            ns = int(float(text) * NS)
        else:
            ns = int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * NS)
    except (ValueError, OverflowError):
        raise ConfigError(
            f"{what}: {value[:40]!r} is not a time",
            hint="nanoseconds since the epoch, seconds (float) or RFC 3339",
        ) from None
    if not 0 <= ns <= MAX_NS:  # the store's column is a signed 64-bit integer
        raise ConfigError(
            f"{what}: {value[:40]!r} is out of range",
            hint="a time between 1970 and 2262 (nanoseconds fit in 64 bits)",
        )
    return ns


def parse_push(body: Any) -> list[Entry]:
    """Entries of a JSON push body; a bad body raises :class:`PushError` naming where."""
    if not isinstance(body, dict) or not isinstance(body.get("streams"), list):
        raise PushError('push: the body must be {"streams": [...]}')
    entries: list[Entry] = []
    for i, stream in enumerate(body["streams"]):
        where = f"push: streams[{i}]"
        if not isinstance(stream, dict):
            raise PushError(f"{where}: must be an object")
        labels = stream.get("stream", {})
        if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
            raise PushError(f"{where}.stream: must be an object of at most {MAX_LABELS} labels")
        for name, value in labels.items():
            if not LABEL_NAME.fullmatch(str(name)) or name.startswith("__"):
                raise PushError(f"{where}.stream: bad label name {str(name)[:40]!r}")
            if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE:
                raise PushError(
                    f"{where}.stream.{name}: must be a string of at most "
                    f"{MAX_LABEL_VALUE} characters"
                )
        if labels.get("app") == OWN_APP:
            raise PushError(
                f'{where}.stream.app: "{OWN_APP}" names the control plane\'s own records '
                "(a push cannot pass for them)",
                hint="push under another app name",
            )
        values = stream.get("values")
        if not isinstance(values, list):
            raise PushError(f"{where}.values: must be a list of [timestamp, line]")
        for j, value in enumerate(values):
            if (
                not isinstance(value, list)
                or len(value) not in (2, 3)
                or not isinstance(value[0], str)
                or not isinstance(value[1], str)
            ):
                raise PushError(f'{where}.values[{j}]: must be ["<ns>", "<line>"]')
            if len(value[1]) > MAX_LINE:
                raise PushError(f"{where}.values[{j}]: line longer than {MAX_LINE} characters")
            ts = parse_time(value[0], f"{where}.values[{j}][0]")
            entry_labels = dict(labels)
            if len(value) == 3 and isinstance(value[2], dict):
                trace = value[2].get("trace_id") or value[2].get("traceID")
                if isinstance(trace, str) and len(trace) <= 128:
                    entry_labels["trace_id"] = trace
            entries.append(Entry(ts, value[1], entry_labels))
            if len(entries) > MAX_ENTRIES:
                raise PushError(f"push: more than {MAX_ENTRIES} lines in one push")
    return entries


def _key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True)


def streams(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Rows grouped by stream, each stream's values in the rows' order."""
    grouped: dict[str, dict[str, Any]] = {}
    for row in rows:
        stream = grouped.setdefault(_key(row.labels), {"stream": row.labels, "values": []})
        stream["values"].append([str(row.ts), row.line])
    return list(grouped.values())


def _value(number: float) -> str:
    return repr(number) if number != int(number) else str(int(number))


def matrix(series: Iterable[Series]) -> list[dict[str, Any]]:
    return [
        {"metric": s.labels, "values": [[ts / NS, _value(v)] for ts, v in s.points]} for s in series
    ]


def vector(series: Iterable[Series]) -> list[dict[str, Any]]:
    return [
        {"metric": s.labels, "value": [s.points[-1][0] / NS, _value(s.points[-1][1])]}
        for s in series
        if s.points
    ]


def success(result_type: str, result: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": result_type, "result": result, "stats": {}},
    }


class Forwarder:
    """Copies every stored line to a real Loki: batches, retries with backoff, and a bound.

    It follows the store by sequence number (``fetch(after_seq, limit)``), so the store is
    the buffer: nothing is held in memory but one batch. While Loki is down the backlog
    grows; past ``max_backlog`` lines the oldest are skipped (counted in ``dropped``, by
    sequence numbers, which a failed write may leave holes in) so that a Loki gone for days
    cannot make the catch-up unbounded.

    With ``cursor_file``, the last sequence number Loki accepted is saved after every batch
    (with the URL it went to), so a restart resumes where the last run stopped: lines
    stored while Loki was down or Socle was stopped are sent, within the same bound. A
    first start, or a new URL, starts from the newest line (a new Loki is not sent the
    history). A line may be sent twice if Socle dies between Loki's answer and the save:
    at least once, never lost within the bound.
    """

    def __init__(
        self,
        url: str,
        fetch: Callable[[int, int], list[Row]],
        last_seq: Callable[[], int],
        *,
        batch: int = 1000,
        max_backlog: int = 100_000,
        interval: float = 1.0,
        max_backoff: float = 30.0,
        token: str | None = None,
        cursor_file: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/loki/api/v1/push"
        self._cursor_file = cursor_file
        self._fetch = fetch
        self._last_seq = last_seq
        self.batch = batch
        self.max_backlog = max_backlog
        self.interval = interval
        self.max_backoff = max_backoff
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.sent = 0
        self.dropped = 0
        self.failures = 0
        self.cursor: int | None = None

    async def run(self) -> None:
        import httpx  # the forwarder is optional: import its client only when it runs

        newest = await asyncio.to_thread(self._last_seq)
        saved = await asyncio.to_thread(self._load_cursor)
        # From where the last run stopped; else from now on, not history. A cursor past
        # the newest line (a store wiped since) starts from now too.
        self.cursor = saved if saved is not None and saved <= newest else newest
        backoff = self.interval
        async with httpx.AsyncClient(timeout=10.0) as client:
            while True:
                newest = await asyncio.to_thread(self._last_seq)
                if newest - self.cursor > self.max_backlog:
                    self.dropped += newest - self.cursor - self.max_backlog
                    self.cursor = newest - self.max_backlog
                rows = await asyncio.to_thread(self._fetch, self.cursor, self.batch)
                if not rows:
                    await asyncio.sleep(self.interval)
                    continue
                body = {"streams": streams(rows)}
                try:
                    response = await client.post(self.url, json=body, headers=self._headers)
                    ok = response.status_code < 300
                    permanent = 400 <= response.status_code < 500 and response.status_code != 429
                except httpx.HTTPError:
                    ok, permanent = False, False
                if ok or permanent:
                    if permanent:
                        log.warning(
                            "loki refused %d lines (HTTP %d): skipped",
                            len(rows),
                            response.status_code,
                        )
                        self.dropped += len(rows)
                    else:
                        self.sent += len(rows)
                    self.cursor = max(row.seq for row in rows)
                    await asyncio.to_thread(self._save_cursor, self.cursor)
                    backoff = self.interval
                    continue
                self.failures += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _load_cursor(self) -> int | None:
        if self._cursor_file is None:
            return None
        try:
            saved = json.loads(self._cursor_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # unreadable: start from now, say so
            log.warning("loki forwarder: ignoring %s: %s", self._cursor_file, exc)
            return None
        if not isinstance(saved, dict) or saved.get("url") != self.url:
            return None  # another Loki: it does not want this one's backlog
        seq = saved.get("seq")
        return seq if isinstance(seq, int) and seq >= 0 else None

    def _save_cursor(self, seq: int) -> None:
        if self._cursor_file is not None:
            write_private(self._cursor_file, json.dumps({"url": self.url, "seq": seq}))

    def status(self) -> dict[str, object]:
        return {
            "url": self.url,
            "cursor": self.cursor,
            "sent": self.sent,
            "dropped": self.dropped,
            "failures": self.failures,
        }


def now_ns() -> int:
    return time.time_ns()


__all__ = [
    "Forwarder",
    "PushError",
    "UnsupportedPush",
    "matrix",
    "now_ns",
    "parse_push",
    "parse_time",
    "streams",
    "success",
    "vector",
]
