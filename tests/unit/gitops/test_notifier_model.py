"""The Notifier kind refuses hostile URLs (credentials, other schemes, link-local
addresses, controls) and unknown events; bodies carry only the event."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from pydantic import ValidationError

from socle.gitops.notify import body, sign
from socle.model.notifier import EVENTS, Notifier


def notifier(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "socle/v1", "kind": "Notifier", "metadata": {"name": "team"},
            "spec": {"url": "https://hooks.example/notify", **spec}}  # fmt: skip


def test_defaults_subscribe_to_every_event() -> None:
    spec = Notifier.model_validate(notifier()).spec
    assert spec.format == "json" and spec.events == list(EVENTS) and spec.secret is None
    assert Notifier.model_validate(notifier(url="http://127.0.0.1:9/x")).spec.url
    picked = Notifier.model_validate(notifier(events=["rollback", "sync failed", "rollback"]))
    assert picked.spec.events == ["sync failed", "rollback"]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"url": "ftp://hooks.example/x"}, "http:// or https://"),
        ({"url": "file:///etc/passwd"}, "http:// or https://"),
        ({"url": "https://user:pw@hooks.example/x"}, "must not hold credentials"),
        ({"url": "https://hooks.example/x y"}, "no spaces"),
        ({"url": "https://hooks.example/\x1b[2J"}, "control"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "link-local"),
        ({"url": "http://[fe80::1]/x"}, "link-local"),
        ({"url": "http://0.0.0.0/x"}, "link-local"),
        ({"url": "http://hooks.example:99999/x"}, "invalid webhook URL"),
        ({"url": "https://" + "a" * 3000}, "2048"),
        ({"events": ["sync exploded"]}, "unknown event 'sync exploded'"),
        ({"events": []}, "at least 1"),
        ({"format": "xml"}, "json"),
        ({"secret": "../x"}, "invalid secrets path"),
        ({"env": "Prod"}, "invalid environment"),
    ],
)
def test_hostile_settings_are_refused(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Notifier.model_validate(notifier(**spec))


EVENT = {"time": 1.0, "env": "prod", "source": "platform", "event": "sync failed",
         "message": "commit abc refused", "commit": {"sha": "abc"}}  # fmt: skip


def test_bodies_in_each_format() -> None:
    plain = json.loads(body(Notifier.model_validate(notifier()), EVENT))
    assert plain == {k: EVENT[k] for k in ("time", "env", "source", "event", "message")}
    slack = json.loads(body(Notifier.model_validate(notifier(format="slack")), EVENT))
    assert slack == {"text": "[prod] platform: sync failed — commit abc refused"}
    teams = json.loads(body(Notifier.model_validate(notifier(format="teams")), EVENT))
    assert teams["@type"] == "MessageCard" and "sync failed" in teams["text"]


def test_signature_is_hmac_sha256_of_the_body() -> None:
    expected = hmac.new(b"k", b"payload", hashlib.sha256).hexdigest()
    assert sign("k", b"payload") == f"sha256={expected}"
