"""Plan, apply, rollback, revisions and status: the engine's API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field, field_validator

from socle.api.auth import Who
from socle.api.context import ApiContext, context
from socle.api.models import Body
from socle.api.routes.system import isolation_json
from socle.model.app import no_controls
from socle.model.source import check_env

router = APIRouter(prefix="/api/v1")
Ctx = Annotated[ApiContext, Depends(context)]


class ApplyBody(Body):
    path: str = Field(min_length=1, max_length=4096)
    env: str | None = Field(default=None, max_length=63)
    allow_delete_all: bool = False
    """Allow a plan that deletes every object (e.g. an empty folder); refused otherwise."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return no_controls(value)  # a NUL byte would otherwise surface as a 500 from os.stat

    @field_validator("env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        # The environment names a scope and goes into host names (APP.ENV.localhost),
        # which match without case: ``PROD`` beside ``prod`` would take prod's default
        # routes. The same rule as a Source's environment.
        return None if value is None else check_env(value)


class RollbackBody(Body):
    revision: int = Field(ge=1)


@router.post("/plan")
async def plan(body: ApplyBody, ctx: Ctx, _: Who) -> dict[str, Any]:
    started = time.perf_counter()
    loaded, the_plan = await ctx.engine.plan(
        Path(body.path), body.env, allow_delete_all=body.allow_delete_all
    )
    return {
        "env": body.env,
        "apps": len(loaded.apps),
        "objects": len(loaded.objects),
        "digest": loaded.digest(),
        "seconds": round(time.perf_counter() - started, 4),
        **the_plan.to_dict(),
    }


@router.post("/apply")
async def apply(body: ApplyBody, ctx: Ctx, user: Who) -> dict[str, Any]:
    the_plan, revision = await ctx.engine.apply(
        Path(body.path), body.env, user, allow_delete_all=body.allow_delete_all
    )
    shown = ctx.redact.deep(revision.to_dict()) if revision else None
    return {"plan": the_plan.to_dict(), "revision": shown}


@router.post("/rollback")
async def rollback(body: RollbackBody, ctx: Ctx, user: Who) -> dict[str, Any]:
    the_plan, revision = await ctx.engine.rollback(body.revision, user)
    shown = ctx.redact.deep(revision.to_dict()) if revision else None
    return {"plan": the_plan.to_dict(), "revision": shown}


@router.get("/revisions")
async def revisions(
    ctx: Ctx, _: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[Any]:
    return [ctx.redact.deep(r.to_dict()) for r in await ctx.engine.revisions.list(limit)]


@router.get("/revisions/{number}")
async def revision(number: int, ctx: Ctx, _: Who, plan: bool = True) -> dict[str, Any]:
    """One revision; ``plan=false`` leaves out the plan's changes (for progress polls)."""
    data: dict[str, Any] = ctx.redact.deep(
        (await ctx.engine.revisions.get(number)).to_dict(plan=plan)
    )
    return data


@router.get("/status")
async def status(ctx: Ctx, _: Who) -> dict[str, Any]:
    """Every object of every kind (``objects``); ``apps`` keeps the App rows as before."""
    objects = ctx.redact.deep(await ctx.engine.status())
    ingress = ctx.ingress()
    if ingress is not None:
        urls = ingress.urls()
        for row in objects:
            if row["kind"] == "App" and row["name"] in urls:
                row["url"] = urls[row["name"]]
            elif row["kind"] == "Route":
                row["health"], row["message"] = ingress.route_state(row["name"])
    else:
        for row in objects:
            if row["kind"] == "Route":
                row["health"], row["message"] = "error", "no ingress runs on this control plane"
    return {
        "isolation": isolation_json(ctx),
        "control_plane": ctx.control_plane(),
        "apps": [row for row in objects if row["kind"] == "App"],
        "objects": objects,
    }
