"""Backups made by the control plane: ``POST /api/v1/backups``, ``GET /api/v1/backups``.

The archive is written on the control plane's host under ``SOCLE_HOME/backups`` with a name
Socle picks; requests cannot choose a path (see :mod:`socle.backup.service`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from socle.api.auth import Who
from socle.api.context import ApiContext, context
from socle.backup.service import HomeBackups
from socle.errors import NotFoundError

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(context)]


def _backups(ctx: ApiContext) -> HomeBackups:
    if ctx.backups is None:
        raise NotFoundError(
            "this control plane does not make backups",
            hint="run `socle backup create` on the control plane's host",
        )
    return ctx.backups


@router.post("/api/v1/backups", status_code=201)
async def create(ctx: Ctx, _: Who) -> dict[str, Any]:
    """Write one archive of the home (state store, kept releases, volumes)."""
    result = await _backups(ctx).create()
    return result.to_dict()


@router.get("/api/v1/backups")
async def list_backups(ctx: Ctx, _: Who) -> dict[str, Any]:
    return {"backups": await _backups(ctx).list()}
