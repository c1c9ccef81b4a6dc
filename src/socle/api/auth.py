"""Authentication of the platform API: every route but ``/healthz`` needs a token.

The token is checked at the edge, before the body is read, by
:class:`socle.api.tokens.TokenGate`; routes read the result here. The *who* of a revision is
the token's name, never something the client says about itself (no ``X-Socle-User``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from socle.api.tokens import SCOPE_KEY, TokenInfo
from socle.errors import AuthError


async def _who(request: Request) -> str:
    """The caller's token name, or 401 (a request that did not pass the gate)."""
    info = request.scope.get(SCOPE_KEY)
    if not isinstance(info, TokenInfo):
        raise AuthError(
            "missing or invalid API token",
            status=401,
            hint="set SOCLE_TOKEN or use the admin token in SOCLE_HOME/admin.token",
        )
    return info.name


Who = Annotated[str, Depends(_who)]
"""A route parameter that authenticates the request and names the caller."""

__all__ = ["Who"]
