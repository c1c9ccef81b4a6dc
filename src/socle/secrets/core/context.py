"""The request as the core sees it, and the interface of the core's own backends.

Engines get a :class:`socle.secrets.backend.Request` (path relative to their mount, the
caller as a :class:`TokenInfo`). The built-in backends (``sys/``, ``auth/token/``,
``cubbyhole/``) need more, the caller's full token entry and ACL, so they implement
:class:`CoreBackend` and receive a :class:`CoreRequest`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from socle.secrets.backend import Operation, Request, Response, SecretsError
from socle.secrets.core.policy import ACL
from socle.secrets.core.tokens import TokenEntry


@dataclass
class Caller:
    """Who is asking: a token (``entry`` + the token itself), or the runtime with fixed
    policies (``entry`` None, from :meth:`SecretsCore.read_for_app`)."""

    acl: ACL
    policies: tuple[str, ...]
    entry: TokenEntry | None = None
    token: str = ""
    display_name: str = ""


@dataclass
class CoreRequest:
    id: str
    operation: Operation
    path: str
    """Full API path below ``/v1`` (``secret/data/app``)."""
    mount_path: str
    relative: str
    data: dict[str, Any] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    caller: Caller | None = None
    remote_address: str = ""
    token: str = ""
    """The token the client sent (also on unauthenticated paths, e.g. wrapping lookup)."""
    wrap_ttl: int = 0
    """``X-Vault-Wrap-TTL`` in seconds; 0: answer in clear."""

    def logical(self) -> Request:
        return Request(
            operation=self.operation,
            path=self.relative,
            mount_point=self.mount_path,
            data=self.data,
            query=self.query,
            token=self.caller.entry.info() if self.caller and self.caller.entry else None,
        )


@dataclass
class CoreResponse(Response):
    """A built-in backend's answer that also sets top-level envelope fields (lease renewal
    answers ``lease_id``/``lease_duration``/``renewable`` without creating a lease)."""

    envelope: dict[str, Any] = field(default_factory=dict)


@dataclass
class EnvelopeResponse(Response):
    """A built-in backend's answer that *is* a whole response body (unwrap hands back the
    stored response, rewrap a new ``wrap_info``): sent as is, with this request's id
    unless the body brings its own (a wrapped answer's id is empty)."""

    body: dict[str, Any] = field(default_factory=dict)


class CoreBackend(Protocol):
    """Recognised by the router from having ``handle_core`` (decided once per mount)."""

    async def handle_core(self, request: CoreRequest) -> Response: ...


CoreHandler = Callable[[CoreRequest, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True)
class CoreRoute:
    """One path pattern of a built-in backend and its handler per operation."""

    pattern: str
    handlers: dict[Operation, CoreHandler]
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern, re.DOTALL))


async def dispatch(routes: list[CoreRoute], request: CoreRequest) -> Response:
    """Vault's answers: 404 ``unsupported path`` when nothing matches, 405 ``unsupported
    operation`` when the path exists but not the verb; create falls back to update."""
    for route in routes:
        match = route.regex.fullmatch(request.relative)
        if match is None:
            continue
        handler = route.handlers.get(request.operation)
        if handler is None and request.operation is Operation.CREATE:
            handler = route.handlers.get(Operation.UPDATE)
        if handler is None:
            raise SecretsError(405, "unsupported operation")
        params = {k: v for k, v in match.groupdict().items() if v is not None}
        return await handler(request, params)
    raise SecretsError(404, "unsupported path")
