"""``/api/v1/routes``: every route of the ingress, its upstreams and their health.

Routes are Route objects plus the default route of each app with a port and no Route
(``http://APP.ENV.localhost:PORT/``); each row names its target, the healthy upstreams
nginx sends traffic to, its certificate (TLS routes) and why it is not served, if it is not.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from socle.api.auth import Who
from socle.api.context import ApiContext, context

router = APIRouter(prefix="/api/v1/routes")
Ctx = Annotated[ApiContext, Depends(context)]


@router.get("")
async def list_routes(ctx: Ctx, _: Who) -> dict[str, Any]:
    ingress = ctx.ingress()
    if ingress is None:
        return {"enabled": False, "routes": [], "listen": None, "nginx": None}
    return {"enabled": True, **ingress.view()}
