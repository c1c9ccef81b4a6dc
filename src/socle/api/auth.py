"""Authentication of the platform API: every route but ``/healthz`` needs a token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from socle.api.context import context
from socle.errors import AuthError


async def _who(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_socle_token: Annotated[str | None, Header()] = None,
    x_socle_user: Annotated[str | None, Header()] = None,
) -> str:
    """The caller's token name (and the user the CLI says it runs as), or 401."""
    ctx = context(request)
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
"""A route parameter that authenticates the request and names the caller."""

__all__ = ["Who"]
