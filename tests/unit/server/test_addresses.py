"""The main listener: ``/v1`` to the Vault API, everything else to the platform API."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from socle.server.addresses import main_listener


def answering(name: str):  # type: ignore[no-untyped-def]
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = name.encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.mark.parametrize(
    ("path", "who"),
    [
        ("/v1", "vault"),
        ("/v1/secret/data/x", "vault"),
        ("/v1/sys/health", "vault"),
        ("/v10/x", "platform"),
        ("/v1x", "platform"),
        ("/api/v1/status", "platform"),
        ("/healthz", "platform"),
        ("/", "platform"),
    ],
)
async def test_paths_go_to_their_api(path: str, who: str) -> None:
    app = main_listener(answering("platform"), answering("vault"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get(path)).text == who
