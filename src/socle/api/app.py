"""The control-plane HTTP API (FastAPI): one app, every call authenticated by token.

``/healthz`` is the only unauthenticated route (for liveness checks) and says nothing but
"ok". The OpenAPI document is at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from socle import __version__
from socle.api.tokens import TokenStore
from socle.engine.controller import health_word
from socle.engine.service import Engine
from socle.errors import (
    AuthError,
    ConflictError,
    ManifestError,
    NotFoundError,
    SocleError,
)
from socle.model.units import parse_duration
from socle.runtime.driver import InstanceStatus, LogLine, RuntimeDriver


@dataclass
class ApiContext:
    engine: Engine
    driver: RuntimeDriver
    tokens: TokenStore
    request_shutdown: Callable[[bool], None]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApplyBody(Body):
    path: str = Field(min_length=1, max_length=4096)
    env: str | None = Field(default=None, max_length=63)


class RollbackBody(Body):
    revision: int = Field(ge=1)


class ShutdownBody(Body):
    keep_apps: bool = False


def _status_code(exc: SocleError) -> int:
    if isinstance(exc, ManifestError):
        return 422
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    return 400


def instance_json(instance: InstanceStatus) -> dict[str, Any]:
    return instance.to_dict()


async def _who(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_socle_token: Annotated[str | None, Header()] = None,
    x_socle_user: Annotated[str | None, Header()] = None,
) -> str:
    """The caller's token name (and the user the CLI says it runs as), or 401."""
    ctx: ApiContext = request.app.state.ctx
    token = x_socle_token
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    name = await ctx.tokens.check(token) if token else None
    if name is None:
        raise AuthError(
            "missing or invalid API token",
            status=401,
            hint="set SOCLE_TOKEN or use the admin token in SOCLE_HOME/admin.token",
        )
    user = (x_socle_user or "")[:64].replace("\n", " ")
    return f"{name} ({user})" if user else name


Who = Annotated[str, Depends(_who)]


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Socle control plane",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx

    @app.exception_handler(SocleError)
    async def socle_error(_: Request, exc: SocleError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=_status_code(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"path": ".".join(str(p) for p in err["loc"][1:]), "reason": err["msg"]}
            for err in exc.errors()
        ]
        reasons = "; ".join(f"{p['path'] or 'body'}: {p['reason']}" for p in problems)
        return JSONResponse(
            {
                "error": "BadRequest",
                "message": f"invalid request: {reasons}",
                "hint": "see /api/v1/openapi.json for the request shapes",
                "problems": problems,
            },
            status_code=400,
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/info")
    async def info(_: Who) -> dict[str, Any]:
        isolation = ctx.driver.isolation()
        return {
            "version": __version__,
            "driver": ctx.driver.name,
            "isolation": {
                "mode": isolation.mode,
                "detail": isolation.detail,
                "warning": isolation.warning,
            },
        }

    @app.post("/api/v1/plan")
    async def plan(body: ApplyBody, _: Who) -> dict[str, Any]:
        started = time.perf_counter()
        loaded, the_plan = await ctx.engine.plan(Path(body.path), body.env)
        return {
            "env": body.env,
            "apps": len(loaded.apps),
            "digest": loaded.digest(),
            "seconds": round(time.perf_counter() - started, 4),
            **the_plan.to_dict(),
        }

    @app.post("/api/v1/apply")
    async def apply(body: ApplyBody, user: Who) -> dict[str, Any]:
        the_plan, revision = await ctx.engine.apply(Path(body.path), body.env, user)
        return {"plan": the_plan.to_dict(), "revision": revision.to_dict() if revision else None}

    @app.post("/api/v1/rollback")
    async def rollback(body: RollbackBody, user: Who) -> dict[str, Any]:
        the_plan, revision = await ctx.engine.rollback(body.revision, user)
        return {"plan": the_plan.to_dict(), "revision": revision.to_dict() if revision else None}

    @app.get("/api/v1/revisions")
    async def revisions(_: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[Any]:
        return [r.to_dict() for r in await ctx.engine.revisions.list(limit)]

    @app.get("/api/v1/revisions/{number}")
    async def revision(number: int, _: Who, plan: bool = True) -> dict[str, Any]:
        """One revision; ``plan=false`` leaves out the plan's changes (for progress polls)."""
        return (await ctx.engine.revisions.get(number)).to_dict(plan=plan)

    @app.get("/api/v1/status")
    async def status(_: Who) -> dict[str, Any]:
        isolation = ctx.driver.isolation()
        apps = []
        for view in ctx.engine.status():
            target = ctx.engine.controller.target(view.name)
            apps.append(
                {
                    "name": view.name,
                    "desired": view.desired,
                    "ready": view.ready,
                    "updated": view.updated,
                    "health": health_word(view),
                    "rollout": view.rollout,
                    "message": view.message,
                    "restarts": sum(i.restarts for i in view.instances),
                    "release": target.state.release if target else None,
                    "revision": target.rollout.revision if target else None,
                    "instances": [instance_json(i) for i in view.instances],
                }
            )
        return {
            "isolation": {
                "mode": isolation.mode,
                "detail": isolation.detail,
                "warning": isolation.warning,
            },
            "apps": apps,
        }

    @app.get("/api/v1/apps/{name}/logs")
    async def logs(
        name: str,
        _: Who,
        since: str | None = None,
        follow: bool = False,
        instance: Annotated[int | None, Query(ge=0)] = None,
    ) -> StreamingResponse:
        since_time: float | None = None
        if since:
            try:
                since_time = time.time() - parse_duration(since)
            except ValueError as exc:
                raise SocleError(f"since: {exc}") from None
        chosen = [
            i
            for i in ctx.driver.instances()
            if i.app == name and (instance is None or i.ordinal == instance)
        ]
        if not chosen:
            raise NotFoundError(
                f"app {name!r} has no instance"
                + (f" with ordinal {instance}" if instance is not None else ""),
                hint="see `socle status` for apps and instances",
            )
        streams = [ctx.driver.logs(i.id, since=since_time, follow=follow) for i in chosen]
        return StreamingResponse(
            _ndjson(_merge(streams, follow)), media_type="application/x-ndjson"
        )

    @app.post("/api/v1/shutdown")
    async def shutdown(body: ShutdownBody, _: Who) -> dict[str, Any]:
        ctx.request_shutdown(body.keep_apps)
        return {"stopping": True, "keep_apps": body.keep_apps}

    return app


async def _merge(streams: list[AsyncIterator[LogLine]], follow: bool) -> AsyncIterator[LogLine]:
    """Lines from several instances; sorted by time when not following, interleaved live."""
    if not follow:
        lines = [line for stream in streams async for line in stream]
        lines.sort(key=lambda line: line.time)
        for line in lines:
            yield line
        return
    queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=1000)

    async def pump(stream: AsyncIterator[LogLine]) -> None:
        async for line in stream:
            await queue.put(line)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        while True:
            yield await queue.get()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _ndjson(lines: AsyncIterator[LogLine]) -> AsyncIterator[bytes]:
    async for line in lines:
        yield (
            json.dumps(
                {
                    "time": line.time,
                    "instance": line.instance,
                    "stream": line.stream,
                    "text": line.text,
                }
            )
            + "\n"
        ).encode()
