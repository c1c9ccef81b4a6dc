"""Who is acting: set by the API edge for the length of one request, read by every layer
below it (the audited store, traces) without passing it through every call.

Work that no request started (the rollout controller, gitops sync, remediation) runs as
:data:`SYSTEM`: the platform itself, never a name a client chose.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    who: str
    """The API token's name (``-`` for a request without a valid token), or ``socle``."""
    request_id: str = "-"


SYSTEM = Actor("socle")
_ACTOR: ContextVar[Actor] = ContextVar("socle_audit_actor", default=SYSTEM)


def current_actor() -> Actor:
    return _ACTOR.get()


@contextlib.contextmanager
def acting(actor: Actor) -> Iterator[Actor]:
    """Run the block (and every task or thread it starts) as ``actor``."""
    token = _ACTOR.set(actor)
    try:
        yield actor
    finally:
        _ACTOR.reset(token)


def set_actor(actor: Actor) -> None:
    """Make ``actor`` current for the rest of this context (an ASGI request's own)."""
    _ACTOR.set(actor)


__all__ = ["SYSTEM", "Actor", "acting", "current_actor", "set_actor"]
