"""The control plane itself: liveness, version and isolation, shutdown."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from socle import __version__
from socle.api.auth import Who
from socle.api.context import ApiContext, context
from socle.api.models import Body

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(context)]


class ShutdownBody(Body):
    keep_apps: bool = False


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Unauthenticated liveness check: says nothing but "ok"."""
    return {"status": "ok"}


def isolation_json(ctx: ApiContext) -> dict[str, Any]:
    return ctx.driver.isolation().to_dict()


@router.get("/api/v1/info")
async def info(ctx: Ctx, _: Who) -> dict[str, Any]:
    return {"version": __version__, "driver": ctx.driver.name, "isolation": isolation_json(ctx)}


@router.post("/api/v1/shutdown")
async def shutdown(body: ShutdownBody, ctx: Ctx, _: Who) -> dict[str, Any]:
    ctx.request_shutdown(body.keep_apps)
    return {"stopping": True, "keep_apps": body.keep_apps}
