"""``/api/v1/audit``: the platform audit log, queried and verified.

Only admin tokens may read it: it names every caller and what they did.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from socle.api.context import ApiContext, context
from socle.api.tokens import SCOPE_KEY, TokenInfo
from socle.errors import AuthError, ConfigError, NotFoundError
from socle.observe.audit import AuditQuery, PlatformAudit
from socle.units import parse_duration

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
MAX_LIMIT = 10_000


def _audit(request: Request) -> PlatformAudit:
    info = request.scope.get(SCOPE_KEY)
    if not isinstance(info, TokenInfo):
        raise AuthError("missing or invalid API token", status=401)
    if not info.admin:
        raise AuthError(
            f"token {info.name!r} may not read the audit log",
            status=403,
            hint="use the admin token (SOCLE_HOME/admin.token) or one created with --admin",
        )
    ctx: ApiContext = context(request)
    if ctx.audit is None:
        raise NotFoundError("this control plane keeps no platform audit log")
    return ctx.audit


Audit = Annotated[PlatformAudit, Depends(_audit)]


def parse_since(value: str, now: float | None = None) -> float:
    """``since``: a duration back from now (``1h``), or a Unix time; ConfigError otherwise."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return (now if now is not None else time.time()) - parse_duration(text)
    except ValueError as exc:
        raise ConfigError(
            f"since: {exc}", hint="a duration such as 10m, 2h or 7d, or a Unix time"
        ) from None


@router.get("")
async def query(
    audit: Audit,
    who: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[str | None, Query(max_length=64)] = None,
    path: Annotated[str | None, Query(max_length=1024)] = None,
    request_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000,
) -> list[dict[str, Any]]:
    """Entries oldest first: the newest ``limit`` that match every filter given."""
    q = AuditQuery(
        who=who,
        since=parse_since(since) if since else None,
        path=path,
        request_id=request_id,
        limit=limit,
    )
    return await asyncio.to_thread(audit.query, q)


@router.get("/verify")
async def verify(audit: Audit) -> dict[str, Any]:
    """The hash chain checked from the first line (``ok`` false: where it breaks)."""
    result = await asyncio.to_thread(audit.verify)
    return {**result.to_dict(), "file": str(audit.path)}
