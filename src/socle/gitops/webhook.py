"""Push webhooks from GitHub and GitLab: verification and the little we read of them.

A webhook is authenticated by its own secret, never by a platform token:

- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``;
- GitLab: ``X-Gitlab-Token: <the secret itself>``.

Both compared in constant time (:func:`hmac.compare_digest`). A delivery id
(``X-GitHub-Delivery``, ``X-Gitlab-Event-UUID``) seen before is refused (a replay), so is
a signed request without one. Pure functions: the route reads the body (size-capped by the
API's limits) and the headers and asks :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from socle.errors import AuthError, ConfigError

REPLAY_WINDOW = 10_000
"""How many delivery ids are remembered per source (a replay older than that many
deliveries is refused by its signature's secret having been rotated, or accepted as a
harmless extra sync: a sync is idempotent)."""


@dataclass(frozen=True)
class Push:
    provider: str
    delivery: str
    ref: str | None
    """``refs/heads/main``; None when the payload does not say (e.g. a ping)."""
    after: str | None


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> Push:
    """The push if ``headers`` prove the body was sent by someone holding ``secret``;
    AuthError (401) otherwise. ``headers`` keys are lower case."""
    if not secret:
        raise AuthError("this source has no webhook secret", status=401)
    signature = headers.get("x-hub-signature-256")
    token = headers.get("x-gitlab-token")
    if signature is not None:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise AuthError("invalid X-Hub-Signature-256", status=401)
        provider, delivery = "github", headers.get("x-github-delivery", "")
    elif token is not None:
        if not hmac.compare_digest(token.encode(), secret.encode()):
            raise AuthError("invalid X-Gitlab-Token", status=401)
        provider = "gitlab"
        delivery = headers.get("x-gitlab-event-uuid") or headers.get("x-gitlab-webhook-uuid", "")
    else:
        raise AuthError("webhook without X-Hub-Signature-256 or X-Gitlab-Token", status=401)
    if not delivery or len(delivery) > 200:
        raise AuthError("webhook without a delivery id", status=401)
    try:
        payload = json.loads(body) if body else {}
    except ValueError as exc:
        raise ConfigError("webhook body is not JSON") from exc
    if not isinstance(payload, dict):
        raise ConfigError("webhook body is not a JSON object")
    ref = payload.get("ref")
    after = payload.get("after") or payload.get("checkout_sha")
    return Push(
        provider,
        delivery,
        ref if isinstance(ref, str) else None,
        after if isinstance(after, str) else None,
    )


class Deliveries:
    """Delivery ids already accepted, per source (bounded, oldest forgotten first)."""

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self._size = size
        self._seen: dict[str, OrderedDict[str, float]] = {}

    def accept(self, source: str, delivery: str) -> None:
        """Remember ``delivery``; AuthError (409-like replay) if it was seen before."""
        seen = self._seen.setdefault(source, OrderedDict())
        if delivery in seen:
            raise AuthError(f"delivery {delivery} was already received (replay)", status=409)
        seen[delivery] = time.time()
        while len(seen) > self._size:
            seen.popitem(last=False)

    def recent(self, source: str, count: int) -> list[str]:
        """The ``count`` newest delivery ids of ``source``, oldest first (to persist)."""
        return list(self._seen.get(source, OrderedDict()))[-count:]

    def restore(self, source: str, ids: list[str]) -> None:
        """Remember ``ids`` (read back after a restart) as already received."""
        seen = self._seen.setdefault(source, OrderedDict())
        for delivery in ids:
            seen[delivery] = 0.0
        while len(seen) > self._size:
            seen.popitem(last=False)
