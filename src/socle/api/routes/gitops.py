"""GitOps: sources, sync, per-environment status, history, diff, rollback, and the push
webhook (the one route here without a platform token: it checks its own signature)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError, field_validator

from socle.api.auth import Who
from socle.api.context import ApiContext, context
from socle.api.models import Body
from socle.errors import ConfigError, ManifestError, NotFoundError, Problem
from socle.gitops.service import GitOps
from socle.model.app import no_controls
from socle.model.notifier import Notifier
from socle.model.source import Source, check_env

router = APIRouter(prefix="/api/v1/gitops")
Ctx = Annotated[ApiContext, Depends(context)]


def _gitops(ctx: ApiContext) -> GitOps:
    if ctx.gitops is None:
        raise ConfigError("GitOps is not running on this control plane")
    return ctx.gitops


def _env(env: str) -> str:
    try:
        return check_env(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class SourceBody(Body):
    name: str = Field(min_length=1, max_length=63)
    repo: str = Field(min_length=1, max_length=4096)
    branch: str | None = Field(default=None, max_length=200)
    ref: str | None = Field(default=None, max_length=200)
    path: str = Field(default=".", max_length=4096)
    env: str = Field(max_length=63)
    auto_sync: bool = True
    prune: bool = False
    self_heal: bool = False
    require_approval: bool = False
    interval: str | float = 60.0
    credentials: str | None = Field(default=None, max_length=256)
    webhook_secret: str | None = Field(default=None, max_length=256)
    signing_keys: list[str] = Field(default_factory=list, max_length=32)
    allowed_signers: list[str] = Field(default_factory=list, max_length=256)
    replace: bool = False

    def source(self) -> Source:
        spec: dict[str, Any] = {
            "repo": self.repo,
            "path": self.path,
            "env": self.env,
            "autoSync": self.auto_sync,
            "prune": self.prune,
            "selfHeal": self.self_heal,
            "requireApproval": self.require_approval,
            "interval": self.interval,
            "signingKeys": self.signing_keys,
            "allowedSigners": self.allowed_signers,
        }
        for key, value in (
            ("branch", self.branch),
            ("ref", self.ref),
            ("credentials", self.credentials),
            ("webhookSecret", self.webhook_secret),
        ):
            if value is not None:
                spec[key] = value
        data = {"apiVersion": "socle/v1", "kind": "Source", "metadata": {"name": self.name},
                "spec": spec}  # fmt: skip
        try:
            return Source.model_validate(data)
        except ValidationError as exc:
            problems = [
                Problem(None, None, ".".join(str(p) for p in e["loc"]) or "source", e["msg"])
                for e in exc.errors()
            ]
            raise ManifestError(problems, hint="nothing was changed") from None


class SyncBody(Body):
    env: str = Field(max_length=63)
    force: bool = False
    allow_delete_all: bool = False
    """Apply a commit whose folder is empty even though it deletes every object."""


class RollbackBody(Body):
    revision: int | None = Field(default=None, ge=1)
    unpin: bool = False
    revert: bool = False
    """Write a revert commit to the source branch instead of pinning."""


def _row(gitops: GitOps, source: Source) -> dict[str, Any]:
    return {
        "name": source.name,
        **source.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": gitops.status_of(source.name).to_dict(),
    }


@router.get("/sources")
async def sources(ctx: Ctx, _: Who) -> list[dict[str, Any]]:
    gitops = _gitops(ctx)
    return [_row(gitops, s) for s in gitops.sources()]


@router.post("/sources")
async def add_source(body: SourceBody, ctx: Ctx, _: Who) -> dict[str, Any]:
    gitops = _gitops(ctx)
    source = await gitops.add(body.source(), replace=body.replace)
    return _row(gitops, source)


class BootstrapBody(Body):
    path: str = Field(min_length=1, max_length=4096)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return no_controls(value)


@router.post("/sources/apply")
async def apply_sources(body: BootstrapBody, ctx: Ctx, _: Who) -> list[dict[str, Any]]:
    """Every Source of a bootstrap manifest (file or folder), added or replaced."""
    gitops = _gitops(ctx)
    return [_row(gitops, s) for s in await gitops.apply_bootstrap(Path(body.path))]


@router.get("/sources/{name}")
async def source(name: str, ctx: Ctx, _: Who) -> dict[str, Any]:
    gitops = _gitops(ctx)
    return _row(gitops, gitops.get(name))


@router.delete("/sources/{name}")
async def remove_source(name: str, ctx: Ctx, _: Who) -> dict[str, Any]:
    await _gitops(ctx).remove(name)
    return {"removed": name}


@router.post("/sync")
async def sync(body: SyncBody, ctx: Ctx, _: Who) -> list[dict[str, Any]]:
    return await _gitops(ctx).sync_env(
        _env(body.env), force=body.force, allow_delete_all=body.allow_delete_all
    )


class PreviewBody(Body):
    repo: str = Field(min_length=1, max_length=4096)
    ref: str = Field(min_length=1, max_length=200)
    path: str = Field(default=".", max_length=4096)
    env: str = Field(max_length=63)


@router.post("/preview")
async def preview(body: PreviewBody, ctx: Ctx, _: Who) -> dict[str, Any]:
    """The plan a branch/tag/commit would make in an environment (changes nothing)."""
    return await _gitops(ctx).preview(body.repo, body.ref, body.path, _env(body.env))


class PromoteBody(Body):
    from_env: str = Field(alias="from", max_length=63)
    to_env: str = Field(alias="to", max_length=63)
    revision: str | None = Field(default=None, min_length=7, max_length=64)


@router.post("/promote")
async def promote(body: PromoteBody, ctx: Ctx, user: Who) -> dict[str, Any]:
    """Move the commit healthy in one environment to the next (approval if required)."""
    return await _gitops(ctx).promote(_env(body.from_env), _env(body.to_env), body.revision, user)


@router.post("/envs/{env}/approve")
async def approve(env: str, ctx: Ctx, user: Who) -> dict[str, Any]:
    """Approve the promotion waiting in ``env`` (who and when are recorded)."""
    return await _gitops(ctx).approve(_env(env), user)


@router.get("/envs")
async def envs(ctx: Ctx, _: Who) -> list[dict[str, Any]]:
    if ctx.gitops is None:
        return []  # `socle status` asks every control plane, with GitOps or not
    return await ctx.gitops.environments()


@router.get("/envs/{env}/history")
async def history(
    env: str, ctx: Ctx, _: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[dict[str, Any]]:
    return await _gitops(ctx).history(_env(env), limit)


@router.get("/envs/{env}/diff")
async def diff(
    env: str, ctx: Ctx, _: Who, revision: Annotated[int | None, Query(ge=1)] = None
) -> list[dict[str, Any]]:
    return await _gitops(ctx).diff(_env(env), revision)


@router.post("/envs/{env}/rollback")
async def rollback(env: str, body: RollbackBody, ctx: Ctx, user: Who) -> dict[str, Any]:
    gitops = _gitops(ctx)
    if body.unpin:
        await gitops.unpin(_env(env))
        return {"unpinned": env}
    if body.revert:
        reverted: dict[str, Any] = ctx.redact.deep(
            await gitops.revert(_env(env), body.revision, user)
        )
        return reverted
    result = await gitops.rollback(_env(env), body.revision, user)
    data: dict[str, Any] = ctx.redact.deep(result)
    return data


@router.get("/events")
async def events(
    ctx: Ctx,
    _: Who,
    env: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return await _gitops(ctx).events(_env(env) if env else None, limit)


class NotifierBody(Body):
    name: str = Field(min_length=1, max_length=63)
    url: str = Field(min_length=1, max_length=2048)
    format: str = "json"
    events: list[str] | None = Field(default=None, max_length=16)
    env: str | None = Field(default=None, max_length=63)
    secret: str | None = Field(default=None, max_length=256)
    alerts: dict[str, Any] | None = None
    """The alert filter (``severity``, ``app``), checked by the Notifier model."""

    def notifier(self) -> Notifier:
        spec: dict[str, Any] = {"url": self.url, "format": self.format}
        for key, value in (
            ("events", self.events), ("env", self.env), ("secret", self.secret),
            ("alerts", self.alerts),
        ):  # fmt: skip
            if value:
                spec[key] = value
        data = {"apiVersion": "socle/v1", "kind": "Notifier", "metadata": {"name": self.name},
                "spec": spec}  # fmt: skip
        try:
            return Notifier.model_validate(data)
        except ValidationError as exc:
            problems = [
                Problem(None, None, ".".join(str(p) for p in e["loc"]) or "notifier", e["msg"])
                for e in exc.errors()
            ]
            raise ManifestError(problems, hint="nothing was changed") from None


def _notifier_row(notifier: Notifier) -> dict[str, Any]:
    spec = notifier.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"name": notifier.name, **spec}


@router.get("/notifiers")
async def notifiers(ctx: Ctx, _: Who) -> list[dict[str, Any]]:
    return [_notifier_row(n) for n in _gitops(ctx).notifications.notifiers()]


@router.post("/notifiers")
async def add_notifier(body: NotifierBody, ctx: Ctx, _: Who) -> dict[str, Any]:
    notifier = await _gitops(ctx).notifications.add(body.notifier())
    return _notifier_row(notifier)


@router.delete("/notifiers/{name}")
async def remove_notifier(name: str, ctx: Ctx, _: Who) -> dict[str, Any]:
    if not await _gitops(ctx).notifications.remove(name):
        raise NotFoundError(f"notifier {name!r} does not exist", hint="see `socle notifier list`")
    return {"removed": name}


@router.get("/notifications")
async def notifications(
    ctx: Ctx, _: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    return await _gitops(ctx).notifications.deliveries(limit)


@router.post("/webhook/{name}", status_code=202)
async def webhook(name: str, request: Request, ctx: Ctx) -> JSONResponse:
    """A push from GitHub or GitLab: verified (HMAC / token, constant time, delivery id
    never seen before), then the source syncs at once. No platform token."""
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    push = await _gitops(ctx).webhook(name, headers, body)
    return JSONResponse(
        {"accepted": push.delivery, "provider": push.provider, "ref": push.ref}, status_code=202
    )
