"""``/api/v1/volumes``: the volumes of this home, declared or retained, with their usage.

``DELETE /api/v1/volumes/{name}?purge=true`` removes a volume's data for good; it is refused
while the applied manifests still declare the volume or an app mounts it (delete the
manifest, apply, then purge), and it needs ``purge=true`` so that a removal is never a
side effect of a typo.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from socle.api.auth import Who
from socle.api.context import ApiContext, context
from socle.errors import ConfigError, ConflictError, NotFoundError
from socle.model.app import NAME_RE
from socle.runtime.volumes import VolumeInfo

router = APIRouter(prefix="/api/v1/volumes")
Ctx = Annotated[ApiContext, Depends(context)]


@router.get("")
async def list_volumes(ctx: Ctx, _: Who) -> list[dict[str, Any]]:
    handler, apps = _parts(ctx)
    provider = _provider(handler)
    infos = {info.name: info for info in await provider.list()}
    declared = handler.declared()
    names = sorted(set(infos) | set(declared))
    return [_row(name, infos.get(name), declared, apps) for name in names]


@router.get("/{name}")
async def show_volume(name: str, ctx: Ctx, _: Who) -> dict[str, Any]:
    handler, apps = _parts(ctx)
    _check_name(name)
    info = await _provider(handler).info(name)
    declared = handler.declared()
    if info is None and name not in declared:
        raise NotFoundError(f"volume {name!r} does not exist", hint="see `socle volume list`")
    return _row(name, info, declared, apps)


@router.delete("/{name}")
async def delete_volume(name: str, ctx: Ctx, _: Who, purge: bool = False) -> dict[str, Any]:
    handler, apps = _parts(ctx)
    _check_name(name)
    if not purge:
        raise ConfigError(
            f"deleting volume {name!r} removes its data for good",
            hint=f"pass --purge (API: purge=true) to delete it: `socle volume delete "
            f"{name} --purge`",
        )
    if name in handler.declared():
        raise ConflictError(
            f"volume {name!r} is still declared by the applied manifests",
            hint="remove its Volume manifest and apply first; its data is then retained "
            "until purged",
        )
    users = _mounted_by(name, apps)
    if users:
        raise ConflictError(
            f"volume {name!r} is mounted by app(s) {', '.join(users)}",
            hint="remove the mount from those apps and apply first",
        )
    provider = _provider(handler)
    if await provider.info(name) is None:
        raise NotFoundError(f"volume {name!r} does not exist", hint="see `socle volume list`")
    await provider.release(name, purge=True)
    return {"name": name, "purged": True}


def _parts(ctx: ApiContext) -> tuple[Any, Any]:
    return ctx.engine.handler("Volume"), ctx.engine.handler("App")


def _provider(handler: Any) -> Any:
    provider = handler.provider
    if provider is None:
        raise ConfigError("this control plane has no volume provider")
    return provider


def _check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise NotFoundError(f"volume {name[:80]!r} does not exist (not a valid name)")


def _mounted_by(name: str, apps: Any) -> list[str]:
    return sorted(
        app_name
        for app_name, target in apps.controller.targets().items()
        if any(m.name == name for m in target.app.spec.volumes)
    )


def _row(name: str, info: VolumeInfo | None, declared: dict[str, Any], apps: Any) -> dict[str, Any]:
    state = declared.get(name)
    row: dict[str, Any] = {
        "name": name,
        "declared": state is not None,
        "retain": state.retain if state is not None else None,
        "mounted_by": _mounted_by(name, apps),
        "exists": info is not None,
    }
    if info is not None:
        row.update(info.to_dict())
    else:
        row.update(
            {
                "path": None,
                "size_bytes": state.size if state is not None else None,
                "used_bytes": None,
                "enforced": None,
                "warning": "not on disk",
                "retained": False,
            }
        )
    return row
