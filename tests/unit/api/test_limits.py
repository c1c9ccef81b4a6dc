"""The edge of the API, driven in memory: body limits before anything reads the body,
the token before any route runs, request ids on every answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from socle.api.limits import BodyLimit, BodyRule, guard
from socle.api.tokens import SCOPE_KEY, TokenInfo, TokenStore
from socle.state.memory import MemoryData, MemoryStore


class Recorder:
    """An ASGI app that reads the whole body (or fails like FastAPI when reading fails)."""

    def __init__(self, *, framework_400: bool = False) -> None:
        self.read = 0
        self.calls = 0
        self.scopes: list[Scope] = []
        self._framework_400 = framework_400

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        self.scopes.append(scope)
        try:
            while True:
                message = await receive()
                self.read += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
        except Exception:
            if not self._framework_400:
                raise
            await _reply(send, 400, b'{"detail": "There was an error parsing the body"}')
            return
        await _reply(send, 200, b'{"ok": true}')


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def call(
    app: Any,
    path: str,
    chunks: list[bytes],
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    stall: bool = False,
) -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
    queue = list(chunks)
    sent: list[Message] = []

    async def receive() -> Message:
        if not queue:
            if stall:
                await asyncio.sleep(3600)
            return {"type": "http.disconnect"}
        chunk = queue.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue) or stall}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers or []}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), dict(start.get("headers", []))


def limited(app: Any, **kwargs: Any) -> BodyLimit:
    return BodyLimit(app, [BodyRule("/v1/", 1000)], default_max_bytes=100, **kwargs)


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    inner = Recorder()
    for length in (b"101", b"-1", b"junk", b"1" * 400):
        status, body, _ = await call(
            limited(inner), "/api/v1/apply", [b"x"], headers=[(b"content-length", length)]
        )
        assert status == 413 and "too large" in body["message"]
    assert inner.calls == 0


async def test_a_chunked_body_is_cut_at_the_limit_whatever_the_route_answers() -> None:
    for framework_400 in (False, True):
        inner = Recorder(framework_400=framework_400)
        status, body, _ = await call(limited(inner), "/api/v1/apply", [b"x" * 60] * 10)
        assert status == 413, body
        assert inner.read <= 100
        assert body["errors"]  # Vault clients read "errors"


async def test_limits_per_prefix_and_small_bodies_pass() -> None:
    inner = Recorder()
    assert (await call(limited(inner), "/v1/secret/data/x", [b"x" * 900]))[0] == 200
    assert (await call(limited(inner), "/api/v1/apply", [b"x" * 100]))[0] == 200
    assert (await call(limited(inner), "/v1/secret/data/x", [b"x" * 1001]))[0] == 413


async def test_a_stalled_body_is_cut() -> None:
    inner = Recorder()
    status, body, _ = await call(
        limited(inner, body_timeout=0.05), "/api/v1/apply", [b"{"], stall=True
    )
    assert status == 408 and "stalled" in body["message"]


@pytest.fixture
async def tokens() -> TokenStore:
    return TokenStore(MemoryStore(MemoryData()))


async def test_the_gate_refuses_before_the_route_and_names_the_caller(tokens: TokenStore) -> None:
    token = await tokens.create("ci", ttl=3600)
    inner = Recorder()
    app = guard(inner, tokens)
    for headers in ([], [(b"authorization", b"Bearer socle_wrong")], [(b"x-socle-user", b"x")]):
        status, body, sent_headers = await call(app, "/api/v1/apply", [b"x" * 50], headers=headers)
        assert status == 401 and "token" in body["message"]
        assert sent_headers[b"x-request-id"]
    assert inner.calls == 0
    status, _, sent_headers = await call(
        app,
        "/api/v1/apply",
        [b"{}"],
        headers=[(b"authorization", f"Bearer {token}".encode()), (b"x-request-id", b"cli-1")],
    )
    assert status == 200 and sent_headers[b"x-request-id"] == b"cli-1"
    info = inner.scopes[-1][SCOPE_KEY]
    assert isinstance(info, TokenInfo) and info.name == "ci"
    # /healthz, the OpenAPI document and the Vault API are not the gate's business.
    for path in ("/healthz", "/api/v1/openapi.json", "/v1/sys/health"):
        assert (await call(app, path, []))[0] == 200


async def test_tokens_expire_rotate_and_the_last_admin_stays(tokens: TokenStore) -> None:
    admin = await tokens.create("admin", admin=True)
    short = await tokens.create("short", ttl=0.01)
    await asyncio.sleep(0.05)
    assert await tokens.check(short) is None
    new = await tokens.rotate("admin")
    assert await tokens.check(admin) is None
    checked = await tokens.check(new)
    assert checked is not None and checked.admin
    with pytest.raises(Exception, match="last token that can manage tokens"):
        await tokens.revoke("admin")
    assert [i.name for i in await tokens.list()] == ["admin", "short"]


async def test_service_tokens_reach_only_their_routes_and_the_webhook_only_them(
    tokens: TokenStore,
) -> None:
    """The scrape and webhook tokens sit in files beside daemons with an open loopback API:
    leaked, they must not apply anything; and no ordinary token may post alerts."""
    scrape = await tokens.create("socle-prometheus")
    hook = await tokens.create("socle-alertmanager")
    ci = await tokens.create("ci")
    admin = await tokens.create("admin", admin=True)
    inner = Recorder()
    app = guard(inner, tokens)

    async def status(token: str, method: str, path: str) -> int:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        headers = [(b"authorization", f"Bearer {token}".encode())]
        scope = {"type": "http", "method": method, "path": path, "headers": headers}
        await app(scope, receive, send)
        return int(next(m for m in sent if m["type"] == "http.response.start")["status"])

    webhook = "/api/v1/alerts/webhook"
    for path in ("/metrics", "/metrics/instances", "/api/v1/metrics/targets"):
        assert await status(scrape, "GET", path) == 200
    assert await status(scrape, "HEAD", "/metrics") == 200
    assert await status(hook, "POST", webhook) == 200
    for token, method, path in (
        (scrape, "POST", "/api/v1/apply"),
        (scrape, "GET", "/api/v1/apps"),
        (scrape, "POST", webhook),
        (hook, "GET", "/metrics"),
        (hook, "POST", "/api/v1/apply"),
        (hook, "GET", webhook),
        (ci, "POST", webhook),
    ):
        assert await status(token, method, path) == 403, (method, path)
    assert await status(admin, "POST", webhook) == 200
    assert await status(ci, "POST", "/api/v1/apply") == 200


def test_service_scopes_name_the_tokens_observe_creates() -> None:
    from socle.api.tokens import RESERVED, SERVICE_SCOPES
    from socle.observe.components import ALERTMANAGER_TOKEN_NAME, PROMETHEUS_TOKEN_NAME

    assert set(SERVICE_SCOPES) == {PROMETHEUS_TOKEN_NAME, ALERTMANAGER_TOKEN_NAME}
    assert RESERVED[("POST", "/api/v1/alerts/webhook")] == {ALERTMANAGER_TOKEN_NAME}
