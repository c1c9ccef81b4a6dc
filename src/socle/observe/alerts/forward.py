"""Alerts to the team's ``Notifier``\\ s: what Alertmanager reports, posted like GitOps events.

Alertmanager calls Socle's webhook with groups of alerts (firing and, with
``send_resolved``, resolved). Besides remediation (:mod:`.service`), every alert becomes one
event for the notifiers, ``alert firing`` or ``alert resolved``, handed to a :class:`Sink`
-- in the control plane, GitOps' notification queue (:class:`socle.gitops.notify.Notifications`):
the same filters (``events``, ``env`` and the ``alerts: {severity, app}`` filter), the same
retries with backoff, the same delivery records (``socle notifications``). Observe never
imports GitOps: the composition root hands the sink in.

**Only what Prometheus says.** The webhook is reserved to Alertmanager's token, but
Alertmanager relays whatever is posted to its API; so, like remediation
(:mod:`.service`), a *firing* alert is forwarded only when Prometheus, asked at that moment,
has an alert firing whose labels are all among the alert's (Alertmanager adds only external
labels), and a *resolved* one only when Prometheus has none firing any more. An unconfirmed
firing alert is not remembered either: Alertmanager's next repeat is checked again.

**Each transition once.** Alertmanager sends the whole group again whenever one alert of it
changes, and again every ``repeat_interval``: an alert already forwarded in the same state
(same fingerprint, status and start) is not forwarded again. The memory of what was sent is
bounded (:data:`REMEMBER` alerts, oldest forgotten first).

**Nothing secret, nothing unbounded.** Labels and annotations come from the manifests (rule
labels, annotations templated by Prometheus with label values and numbers); they still go
through the control plane's redactor (every secret value the engine resolved) and are cut to
bounded sizes, so a hostile metric label cannot make a huge or secret-bearing payload.

**Removed rules resolve at once.** When an ``AlertRule`` (or ``SLO``) is removed, Prometheus
simply stops sending its alerts and Alertmanager would only resolve them when their
``endsAt`` passes (about four evaluation/resend periods later: minutes). :func:`resolve_removed`
tells Alertmanager right away, through its own API, that the alerts of rules no longer
applied have ended, so the resolved notification follows within a group interval.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("socle.observe.alerts")

FIRING = "alert firing"
RESOLVED = "alert resolved"
REMEMBER = 10_000
"""How many alerts' last forwarded state are kept to drop Alertmanager's repeats."""
MAX_ALERTS_PER_CALL = 1000
MAX_LABELS = 50
MAX_VALUE = 1000
"""Characters kept of one label or annotation value (longer ones end with "…")."""
MESSAGE_ANNOTATIONS = ("summary", "description", "message")
KEY_LABELS = frozenset({"alertname", "severity", "app", "instance", "env", "socle_rule"})
"""Labels kept whatever else an alert carries (the event's fields and the filters use them)."""


class Sink(Protocol):
    """Where alert events go (GitOps' :class:`~socle.gitops.notify.Notifications` fits)."""

    def emit(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every notifier subscribed to it; never blocks, never raises."""
        ...


class AlertSource(Protocol):
    """What :func:`resolve_removed` needs of Alertmanager (``AlertmanagerServer`` fits)."""

    async def alerts(self) -> list[dict[str, Any]]: ...

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None: ...


def _cut(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _strings(data: object, redact: Callable[[str], str]) -> dict[str, str]:
    if not isinstance(data, Mapping):
        return {}
    # The labels notifiers route on come first: a metric with many labels (an app chooses
    # its own) must not push ``alertname`` or ``severity`` past the cut and so silence or
    # misroute the alert about it.
    items = sorted(
        ((str(k), v) for k, v in data.items()),
        key=lambda item: (item[0] not in KEY_LABELS, item[0]),
    )[:MAX_LABELS]
    # Masked before cut: a cut through a secret would leave a prefix the redactor misses.
    return {_cut(k): _cut(redact(str(v))) for k, v in items}


def alert_event(
    alert: Mapping[str, Any], *, now: float, redact: Callable[[str], str] = str
) -> dict[str, Any] | None:
    """The notifier event for one alert of Alertmanager's webhook body (None: not an alert).

    ``env`` and ``source`` fill the fields every notifier event has (the alert's ``env``
    label, empty when it has none, and its ``alertname``); ``alert`` holds the details.
    """
    status = alert.get("status")
    if status not in ("firing", "resolved"):
        return None
    labels = _strings(alert.get("labels"), redact)
    name = labels.get("alertname")
    if not name:
        return None
    annotations = _strings(alert.get("annotations"), redact)
    message = next((annotations[k] for k in MESSAGE_ANNOTATIONS if annotations.get(k)), name)
    details: dict[str, Any] = {
        "name": name,
        "status": status,
        "severity": labels.get("severity", ""),
        "app": labels.get("app", ""),
        "instance": labels.get("instance", ""),
        "env": labels.get("env", ""),
        "rule": labels.get("socle_rule", ""),
        "labels": labels,
        "annotations": annotations,
        "startsAt": _cut(alert.get("startsAt") or ""),
        "endsAt": _cut(alert.get("endsAt") or "") if status == "resolved" else "",
        "fingerprint": _cut(alert.get("fingerprint") or ""),
    }
    return {
        "time": now,
        "env": details["env"],
        "source": name,
        "event": FIRING if status == "firing" else RESOLVED,
        "message": message,
        "alert": details,
    }


def _key(alert: Mapping[str, Any]) -> str:
    """A fixed-size key for the memory of what was sent (a digest: a caller's huge
    fingerprint or label set must not grow the memory)."""
    fingerprint = alert.get("fingerprint")
    if not (isinstance(fingerprint, str) and fingerprint):
        labels = alert.get("labels")
        fingerprint = json.dumps(
            labels if isinstance(labels, Mapping) else {}, sort_keys=True, default=str
        )
    return hashlib.sha256(fingerprint.encode(errors="replace")).hexdigest()


def firing_in(labels: Mapping[str, Any], firing: Sequence[Mapping[str, Any]]) -> bool:
    """Whether one of Prometheus' active alerts (``firing``, its ``/api/v1/alerts`` list) is
    firing with labels all equal to ``labels``' (which may hold more: external labels)."""
    for active in firing:
        if not isinstance(active, Mapping) or active.get("state") != "firing":
            continue
        have = active.get("labels")
        if not isinstance(have, Mapping) or "alertname" not in have:
            continue
        if all(k in labels and str(labels[k]) == str(v) for k, v in have.items()):
            return True
    return False


class AlertForwarder:
    """Turns Alertmanager's webhook calls into notifier events (see the module docstring)."""

    def __init__(
        self,
        sink: Callable[[], Sink | None],
        *,
        redact: Callable[[str], str] = str,
        clock: Callable[[], float] = time.time,
        remember: int = REMEMBER,
    ) -> None:
        """``sink`` is asked at every call (the notification queue may start later, or
        stop first); ``redact`` masks secret values in labels and annotations."""
        self._sink = sink
        self._redact = redact
        self._clock = clock
        self._remember = remember
        self._sent: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def forward(
        self, alerts: list[Any], firing: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Emit one event per alert whose state changed since it was last forwarded and
        that Prometheus confirms (``firing``: its active alerts now; see the module
        docstring); returns the events emitted (none when no sink is there)."""
        sink = self._sink()
        if sink is None:
            return []
        now = self._clock()
        # Prometheus' active alerts by name: each alert is compared with its namesakes only
        # (a thousand alerts against thousands firing must not hold the event loop).
        by_name: dict[str, list[Mapping[str, Any]]] = {}
        for active in firing:
            have = active.get("labels") if isinstance(active, Mapping) else None
            if isinstance(have, Mapping):
                by_name.setdefault(str(have.get("alertname")), []).append(active)
        emitted: list[dict[str, Any]] = []
        for alert in alerts[:MAX_ALERTS_PER_CALL]:
            if not isinstance(alert, Mapping):
                continue
            event = alert_event(alert, now=now, redact=self._redact)
            if event is None:
                continue
            key = _key(alert)
            state = (str(alert.get("status")), str(alert.get("startsAt") or "")[:64])
            if self._sent.get(key) == state:
                continue  # a repeat of a group notification: already told
            labels = alert.get("labels")
            labels = labels if isinstance(labels, Mapping) else {}
            namesakes = by_name.get(str(labels.get("alertname")), [])
            if firing_in(labels, namesakes) != (state[0] == "firing"):
                log.warning(
                    "alert %r %s is not what Prometheus reports now: not forwarded",
                    event["source"],
                    state[0],
                )
                continue
            self._sent[key] = state
            self._sent.move_to_end(key)
            while len(self._sent) > self._remember:
                self._sent.popitem(last=False)
            sink.emit(event)
            emitted.append(event)
        if emitted:
            log.info("alerts forwarded to notifiers: %d", len(emitted))
        return emitted


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


async def resolve_removed(
    manager: AlertSource, applied: Collection[str], *, now: float | None = None
) -> list[str]:
    """End, in Alertmanager, the active alerts of Socle rules that are no longer applied.

    ``applied`` holds the ``socle_rule`` values of the rules applied now (``NAME`` for an
    AlertRule, ``SLO/NAME`` for an SLO). Alerts without ``socle_rule`` (the built-in rules,
    anything posted by others) are left alone. Returns the rules whose alerts were ended.
    Call it after Prometheus has reloaded its rules, so it does not send them again.
    """
    ended = _iso(time.time() if now is None else now)
    posts: list[dict[str, Any]] = []
    rules: set[str] = set()
    for alert in await manager.alerts():
        labels = alert.get("labels")
        if not isinstance(labels, Mapping):
            continue
        rule = labels.get("socle_rule")
        if not isinstance(rule, str) or not rule or rule in applied:
            continue
        rules.add(rule)
        post: dict[str, Any] = {
            "labels": dict(labels),
            "annotations": dict(alert.get("annotations") or {}),
            "endsAt": ended,
        }
        if alert.get("startsAt"):
            post["startsAt"] = alert["startsAt"]
        if alert.get("generatorURL"):
            post["generatorURL"] = alert["generatorURL"]
        posts.append(post)
    if posts:
        await manager.post_alerts(posts)
        log.info("alerts of removed rules ended in Alertmanager: %s", ", ".join(sorted(rules)))
    return sorted(rules)


__all__ = [
    "FIRING",
    "RESOLVED",
    "AlertForwarder",
    "AlertSource",
    "Sink",
    "alert_event",
    "firing_in",
    "resolve_removed",
]
