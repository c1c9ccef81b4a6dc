"""Notifiers: GitOps events posted to webhooks in the background.

Each event a notifier subscribes to becomes one delivery, queued and posted by one
background task (a slow receiver never holds a sync), retried with exponential backoff
(``RETRIES`` attempts) on a connection error, a 5xx or a 429; every delivery is recorded
(``gitops/notifications/<n>``, the last ``KEEP`` kept) with its attempts and outcome.

Chat bodies are text a chat client renders: every field is cut of control and
bidirectional-override characters, and Slack's ``&``/``<``/``>`` (links, ``<!channel>``
mentions) or Teams' markdown and HTML are escaped, so a commit message, a metric label or
an alert annotation shows as the words it is and never as a link, a mention or markup.

Deliveries go only where the URL's host resolves, now, to an allowed address
(:func:`socle.model.notifier.forbidden_address`: never link-local or a cloud metadata
service), and the connection is made to the very address checked (no second lookup a
rebinding DNS server could answer differently); redirects are never followed.

Payloads carry only the event (environment, source, event, message, time; for the alert
events also the alert's name, state, labels, annotations and times, see
:mod:`socle.observe.alerts.forward`): messages are already scrubbed of credentials by the
Git layer (alerts by the control plane's redactor), and the HMAC key signs the body (header
``X-Socle-Signature-256: sha256=<hex>``) without ever being part of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from socle.model.notifier import Notifier, forbidden_address
from socle.state.store import StateStore
from socle.tasks import TaskGroup

log = logging.getLogger(__name__)

NOTIFIERS = "gitops/notifiers/"
DELIVERIES = "gitops/notifications/"
KEEP = 500
RETRIES = 5
BACKOFF = 0.5
"""First retry after 0.5 s, then 1, 2, 4 s."""
TIMEOUT = 10.0
SIGNATURE_HEADER = "X-Socle-Signature-256"

SecretFor = Callable[[Notifier], Awaitable[str | None]]


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Control characters (all but tab and newline) and the bidirectional overrides that make
text read differently than it is (U+202E)."""
_SLACK = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_TEAMS = re.compile(r"([\\`*_{}\[\]()#|~<>&])")


def clean(value: object) -> str:
    """``value`` as text without control or bidi-override characters (tabs and newlines
    become spaces: one event, one line)."""
    return _CONTROLS.sub("", str(value)).replace("\t", " ").replace("\n", " ")


def slack_escape(text: str) -> str:
    """Slack's three control characters as entities: no ``<url|label>`` link, no
    ``<!channel>`` or ``<@user>`` mention comes from an event's text."""
    return text.translate(_SLACK)


def teams_escape(text: str) -> str:
    """Markdown and HTML characters of a MessageCard's text, backslash-escaped."""
    return _TEAMS.sub(r"\\\1", text)


def _text(event: dict[str, Any], escape: Callable[[str], str] = str) -> str:
    """One line for a chat; every piece that comes from the event goes through ``clean``
    and ``escape`` (Socle's own brackets stay as they are)."""

    def field(value: object) -> str:
        return escape(clean(value))

    alert = event.get("alert")
    message = field(event.get("message", ""))
    if isinstance(alert, dict):
        # "[FIRING] api-memory (critical) app=api env=prod: api uses more than 200 MB"
        where = " ".join(
            f"{k}={field(alert[k])}" for k in ("app", "instance", "env") if alert.get(k)
        )
        state = "FIRING" if event["event"] == "alert firing" else "RESOLVED"
        head = f"[{state}] {field(alert['name'])} ({field(alert.get('severity') or 'no severity')})"
        return f"{head}{' ' + where if where else ''}: {message}"
    return f"[{field(event['env'])}] {field(event['source'])}: {event['event']} — {message}"


def body(notifier: Notifier, event: dict[str, Any]) -> bytes:
    """The request body in the notifier's format (only event fields, never a secret)."""
    if notifier.spec.format == "slack":
        data: dict[str, Any] = {"text": _text(event, slack_escape)}
    elif notifier.spec.format == "teams":
        summary = clean(
            f"{event['event']}: {event['source']}"
            if "alert" in event
            else (f"{event['event']} in {event['env']}")
        )
        data = {"@type": "MessageCard", "@context": "https://schema.org/extensions",
                "summary": summary, "text": _text(event, teams_escape)}  # fmt: skip
    else:
        data = {k: event[k] for k in ("time", "env", "source", "event", "message")}
        if "alert" in event:
            data["alert"] = event["alert"]
    return json.dumps(data).encode()


def sign(secret: str, payload: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


class Refused(Exception):
    """The URL's host resolves to an address no notification may go to."""


def resolve(host: str, port: int) -> list[str]:
    """The addresses to connect to for ``host``, in the resolver's order: every address it
    resolves to must be allowed (one bad answer refuses them all) (blocking)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for text in addresses:
        why = forbidden_address(ipaddress.ip_address(text.split("%", 1)[0]))
        if why is not None:
            raise Refused(f"{host} resolves to {why}")
    if not addresses:
        raise OSError(f"cannot resolve {host}")
    return addresses


def _connect(addresses: list[str], port: int, timeout: float | None) -> socket.socket:
    """A connection to the first of ``addresses`` that answers (as ``create_connection``
    tries each address a name resolves to, but only among those already checked)."""
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error or OSError("no address to connect to")


class _Pinned(http.client.HTTPConnection):
    """HTTP to the addresses already checked, whatever DNS answers next."""

    addresses: list[str] = []

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.port, self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to the addresses already checked; the certificate is checked for the URL's name."""

    addresses: list[str] = []

    def connect(self) -> None:
        sock = _connect(self.addresses, self.port, self.timeout)
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(sock, server_hostname=self.host)


def _post(url: str, payload: bytes, headers: dict[str, str]) -> int:
    """POST once; the HTTP status (0: no answer). Redirects are not followed; a host that
    resolves to a forbidden address raises :class:`Refused` (blocking)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = resolve(host, port)
    except (OSError, ValueError):
        return 0
    connection: _Pinned | _PinnedTLS
    if parts.scheme == "https":
        connection = _PinnedTLS(host, port, timeout=TIMEOUT)
    else:
        connection = _Pinned(host, port, timeout=TIMEOUT)
    connection.addresses = addresses
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        connection.request("POST", target, body=payload, headers=headers)
        return int(connection.getresponse().status)
    except (OSError, http.client.HTTPException, ValueError):
        return 0
    finally:
        connection.close()


def _target(url: str) -> str:
    """Scheme, host and port only: a webhook URL's path often is itself a secret (Slack)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Notifications:
    """Notifiers of one control plane, their delivery queue and records."""

    def __init__(
        self,
        store: StateStore,
        tasks: TaskGroup,
        secret_for: SecretFor,
        *,
        backoff: float = BACKOFF,
    ) -> None:
        self._store = store
        self._tasks = tasks
        self._secret_for = secret_for
        self._backoff = backoff
        self._notifiers: dict[str, Notifier] = {}
        self._queue: asyncio.Queue[tuple[Notifier, dict[str, Any]]] = asyncio.Queue(maxsize=10000)
        self._counter = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        for record in await self._store.scan(NOTIFIERS):
            notifier = Notifier.model_validate(json.loads(record.value))
            self._notifiers[notifier.name] = notifier
        keys = await self._store.keys(DELIVERIES)
        self._counter = int(keys[-1][len(DELIVERIES) :]) if keys else 0
        self._tasks.spawn(self._deliver_forever(), "notify")

    def notifiers(self) -> list[Notifier]:
        return [self._notifiers[n] for n in sorted(self._notifiers)]

    async def add(self, notifier: Notifier) -> Notifier:
        data = json.dumps(notifier.model_dump(mode="json", by_alias=True, exclude_none=True))
        await self._store.put(NOTIFIERS + notifier.name, data.encode())
        self._notifiers[notifier.name] = notifier
        return notifier

    async def remove(self, name: str) -> bool:
        if self._notifiers.pop(name, None) is None:
            return False
        await self._store.delete(NOTIFIERS + name)
        return True

    def emit(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every notifier subscribed to it (never blocks, never raises:
        a full queue drops the delivery with a log line)."""
        for notifier in self._notifiers.values():
            spec = notifier.spec
            if event["event"] not in spec.events or spec.env not in (None, event["env"]):
                continue
            alert = event.get("alert")
            if (
                spec.alerts is not None
                and isinstance(alert, dict)
                and not spec.alerts.matches(alert.get("labels") or {})
            ):
                continue
            try:
                self._queue.put_nowait((notifier, event))
                self._idle.clear()
            except asyncio.QueueFull:
                log.warning("notification queue full: %s dropped for %s", event, notifier.name)

    async def drained(self) -> None:
        """Wait until every queued delivery is done (tests, shutdown)."""
        await self._idle.wait()

    async def deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        keys = await self._store.keys(DELIVERIES)
        out = []
        for key in reversed(keys[-limit:]):
            record = await self._store.get(key)
            if record is not None:
                out.append(json.loads(record.value))
        return out

    async def _deliver_forever(self) -> None:
        while True:
            notifier, event = await self._queue.get()
            try:
                await self._deliver(notifier, event)
            except Exception:
                log.exception("delivery to notifier %s failed", notifier.name)
            finally:
                self._queue.task_done()
                if self._queue.empty():
                    self._idle.set()

    async def _deliver(self, notifier: Notifier, event: dict[str, Any]) -> None:
        payload = body(notifier, event)
        headers = {"Content-Type": "application/json", "User-Agent": "socle-notifier"}
        error = ""
        try:
            secret = await self._secret_for(notifier)
        except Exception as exc:  # a missing secret is recorded, never sent unsigned
            secret, error = None, f"signing secret unavailable: {getattr(exc, 'message', exc)}"
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, payload)
        attempts: list[int] = []
        status = 0
        if not error:
            for attempt in range(RETRIES):
                try:
                    status = await asyncio.to_thread(_post, notifier.spec.url, payload, headers)
                except Refused as exc:  # never retried: the address will not become allowed
                    error = f"refused: {exc}"
                    break
                attempts.append(status)
                if 200 <= status < 300 or (400 <= status < 500 and status != 429):
                    break
                if attempt + 1 < RETRIES:
                    await asyncio.sleep(self._backoff * 2**attempt)
        delivered = 200 <= status < 300
        record = {
            "time": time.time(),
            "notifier": notifier.name,
            "target": _target(notifier.spec.url),
            "event": event["event"],
            "env": event["env"],
            "source": event["source"],
            "delivered": delivered,
            "attempts": len(attempts),
            "statuses": attempts,
            "error": error or ("" if delivered else f"last answer {status or 'none'}"),
        }
        self._counter += 1
        await self._store.put(f"{DELIVERIES}{self._counter:012d}", json.dumps(record).encode())
        if self._counter % 100 == 0:
            keys = await self._store.keys(DELIVERIES)
            for key in keys[:-KEEP]:
                await self._store.delete(key)
