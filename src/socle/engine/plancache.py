"""The planning caches saved across restarts, so the first plan after a restart is warm.

Planning 10,000 objects from scratch parses every YAML file, validates every object and
computes every object's planner state (seconds); with the caches of a running engine it
costs a ``stat`` per file and a lookup per object. The engine saves those caches (the
:class:`~socle.model.cache.ManifestCache` and each kind handler's state cache) at stop and
after applies, and adopts them at start.

They are pickled in one piece, so that a validated model shared by the manifest cache and a
handler's state cache is still one object after loading (the state caches are keyed by
object identity). The file lives in SOCLE_HOME (owner-only, 0600, like the state store and
the admin token: whoever can write it can already change the state), is written atomically,
and carries the digest of Socle's own code: a file made by another version, unreadable or
damaged is ignored (and the plan is simply cold), never trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from functools import cache
from pathlib import Path
from typing import Any

import socle
from socle.fs import private_dir, write_private

log = logging.getLogger(__name__)

FORMAT = 1


@cache
def code_digest() -> str:
    """sha256 over the source of the ``socle`` package: pickled models are only valid for
    the exact code that made them."""
    root = Path(socle.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def save(path: Path, content: dict[str, Any]) -> None:
    """Write ``content`` (pickled with a header) atomically, owner-only."""
    data = pickle.dumps(
        {"format": FORMAT, "code": code_digest(), "content": content},
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    private_dir(path.parent)
    write_private(path, data)


def load(path: Path) -> dict[str, Any] | None:
    """What :func:`save` wrote, or None if there is nothing usable (and why is logged)."""
    try:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            log.warning("ignoring %s: not owned by us or readable by others", path)
            return None
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring plan cache %s: %s", path, exc)
        return None
    try:
        found = pickle.loads(data)  # noqa: S301 - our own owner-only file, checked above
    except Exception as exc:
        log.warning("ignoring damaged plan cache %s: %r", path, exc)
        return None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        return None
    if found.get("code") != code_digest():
        log.info("plan cache %s was made by other code; starting cold", path)
        return None
    content = found.get("content")
    return content if isinstance(content, dict) else None
