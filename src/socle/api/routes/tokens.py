"""``/api/v1/tokens``: create, list, rotate and revoke named API tokens.

Only tokens with the ``admin`` right may call these routes. A created or rotated token is in
the answer once and never again; listing shows names and times, never a token. Rotating
``admin`` also rewrites ``SOCLE_HOME/admin.token`` so the local CLI keeps working.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from socle.api.context import context
from socle.api.tokens import ADMIN, SCOPE_KEY, TokenInfo, TokenStore
from socle.errors import AuthError, ConfigError
from socle.units import parse_duration


class CreateTokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63)
    ttl: str | None = Field(default=None, max_length=32)
    """A duration ("30d", "12h"); none: the token does not expire."""
    admin: bool = False
    """Whether the token may manage tokens."""


def _tokens(request: Request) -> TokenStore:
    return context(request).tokens


def _manager(request: Request) -> TokenInfo:
    info = request.scope.get(SCOPE_KEY)
    if not isinstance(info, TokenInfo):
        raise AuthError("missing or invalid API token", status=401)
    if not info.admin:
        raise AuthError(
            f"token {info.name!r} may not manage tokens",
            status=403,
            hint="use the admin token (SOCLE_HOME/admin.token) or one created with --admin",
        )
    return info


Manager = Annotated[TokenInfo, Depends(_manager)]
Tokens = Annotated[TokenStore, Depends(_tokens)]

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


@router.get("")
async def list_tokens(_: Manager, tokens: Tokens) -> list[dict[str, object]]:
    return [info.to_dict() for info in await tokens.list()]


@router.post("")
async def create_token(body: CreateTokenBody, _: Manager, tokens: Tokens) -> dict[str, Any]:
    ttl = None
    if body.ttl is not None:
        try:
            ttl = parse_duration(body.ttl)
        except ValueError as exc:
            raise ConfigError(f"ttl: {exc}") from None
    token = await tokens.create(body.name, ttl=ttl, admin=body.admin)
    return {"name": body.name, "token": token, "ttl": ttl, "admin": body.admin}


@router.post("/{name}/rotate")
async def rotate_token(name: str, _: Manager, tokens: Tokens) -> dict[str, Any]:
    if name == ADMIN:
        token = await tokens.rotate_admin()
        return {"name": name, "token": token, "file": True}
    return {"name": name, "token": await tokens.rotate(name), "file": False}


@router.delete("/{name}")
async def revoke_token(name: str, _: Manager, tokens: Tokens) -> dict[str, Any]:
    await tokens.revoke(name)
    return {"name": name, "revoked": True}
