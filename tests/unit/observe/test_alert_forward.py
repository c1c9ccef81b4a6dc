"""Alertmanager's webhook alerts become notifier events: one per transition, bounded and
redacted; the Notifier's alert filter (severity, app) and env choose who gets them; the
alerts of removed rules are ended in Alertmanager (an in-memory Alertmanager face here)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import ValidationError

from socle.gitops.notify import body
from socle.model.notifier import Notifier
from socle.observe.alerts.forward import (
    FIRING,
    MAX_VALUE,
    RESOLVED,
    AlertForwarder,
    alert_event,
    resolve_removed,
)


class Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def am_alert(status: str = "firing", fingerprint: str = "f1", **labels: str) -> dict[str, Any]:
    """One alert as Alertmanager's webhook body holds it."""
    return {
        "status": status,
        "labels": {"alertname": "api-memory", "severity": "critical", "app": "api",
                   "env": "prod", "socle_rule": "api-memory", **labels},
        "annotations": {"summary": "api uses 95% of its memory"},
        "startsAt": "2026-11-30T10:00:00Z",
        "endsAt": "2026-11-30T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }  # fmt: skip


def test_an_alert_becomes_an_event_with_its_details() -> None:
    event = alert_event(am_alert(), now=5.0)
    assert event is not None
    assert event["event"] == FIRING and event["env"] == "prod" and event["source"] == "api-memory"
    assert event["message"] == "api uses 95% of its memory" and event["time"] == 5.0
    alert = event["alert"]
    assert (
        alert["severity"] == "critical" and alert["app"] == "api" and alert["rule"] == "api-memory"
    )
    assert alert["endsAt"] == ""  # Alertmanager's zero time means "not ended"
    resolved = alert_event(am_alert("resolved"), now=6.0)
    assert resolved is not None and resolved["event"] == RESOLVED
    assert resolved["alert"]["endsAt"] == "2026-11-30T10:05:00Z"
    no_summary = dict(am_alert(), annotations={})
    assert alert_event(no_summary, now=1.0)["message"] == "api-memory"  # type: ignore[index]


@pytest.mark.parametrize(
    "alert",
    [
        {"status": "pending", "labels": {"alertname": "x"}},
        {"status": "firing", "labels": {}},
        {"status": "firing", "labels": "alertname=x"},
        {"status": "firing"},
    ],
)
def test_what_is_not_an_alert_is_skipped(alert: dict[str, Any]) -> None:
    assert alert_event(alert, now=1.0) is None


def test_values_are_bounded_and_redacted() -> None:
    alert = am_alert(summary_label="x" * 5000, leaked="token s3cr3t-value here")
    alert["labels"].update({f"l{i:03d}": "v" for i in range(200)})
    event = alert_event(alert, now=1.0, redact=lambda t: t.replace("s3cr3t-value", "****"))
    assert event is not None
    labels = event["alert"]["labels"]
    assert len(labels) == 50
    assert all(len(v) <= MAX_VALUE for v in labels.values())
    assert "s3cr3t-value" not in json.dumps(event)


def prom(alert: dict[str, Any]) -> dict[str, Any]:
    """Prometheus' own view of an alert firing now (its ``/api/v1/alerts`` entry)."""
    return {"labels": dict(alert["labels"]), "state": "firing"}


def test_a_secret_across_the_cut_is_masked_whole() -> None:
    """Masking comes before cutting: a value cut through a secret would otherwise leave
    the secret's first characters, which the redactor no longer recognises."""
    secret = "s3cr3t-value-0123456789"
    alert = am_alert()
    alert["annotations"] = {"summary": "x" * (MAX_VALUE - 10) + secret}
    event = alert_event(alert, now=1.0, redact=lambda t: t.replace(secret, "****"))
    assert event is not None
    assert "s3cr3t" not in json.dumps(event)


def test_many_labels_never_push_out_the_ones_notifiers_route_on() -> None:
    """An app chooses its metrics' labels: fifty of them sorting before ``alertname`` must
    not drop the alert's name, severity or app (the alert would vanish or be misrouted)."""
    alert = am_alert()
    alert["labels"].update({f"a{i:02d}": "x" for i in range(60)})
    event = alert_event(alert, now=1.0)
    assert event is not None and event["source"] == "api-memory"
    kept = event["alert"]["labels"]
    assert len(kept) == 50
    assert {"alertname", "severity", "app", "env", "socle_rule"} <= set(kept)
    assert notifier(alerts={"severity": ["critical"], "app": ["api"]}).spec.alerts.matches(kept)  # type: ignore[union-attr]


def test_each_transition_is_forwarded_once() -> None:
    sink = Sink()
    forwarder = AlertForwarder(lambda: sink, clock=lambda: 1.0)
    second = am_alert(fingerprint="f2", instance="api-2")
    firing = [prom(am_alert()), prom(second)]
    assert len(forwarder.forward([am_alert()], firing)) == 1
    # Alertmanager sends the group again (a new alert joined it, or repeat_interval):
    # the first alert is not posted again, the new one is.
    again = forwarder.forward([am_alert(), second], firing)
    assert [e["alert"]["fingerprint"] for e in again] == ["f2"]
    assert [e["event"] for e in forwarder.forward([am_alert("resolved")], [])] == [RESOLVED]
    assert forwarder.forward([am_alert("resolved")], []) == []
    # The same alert firing again later (a new startsAt) is a new transition.
    later = dict(am_alert(), startsAt="2026-11-30T11:00:00Z")
    assert len(forwarder.forward([later, "not an alert", {"status": "firing"}], firing)) == 1
    assert len(sink.events) == 4


def test_memory_is_bounded_and_no_sink_means_nothing_sent() -> None:
    sink = Sink()
    forwarder = AlertForwarder(lambda: sink, remember=2)
    alerts = [am_alert(fingerprint=f"f{i}") for i in range(3)]
    firing = [prom(a) for a in alerts]
    forwarder.forward(alerts, firing)
    assert len(forwarder.forward([am_alert(fingerprint="f0")], firing)) == 1  # forgotten
    assert AlertForwarder(lambda: None).forward([am_alert()], firing) == []


def test_memory_keys_do_not_grow_with_what_the_caller_sends() -> None:
    """A huge fingerprint (or label set, without one) is remembered as a fixed-size digest."""
    forwarder = AlertForwarder(Sink)
    huge = dict(am_alert(fingerprint="f" * 1_000_000), startsAt="2026" * 250_000)
    no_fingerprint = dict(am_alert(instance="x" * 1_000_000), fingerprint="")
    forwarder.forward([huge, no_fingerprint], [prom(huge), prom(no_fingerprint)])
    assert len(forwarder._sent) == 2
    assert all(len(key) == 64 for key in forwarder._sent)
    assert all(len(starts) <= 64 for _, starts in forwarder._sent.values())


def test_alerts_prometheus_does_not_confirm_are_not_forwarded() -> None:
    """Alertmanager relays whatever is posted to it: a firing alert reaches the team only
    when Prometheus has it firing (its labels, all of them, among the alert's), a resolved one
    only when Prometheus no longer has it firing."""
    sink = Sink()
    forwarder = AlertForwarder(lambda: sink)
    spoofed = am_alert(fingerprint="s1")
    spoofed["annotations"] = {"summary": "<!channel> log in at https://evil.example now"}
    assert forwarder.forward([spoofed], []) == []
    other = {"labels": {**spoofed["labels"], "app": "web"}, "state": "firing"}
    pending = {"labels": dict(spoofed["labels"]), "state": "pending"}
    assert forwarder.forward([spoofed], [other, pending]) == []
    # Prometheus' labels must all be there: an alert missing one is not the same alert.
    partial = am_alert(fingerprint="s2")
    del partial["labels"]["app"]
    assert forwarder.forward([partial], [prom(am_alert())]) == []
    assert sink.events == []
    # Unconfirmed is not remembered: Alertmanager's next repeat, once confirmed, goes out.
    with_external = {"labels": {k: v for k, v in spoofed["labels"].items() if k != "env"},
                     "state": "firing"}  # fmt: skip
    assert len(forwarder.forward([spoofed], [with_external])) == 1
    # A "resolved" for an alert Prometheus still has firing is not forwarded either.
    assert forwarder.forward([am_alert("resolved", fingerprint="s1")], [prom(spoofed)]) == []
    assert len(sink.events) == 1


def notifier(**spec: Any) -> Notifier:
    return Notifier.model_validate({"apiVersion": "socle/v1", "kind": "Notifier",
                                    "metadata": {"name": "oncall"},
                                    "spec": {"url": "https://hooks.example/x", **spec}})  # fmt: skip


def test_alert_filter_in_the_notifier() -> None:
    labels = {"severity": "critical", "app": "api"}
    assert notifier().spec.alerts is None
    assert notifier(alerts={"severity": ["critical"]}).spec.alerts.matches(labels)  # type: ignore[union-attr]
    assert not notifier(alerts={"severity": ["info"]}).spec.alerts.matches(labels)  # type: ignore[union-attr]
    only_web = notifier(alerts={"app": ["web", "web"]}).spec.alerts
    assert only_web is not None and only_web.app == ["web"] and not only_web.matches(labels)
    assert not only_web.matches({"severity": "critical"})  # about no app: never matches
    both = notifier(alerts={"severity": ["warning", "critical"], "app": ["api"]}).spec.alerts
    assert both is not None and both.severity == ["warning", "critical"] and both.matches(labels)


@pytest.mark.parametrize(
    ("alerts", "reason"),
    [
        ({"severity": ["urgent"]}, "severity"),
        ({"severity": []}, "severity"),
        ({"app": ["Bad App"]}, "invalid app name"),
        ({"team": ["web"]}, "team"),
    ],
)
def test_bad_alert_filters_are_refused(alerts: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        notifier(alerts=alerts)


def test_bodies_of_alert_events() -> None:
    event = alert_event(am_alert(), now=1.0)
    assert event is not None
    plain = json.loads(body(notifier(), event))
    assert plain["event"] == FIRING and plain["alert"]["labels"]["app"] == "api"
    slack = json.loads(body(notifier(format="slack"), event))
    assert slack == {
        "text": "[FIRING] api-memory (critical) app=api env=prod: api uses 95% of its memory"
    }
    resolved = alert_event(am_alert("resolved"), now=1.0)
    assert resolved is not None
    teams = json.loads(body(notifier(format="teams"), resolved))
    assert teams["text"].startswith("[RESOLVED] api-memory")
    assert teams["summary"] == "alert resolved: api-memory"


class FakeAlertmanager:
    """Alertmanager's v2 alerts API as data: what is active, what was posted."""

    def __init__(self, active: list[dict[str, Any]]) -> None:
        self.active = active
        self.posted: list[dict[str, Any]] = []

    async def alerts(self) -> list[dict[str, Any]]:
        return self.active

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        self.posted.extend(alerts)


def test_alerts_of_removed_rules_are_ended() -> None:
    def active(rule: str, name: str) -> dict[str, Any]:
        return {"labels": {"alertname": name, "socle_rule": rule}, "annotations": {"summary": "s"},
                "startsAt": "2026-11-30T10:00:00Z", "generatorURL": "http://p/graph",
                "status": {"state": "active"}}  # fmt: skip

    manager = FakeAlertmanager([
        active("kept", "kept"), active("gone", "gone"), active("SLO/shop", "shop-burn-page-fast"),
        active("", "SocleDown"), {"labels": "junk"},
    ])  # fmt: skip
    ended = asyncio.run(resolve_removed(manager, {"kept"}, now=0.0))
    assert ended == ["SLO/shop", "gone"]
    assert [p["labels"]["alertname"] for p in manager.posted] == ["gone", "shop-burn-page-fast"]
    assert all(p["endsAt"] == "1970-01-01T00:00:00Z" for p in manager.posted)
    assert manager.posted[0]["startsAt"] == "2026-11-30T10:00:00Z"
    quiet = FakeAlertmanager([active("kept", "kept")])
    assert asyncio.run(resolve_removed(quiet, {"kept"})) == [] and quiet.posted == []
