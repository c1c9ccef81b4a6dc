"""The Notifier kind refuses hostile URLs (credentials, other schemes, link-local
addresses, controls) and unknown events; bodies carry only the event."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from pydantic import ValidationError

from socle.gitops.notify import Refused, _post, body, resolve, sign
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


@pytest.mark.parametrize(
    "url",
    [
        "http://2852039166/latest/meta-data",  # 169.254.169.254 as one number
        "http://0xa9.254.169.254/",  # hexadecimal
        "http://0251.0376.0251.0376/",  # octal
        "http://169.254.169.254./",  # trailing dot
        "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
        "http://[2002:a9fe:a9fe::1]/",  # 6to4
        "http://[fd00:ec2::254]/",  # AWS metadata over IPv6
        "http://100.100.100.200/",  # Alibaba metadata
    ],
)
def test_metadata_addresses_are_refused_however_written(url: str) -> None:
    """getaddrinfo accepts the legacy IPv4 spellings: each one would reach the metadata
    service, so each is refused like the dotted form."""
    with pytest.raises(ValidationError, match="webhook URL"):
        Notifier.model_validate(notifier(url=url))


def test_names_resolving_to_forbidden_addresses_are_refused_at_delivery() -> None:
    """A name is checked where it resolves now (DNS may point it at the metadata service)."""
    assert resolve("127.0.0.1", 80) == ["127.0.0.1"]
    assert set(resolve("localhost", 80)) <= {"127.0.0.1", "::1"}
    with pytest.raises(Refused, match="link-local"):
        resolve("169.254.169.254", 80)
    with pytest.raises(Refused, match="link-local"):
        resolve("2852039166", 80)  # what getaddrinfo makes of it
    with pytest.raises(Refused, match="link-local"):
        _post("http://2852039166/x", b"{}", {})  # an old record, valid before this check


HOSTILE = {"time": 1.0, "env": "prod", "source": "platform", "event": "sync failed",
           "message": "<!channel> *urgent* [log in](https://evil.example) <b>x</b> & co\x1b[2J"
                      "\u202eevil\nsecond line"}  # fmt: skip


def test_chat_bodies_show_text_never_links_mentions_or_markup() -> None:
    slack = json.loads(body(Notifier.model_validate(notifier(format="slack")), HOSTILE))["text"]
    assert "<" not in slack and ">" not in slack and "&lt;!channel&gt;" in slack
    assert "&amp; co" in slack
    assert "\x1b" not in slack and "\u202e" not in slack and "\n" not in slack
    teams = json.loads(body(Notifier.model_validate(notifier(format="teams")), HOSTILE))["text"]
    assert "\\[log in\\]\\(https://evil.example\\)" in teams and "\\*urgent\\*" in teams
    assert "\\<b\\>" in teams and "\\&" in teams and "\x1b" not in teams
    # The JSON format keeps the event as it is (JSON escapes it; no renderer in between).
    plain = json.loads(body(Notifier.model_validate(notifier()), HOSTILE))
    assert plain["message"] == HOSTILE["message"]
