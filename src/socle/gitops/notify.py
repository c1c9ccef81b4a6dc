"""Notifiers: GitOps events posted to webhooks in the background.

Each event a notifier subscribes to becomes one delivery, queued and posted by one
background task (a slow receiver never holds a sync), retried with exponential backoff
(``RETRIES`` attempts) on a connection error, a 5xx or a 429; every delivery is recorded
(``gitops/notifications/<n>``, the last ``KEEP`` kept) with its attempts and outcome.

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
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from socle.model.notifier import Notifier
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


def _text(event: dict[str, Any]) -> str:
    alert = event.get("alert")
    if isinstance(alert, dict):
        # "[FIRING] api-memory (critical) app=api env=prod: api uses more than 200 MB"
        where = " ".join(f"{k}={alert[k]}" for k in ("app", "instance", "env") if alert.get(k))
        state = "FIRING" if event["event"] == "alert firing" else "RESOLVED"
        head = f"[{state}] {alert['name']} ({alert.get('severity') or 'no severity'})"
        return f"{head}{' ' + where if where else ''}: {event['message']}"
    return f"[{event['env']}] {event['source']}: {event['event']} — {event['message']}"


def body(notifier: Notifier, event: dict[str, Any]) -> bytes:
    """The request body in the notifier's format (only event fields, never a secret)."""
    text = _text(event)
    if notifier.spec.format == "slack":
        data: dict[str, Any] = {"text": text}
    elif notifier.spec.format == "teams":
        summary = (
            f"{event['event']}: {event['source']}"
            if "alert" in event
            else (f"{event['event']} in {event['env']}")
        )
        data = {"@type": "MessageCard", "@context": "https://schema.org/extensions",
                "summary": summary, "text": text}  # fmt: skip
    else:
        data = {k: event[k] for k in ("time", "env", "source", "event", "message")}
        if "alert" in event:
            data["alert"] = event["alert"]
    return json.dumps(data).encode()


def sign(secret: str, payload: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def _post(url: str, payload: bytes, headers: dict[str, str]) -> int:
    """POST once; the HTTP status (0: no answer). Redirects are not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=payload, headers=headers, method="POST")  # noqa: S310 (http/https checked by the model)
    try:
        with opener.open(request, timeout=TIMEOUT) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return 0


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
                status = await asyncio.to_thread(_post, notifier.spec.url, payload, headers)
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
