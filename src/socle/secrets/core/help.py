"""``path-help``: what a mount or a path does, in Vault's text layout.

``bao path-help PATH`` (``GET PATH?help=1``) prints the ``help`` string of the answer. A
backend that can describe its routes implements ``help_routes() -> [(pattern, synopsis)]``
(the routed engines and the built-in backends do, from their route tables); the
description is the backend class's docstring. For the mount itself (``secret/``) the text
lists the routes; for a path below it, the route that matches it. Nothing here reads or
writes data: help is computed from code, so it needs only a token that has some capability
on the path.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from socle.secrets.backend import Operation

_PATHS_INTRO = (
    "The following paths are supported by this backend. To view help for\n"
    "any of the paths below, use the help command with any route matching\n"
    "the path pattern. Note that depending on the policy of your auth token,\n"
    "you may or may not be able to access certain paths."
)


def synopses(
    routes: Iterable[tuple[str, Mapping[Operation, Callable[..., Any]]]],
) -> list[tuple[str, str]]:
    """(pattern, synopsis) per route: the first docstring line of a handler, else the
    operations the route answers."""
    out = []
    for pattern, handlers in routes:
        doc = next((inspect.getdoc(h) for h in handlers.values() if inspect.getdoc(h)), None)
        if doc:
            synopsis = doc.strip().splitlines()[0]
        else:
            verbs = sorted({op.value for op in handlers})
            synopsis = "Operations: " + ", ".join(verbs) if verbs else ""
        out.append((pattern, synopsis))
    return out


def _description(backend: object) -> str:
    return inspect.getdoc(type(backend)) or "No description is available for this backend."


def render(backend: object, relative: str) -> str:
    getter = getattr(backend, "help_routes", None)
    routes: list[tuple[str, str]] = list(getter()) if callable(getter) else []
    if relative.strip("/"):
        for pattern, synopsis in routes:
            if re.fullmatch(pattern, relative, re.DOTALL):
                return (
                    f"Request:        {relative}\n"
                    f"Matching Route: ^{pattern}$\n\n"
                    f"{synopsis}\n\n"
                    f"## DESCRIPTION\n\n{_description(backend)}\n"
                )
    text = f"## DESCRIPTION\n\n{_description(backend)}\n"
    if routes:
        listed = "\n\n".join(
            f"    ^{pattern}$\n        {synopsis}".rstrip() for pattern, synopsis in routes
        )
        text += f"\n## PATHS\n\n{_PATHS_INTRO}\n\n{listed}\n"
    return text
