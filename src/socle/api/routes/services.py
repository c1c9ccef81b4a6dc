"""``/api/v1/services[/NAME]``: the service registry, with blocking queries.

``?index=N&wait=30s`` holds the answer until the registry's index is past ``N`` (or the wait
is over, at most 10 minutes), so middleware follows changes without polling: pass back the
``index`` of the previous answer. Without ``index`` the answer is immediate.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from socle.api.auth import Who
from socle.api.context import ApiContext, context
from socle.errors import ConfigError, NotFoundError
from socle.network.registry import MAX_WAIT_SECONDS, ServiceInstance, ServiceRegistry
from socle.units import parse_duration

router = APIRouter(prefix="/api/v1/services")
Ctx = Annotated[ApiContext, Depends(context)]

DEFAULT_WAIT = 300.0
"""A blocking query without ``wait`` waits this long (Consul's default, 5 minutes)."""


@router.get("")
async def list_services(
    ctx: Ctx,
    _: Who,
    index: Annotated[int | None, Query(ge=0)] = None,
    wait: str | None = None,
    environment: str | None = None,
) -> dict[str, Any]:
    registry = _registry(ctx)
    current = await _block(registry, index, wait)
    rows = [
        _service(name, env, entries)
        for (name, env), entries in registry.services().items()
        if environment is None or env == environment
    ]
    return {"index": current, "services": rows}


@router.get("/{name}")
async def show_service(
    name: str,
    ctx: Ctx,
    _: Who,
    index: Annotated[int | None, Query(ge=0)] = None,
    wait: str | None = None,
    environment: str | None = None,
    passing: bool = False,
) -> dict[str, Any]:
    registry = _registry(ctx)
    current = await _block(registry, index, wait)
    entries = registry.instances(name, environment, healthy_only=passing)
    if not entries and index is None and not registry.instances(name, environment):
        raise NotFoundError(
            f"service {name!r} has no registered instance"
            + (f" in environment {environment!r}" if environment else ""),
            hint="an app's instances register once they pass their health check; "
            "see `socle services`",
        )
    return {"index": current, "name": name, "instances": [e.to_dict() for e in entries]}


def _registry(ctx: ApiContext) -> ServiceRegistry:
    if ctx.registry is None:
        raise NotFoundError("this control plane runs no service registry")
    return ctx.registry


async def _block(registry: ServiceRegistry, index: int | None, wait: str | None) -> int:
    seconds = DEFAULT_WAIT
    if wait is not None:
        try:
            seconds = parse_duration(wait)
        except ValueError as exc:
            raise ConfigError(f"wait: {exc}", hint="e.g. wait=30s or wait=5m") from None
    if index is None:
        return registry.index
    return await registry.wait(index, min(seconds, MAX_WAIT_SECONDS))


def _service(name: str, env: str, entries: list[ServiceInstance]) -> dict[str, Any]:
    return {
        "name": name,
        "environment": env,
        "passing": sum(1 for e in entries if e.healthy),
        "total": len(entries),
        "instances": [e.to_dict() for e in entries],
    }
