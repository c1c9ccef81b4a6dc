"""The OTLP/HTTP receiver the apps reach from their own network namespaces.

Isolated instances have their own loopback: the control plane's API on 127.0.0.1 is out
of their reach, like the DNS server, so the receiver also listens on the Socle bridge's
gateway address (see :class:`socle.server.parts.OtlpBridgeComponent`). That listener is
the apps' side of the platform, and apps are hostile writers:

- it answers one route, ``POST /v1/traces``; everything else is 404 (no platform API, no
  Vault API on the bridge);
- the sender is found from the connection's source address, which an app cannot choose
  (its veth address is set by root in its namespace): a source that is no running instance
  is refused (403), and the spans are labelled by the instance that really sent them
  (:func:`socle.observe.traces.model.attribute`), never by what the body claims;
- the ingest key is still required (``OTEL_EXPORTER_OTLP_HEADERS``): a process on the
  bridge that is not an instance of ours has neither;
- bodies are bounded before they are read (:class:`socle.api.limits.BodyLimit`), gzip is
  inflated up to a bound, and a body that does not decode whole (protobuf or JSON) is
  refused with 400 and nothing stored;
- each instance has a span budget (:class:`SpanBudget`, a token bucket): past it, 429 with
  ``Retry-After`` (OTLP exporters back off and retry), so one chatty or hostile app cannot
  push everyone else's spans out of the bounded store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from socle.api.faults import RequestIdMiddleware
from socle.api.limits import BodyLimit, BodyRule
from socle.api.routes.traces import otlp_answer, read_spans
from socle.api.tokens import bearer
from socle.errors import SocleError
from socle.observe.traces.model import Sender, attribute
from socle.observe.traces.service import TraceService

Identify = Callable[[str], Sender | None]
"""The running instance whose address is this source address, or None."""


class SpanBudget:
    """Spans each sender may store: ``rate`` a second, up to ``burst`` at once (a token
    bucket per key). Pure apart from the clock; keys of gone instances are forgotten."""

    MAX_KEYS = 10_000

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, spans: int) -> float:
        """0 if ``spans`` fit in ``key``'s budget (taken), else seconds until they would."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if spans <= tokens:
            self._buckets[key] = (tokens - spans, now)
            return 0.0
        if len(self._buckets) >= self.MAX_KEYS:
            self._buckets.clear()  # full buckets for all: generous, never unbounded
        self._buckets[key] = (tokens, now)
        return (min(spans, self.burst) - tokens) / self.rate


def _refused(status: int, message: str, hint: str = "") -> Response:
    body: dict[str, str] = {"error": "OtlpRefused", "message": message}
    if hint:
        body["hint"] = hint
    return JSONResponse(body, status_code=status)


def create_otlp_app(
    service: TraceService,
    identify: Identify,
    *,
    max_body_bytes: int,
    max_inflated_bytes: int,
    body_timeout: float = 30.0,
    budget: SpanBudget | None = None,
) -> ASGIApp:
    """The bridge-side receiver: ``POST /v1/traces`` from running instances only."""
    spans_budget = budget if budget is not None else SpanBudget(rate=2000, burst=20_000)

    async def receive(request: Request) -> Response:
        client = request.client
        sender = identify(client.host) if client is not None else None
        if sender is None:
            return _refused(
                403,
                "this address is no running instance of this control plane",
                "the bridge's receiver takes spans from Socle's instances only",
            )
        token = bearer(request.scope.get("headers") or ()) or ""
        if not token or not service.check_key(token):
            return _refused(
                401,
                "missing or invalid ingest key",
                "instances get it in OTEL_EXPORTER_OTLP_HEADERS",
            )
        try:
            spans, content_type = await read_spans(request, max_inflated_bytes)
            wait = spans_budget.take(sender.instance, len(spans))
            if wait > 0:
                answer = _refused(
                    429,
                    f"instance {sender.instance} sends more than "
                    f"{spans_budget.rate:g} spans a second",
                    "sample your traces, or retry later",
                )
                answer.headers["Retry-After"] = str(max(1, math.ceil(wait)))
                return answer
            await service.receive(attribute(spans, sender))
        except SocleError as exc:
            status = exc.http_status if exc.http_status < 500 else 503
            return JSONResponse(exc.to_dict(), status_code=status)
        return otlp_answer(content_type)

    app = Starlette(routes=[Route("/v1/traces", receive, methods=["POST"])])
    return RequestIdMiddleware(
        BodyLimit(
            app,
            [BodyRule("/", max_body_bytes)],
            default_max_bytes=max_body_bytes,
            body_timeout=body_timeout,
        )
    )


__all__ = ["Identify", "SpanBudget", "create_otlp_app"]
