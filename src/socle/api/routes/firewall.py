"""``/api/v1/firewall``: the firewall's enforcement, policies and per-rule counters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from socle.api.auth import Who
from socle.api.context import ApiContext, context

router = APIRouter(prefix="/api/v1/firewall")
Ctx = Annotated[ApiContext, Depends(context)]

NO_FIREWALL: dict[str, Any] = {
    "enforced": False,
    "reason": "this control plane runs no firewall",
    "isolated": False,
    "rules": [],
    "policies": {},
}


@router.get("")
async def firewall_status(ctx: Ctx, _: Who) -> dict[str, Any]:
    """Enforced or not (and why), the loaded table, every rule with packets/bytes."""
    if ctx.firewall is None:
        return dict(NO_FIREWALL)
    return await ctx.firewall.status()
