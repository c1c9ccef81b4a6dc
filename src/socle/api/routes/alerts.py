"""Alerts: what fires (Alertmanager's v2 API), remediations, silences, and the webhook.

- ``GET /api/v1/alerts``: active alerts (from Alertmanager; without one, what Prometheus
  evaluates, ``source: prometheus``) and the recent remediations;
- ``POST /api/v1/alerts/webhook``: Alertmanager's webhook receiver (token required: the
  embedded Alertmanager has its own); runs the rules' actions for alerts Prometheus confirms
  firing;
- ``GET /api/v1/slos``: each SLO's error ratio over its window, budget left, burn rates;
- ``GET /api/v1/silences``, ``POST /api/v1/silences`` (``matchers``, ``duration``,
  ``comment``), ``DELETE /api/v1/silences/{id}`` (expire).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from socle.api.auth import Who
from socle.api.context import ApiContext, context
from socle.api.models import Body
from socle.errors import ConfigError
from socle.observe.alerts.manager import AlertmanagerServer
from socle.observe.service import Observe, Unavailable
from socle.observe.slo import report as slo_report
from socle.units import parse_duration

router = APIRouter(prefix="/api/v1")
Ctx = Annotated[ApiContext, Depends(context)]

MATCHER_RE = re.compile(r"^([a-zA-Z_][a-zA-Z0-9_]*)(=~|!~|!=|=)(.*)$", re.DOTALL)
SILENCE_ID_RE = re.compile(r"^[0-9a-fA-F-]{1,64}$")
MAX_SILENCE = 366 * 86400


def _observe(ctx: ApiContext) -> Observe:
    if ctx.observe is None:
        raise Unavailable("observe is not part of this control plane")
    return ctx.observe


def parse_matcher(text: str) -> dict[str, Any]:
    """``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex`` -> a v2 matcher."""
    found = MATCHER_RE.match(text.strip())
    if found is None:
        raise ConfigError(
            f"matcher {text!r} must look like name=value (or !=, =~, !~)",
            hint="e.g. alertname=HighMemory app=api",
        )
    name, op, value = found.groups()
    if len(value) > 1000:
        raise ConfigError(f"matcher {name}: value is longer than 1000 characters")
    return {
        "name": name,
        "value": value,
        "isRegex": "~" in op,
        "isEqual": not op.startswith("!"),
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class SilenceBody(Body):
    matchers: list[str] = Field(min_length=1, max_length=20)
    duration: str = "1h"
    comment: str = Field(default="", max_length=1000)


@router.get("/alerts")
async def list_alerts(ctx: Ctx, _: Who) -> dict[str, Any]:
    observe = _observe(ctx)
    alerts = observe.need_alerts()
    if alerts.manager is not None:
        firing = await alerts.manager.alerts()
        return {"source": "alertmanager", "alerts": firing, "remediations": alerts.history()}
    # No Alertmanager: Prometheus still evaluates the rules; show what it has (never an
    # empty list that would read as "all is well" when nothing evaluates anything).
    try:
        firing = await observe.evaluated_alerts()
    except Unavailable:
        raise Unavailable(
            "no Alertmanager runs and no Prometheus answers: no alerts to show",
            hint="SOCLE_ALERTMANAGER is off; the embedded Prometheus may still be starting "
            "(retry in a few seconds) or be off too (SOCLE_PROMETHEUS, or "
            "SOCLE_METRICS_QUERY_URL for a Prometheus that loads Socle's rule files)",
        ) from None
    return {"source": "prometheus", "alerts": firing, "remediations": alerts.history()}


@router.post("/alerts/webhook")
async def webhook(request: Request, ctx: Ctx, _: Who) -> dict[str, Any]:
    try:
        payload = await request.json()
    except ValueError:
        raise ConfigError("webhook body is not JSON") from None
    if not isinstance(payload, dict):
        raise ConfigError("webhook body must be a JSON object (Alertmanager's webhook format)")
    observe = _observe(ctx)
    alerts = observe.need_alerts()
    done = await alerts.webhook(payload, await observe.firing_alerts())
    await alerts.persist(done)
    return {"remediations": [r.to_dict() for r in done]}


@router.get("/slos")
async def list_slos(ctx: Ctx, _: Who) -> list[dict[str, Any]]:
    observe = _observe(ctx)
    return await slo_report(observe.need_query(), ctx.engine.handler("SLO").rules())


@router.get("/silences")
async def list_silences(ctx: Ctx, _: Who) -> list[dict[str, Any]]:
    manager = _manager(ctx)
    return await manager.silences()


@router.post("/silences")
async def add_silence(body: SilenceBody, ctx: Ctx, who: Who) -> dict[str, Any]:
    manager = _manager(ctx)
    try:
        seconds = parse_duration(body.duration)
    except ValueError as exc:
        raise ConfigError(f"duration: {exc}", hint="e.g. 30m, 2h") from None
    if not 0 < seconds <= MAX_SILENCE:
        raise ConfigError("duration must be between 1s and 366d")
    now = time.time()
    silence = {
        "matchers": [parse_matcher(m) for m in body.matchers],
        "startsAt": _iso(now),
        "endsAt": _iso(now + seconds),
        "createdBy": who,
        "comment": body.comment or f"silenced by {who}",
    }
    return {"id": await manager.add_silence(silence), "endsAt": silence["endsAt"]}


@router.delete("/silences/{silence_id}")
async def expire_silence(silence_id: str, ctx: Ctx, _: Who) -> dict[str, Any]:
    if not SILENCE_ID_RE.fullmatch(silence_id):
        raise ConfigError(f"invalid silence id {silence_id!r}", hint="see `socle silence list`")
    ended = await _manager(ctx).expire_silence(silence_id)
    return {"expired": silence_id, "already_expired": not ended}


def _manager(ctx: ApiContext) -> AlertmanagerServer:
    alerts = _observe(ctx).need_alerts()
    if alerts.manager is None:
        raise Unavailable(
            "no Alertmanager runs", hint="the embedded Alertmanager is off (SOCLE_ALERTMANAGER)"
        )
    return alerts.manager
