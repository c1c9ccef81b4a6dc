"""The bridge-side OTLP receiver as an ASGI app (no server): who may push, what is stored,
how spans are labelled, and the per-instance span budget."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from socle.api.otlp import SpanBudget, create_otlp_app
from socle.observe.traces.model import Sender, Span
from socle.observe.traces.service import TraceService
from socle.tasks import TaskGroup

KEY = "socle_ingest_" + "k" * 40
INSTANCE = "10.213.0.7"


class Backend:
    """The trace store's interface, in memory."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    def traces_insert(self, spans: list[Span]) -> int:
        self.spans.extend(spans)
        return len(spans)

    def traces_trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.spans if s.trace_id == trace_id]

    def traces_recent(self, limit: int = 20, service: str | None = None) -> list[dict[str, Any]]:
        return []


def _identify(address: str) -> Sender | None:
    return Sender("web", "prod", "web-abc-0") if address == INSTANCE else None


def _body(spans: int = 1, trace_id: str | None = None) -> bytes:
    now = time.time_ns()
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "db"}}]
                    },
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": trace_id or secrets.token_hex(16),
                                    "spanId": secrets.token_hex(8),
                                    "name": "query",
                                    "startTimeUnixNano": str(now - 1000),
                                    "endTimeUnixNano": str(now),
                                }
                                for _ in range(spans)
                            ]
                        }
                    ],
                }
            ]
        }
    ).encode()


@pytest.fixture
def backend() -> Backend:
    return Backend()


def _client(backend: Backend, tmp_path: Path, source: str, **kw: Any) -> httpx.AsyncClient:
    service = TraceService(backend, tmp_path, TaskGroup("test"))
    service.ingest_key = KEY
    app = create_otlp_app(service, _identify, max_body_bytes=4096, max_inflated_bytes=16384, **kw)
    transport = httpx.ASGITransport(app=app, client=(source, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://10.213.0.1:4318")


JSON = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}


async def test_spans_from_an_instance_are_stored_labelled_by_it(
    backend: Backend, tmp_path: Path
) -> None:
    async with _client(backend, tmp_path, INSTANCE) as client:
        answer = await client.post("/v1/traces", content=_body(), headers=JSON)
    assert answer.status_code == 200 and answer.json() == {}
    (span,) = backend.spans
    assert span.service == "web" and span.attributes["socle.instance"] == "web-abc-0"
    assert span.attributes["claimed.service.name"] == "db"


@pytest.mark.parametrize(
    ("source", "path", "headers", "body", "status"),
    [
        ("10.213.0.99", "/v1/traces", JSON, _body(), 403),  # not an instance
        (INSTANCE, "/v1/traces", {"Content-Type": "application/json"}, _body(), 401),
        (INSTANCE, "/v1/traces", {**JSON, "Authorization": "Bearer nope"}, _body(), 401),
        (INSTANCE, "/v1/traces", JSON, b"{not json", 400),
        (INSTANCE, "/v1/traces", {**JSON, "Content-Type": "application/x-protobuf"}, b"\xff", 400),
        (INSTANCE, "/v1/traces", {**JSON, "Content-Type": "text/plain"}, _body(), 400),
        (INSTANCE, "/v1/traces", JSON, _body(spans=60), 413),  # over 4096 bytes
        (INSTANCE, "/v1/sys/health", JSON, b"", 404),  # nothing but the receiver
        (INSTANCE, "/api/v1/status", JSON, b"", 404),
    ],
)
async def test_refusals_store_nothing(
    backend: Backend,
    tmp_path: Path,
    source: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    async with _client(backend, tmp_path, source) as client:
        answer = await client.post(path, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert backend.spans == []


async def test_a_half_malformed_body_is_refused_whole(backend: Backend, tmp_path: Path) -> None:
    data = json.loads(_body(spans=2))
    data["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["spanId"] = "zz"
    async with _client(backend, tmp_path, INSTANCE) as client:
        answer = await client.post("/v1/traces", content=json.dumps(data), headers=JSON)
    assert answer.status_code == 400 and "spanId" in answer.json()["message"]
    assert backend.spans == []


async def test_an_instance_over_its_span_budget_is_told_to_retry(
    backend: Backend, tmp_path: Path
) -> None:
    now = [0.0]
    budget = SpanBudget(rate=2, burst=3, clock=lambda: now[0])
    async with _client(backend, tmp_path, INSTANCE, budget=budget) as client:
        assert (await client.post("/v1/traces", content=_body(3), headers=JSON)).status_code == 200
        late = await client.post("/v1/traces", content=_body(2), headers=JSON)
        assert late.status_code == 429 and late.headers["Retry-After"] == "1"
        now[0] += 1.0
        assert (await client.post("/v1/traces", content=_body(2), headers=JSON)).status_code == 200
    assert len(backend.spans) == 5


def test_span_budget_refills_per_key_and_never_exceeds_the_burst() -> None:
    now = [0.0]
    budget = SpanBudget(rate=10, burst=20, clock=lambda: now[0])
    assert budget.take("a", 20) == 0 and budget.take("a", 1) > 0
    assert budget.take("b", 20) == 0  # another instance has its own budget
    now[0] += 100
    assert budget.take("a", 20) == 0 and budget.take("a", 1) > 0
    assert budget.take("a", 1000) == pytest.approx(2.0)  # waits for a full burst at most
