"""Webhook verification: GitHub HMAC and GitLab token, constant-time compared, replays and
unsigned deliveries refused."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from socle.errors import AuthError
from socle.gitops.webhook import Deliveries, verify

SECRET = "s3cret-hook"
BODY = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()


def github(body: bytes = BODY, secret: str = SECRET, delivery: str = "d-1") -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"x-hub-signature-256": f"sha256={digest}", "x-github-delivery": delivery}


def test_github_signature_is_checked_over_the_raw_body() -> None:
    push = verify(github(), BODY, SECRET)
    assert (push.provider, push.delivery, push.ref, push.after) == (
        "github", "d-1", "refs/heads/main", "a" * 40,
    )  # fmt: skip
    with pytest.raises(AuthError, match="X-Hub-Signature-256"):
        verify(github(secret="other"), BODY, SECRET)
    with pytest.raises(AuthError):
        verify(github(), BODY + b" ", SECRET)  # body changed after signing
    with pytest.raises(AuthError):
        verify({**github(), "x-hub-signature-256": "sha1=abc"}, BODY, SECRET)


def test_gitlab_token_and_missing_headers() -> None:
    headers = {"x-gitlab-token": SECRET, "x-gitlab-event-uuid": "u-1"}
    assert verify(headers, BODY, SECRET).provider == "gitlab"
    with pytest.raises(AuthError, match="X-Gitlab-Token"):
        verify({**headers, "x-gitlab-token": "nope"}, BODY, SECRET)
    with pytest.raises(AuthError, match="without"):
        verify({}, BODY, SECRET)
    with pytest.raises(AuthError, match="delivery id"):
        verify({"x-gitlab-token": SECRET}, BODY, SECRET)
    with pytest.raises(AuthError, match="no webhook secret"):
        verify(github(secret=""), BODY, "")


def test_replayed_delivery_is_refused_per_source_and_memory_is_bounded() -> None:
    seen = Deliveries(size=2)
    seen.accept("a", "1")
    with pytest.raises(AuthError, match="replay") as caught:
        seen.accept("a", "1")
    assert caught.value.http_status == 409
    seen.accept("b", "1")  # another source's delivery ids are its own
    seen.accept("a", "2")
    seen.accept("a", "3")  # forgets "1"
    seen.accept("a", "1")


def test_recent_deliveries_survive_a_restart_bounded() -> None:
    seen = Deliveries(size=3)
    for delivery in ("1", "2", "3", "4"):
        seen.accept("a", delivery)
    assert seen.recent("a", 2) == ["3", "4"] and seen.recent("b", 2) == []
    again = Deliveries(size=3)
    again.restore("a", seen.recent("a", 10))
    with pytest.raises(AuthError, match="replay"):
        again.accept("a", "4")
    again.accept("a", "1")  # forgotten before the restart: the window is bounded
