"""Errors on the wire: status from the error class, request ids, no internals in 5xx."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from socle.api import faults
from socle.errors import (
    ConfigError,
    ConflictError,
    ManifestError,
    NotFoundError,
    Problem,
    RuntimeDriverError,
    SecretUnavailable,
    SocleError,
    StoreError,
)

router = APIRouter()
RAISED: dict[str, Exception] = {
    "config": ConfigError("bad flag"),
    "manifest": ManifestError([Problem("a.yaml", 3, "spec.replicas", "must be >= 0")]),
    "missing": NotFoundError("no app x"),
    "conflict": ConflictError("lost a race"),
    "store": StoreError("state store down", hint="start PostgreSQL"),
    "driver": RuntimeDriverError("cannot spawn"),
    "sealed": SecretUnavailable("sealed", status=503),
    "plain": SocleError("something odd"),
    "bug": KeyError("internal-detail /etc/secret-path"),
}


@router.get("/raise/{what}")
async def raise_it(what: str) -> dict[str, str]:
    raise RAISED[what]


@router.get("/fine")
async def fine(n: int) -> dict[str, int]:
    return {"n": n}


def make_app() -> FastAPI:
    app = FastAPI()
    faults.install(app)
    app.include_router(router)
    return app


@pytest.fixture
async def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


@pytest.mark.parametrize(
    ("what", "status"),
    [
        ("config", 400),
        ("manifest", 422),
        ("missing", 404),
        ("conflict", 409),
        ("store", 503),
        ("driver", 500),
        ("sealed", 503),
        ("plain", 500),
    ],
)
async def test_status_comes_from_the_error(
    client: httpx.AsyncClient, what: str, status: int
) -> None:
    response = await client.get(f"/raise/{what}")
    assert response.status_code == status
    body = response.json()
    assert body["error"] == type(RAISED[what]).__name__
    assert ("request_id" in body) == (status >= 500)
    if status >= 500:
        assert body["request_id"] == response.headers["x-request-id"]


async def test_an_unexpected_exception_is_500_without_internals(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="socle.api"):
        response = await client.get("/raise/bug", headers={"X-Request-Id": "abc-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "abc-1"
    body = response.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == "InternalError" and body["request_id"] == "abc-1"
    assert "internal-detail" not in response.text and "KeyError" not in response.text
    logged = [r for r in caplog.records if "abc-1" in r.getMessage()]
    assert logged and logged[0].exc_info is not None


@pytest.mark.parametrize("sent", ["", "has space", "x" * 65, "semi;colon", "é"])
async def test_a_malformed_request_id_is_replaced(client: httpx.AsyncClient, sent: str) -> None:
    headers = {"X-Request-Id": sent.encode("utf-8")} if sent else {}
    response = await client.get("/fine", params={"n": 1}, headers=headers)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_a_bad_request_is_400_with_its_problems(client: httpx.AsyncClient) -> None:
    response = await client.get("/fine", params={"n": "many"})
    assert response.status_code == 400
    assert response.json()["problems"][0]["path"] == "n"
    assert response.headers["x-request-id"]
