"""API tokens: random, shown once, stored only as SHA-256 digests.

The admin token is created at first start and written to ``SOCLE_HOME/admin.token`` with
mode 0600 so the local CLI can use it; the state store only ever holds its digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path

from socle.fs import write_private
from socle.state.store import StateStore

PREFIX = "auth/tokens/"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "socle_" + secrets.token_urlsafe(32)


class TokenStore:
    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._known: dict[str, str] = {}

    async def ensure_admin(self, token_file: Path) -> None:
        """At first start, create the admin token; later, keep the file's token valid."""
        if await self._store.keys(PREFIX) and token_file.exists():
            return
        token = new_token()
        await self.add(token, "admin")
        write_private(token_file, token + "\n")

    async def add(self, token: str, name: str) -> None:
        body = json.dumps({"name": name, "created": time.time()}).encode()
        await self._store.put(PREFIX + digest(token), body)

    async def check(self, token: str) -> str | None:
        """The token's name if valid, else None. Constant-time on the digest compare."""
        key = digest(token)
        cached = self._known.get(key)
        if cached is not None:
            return cached
        record = await self._store.get(PREFIX + key)
        if record is None or not hmac.compare_digest(record.key, PREFIX + key):
            return None
        name = str(json.loads(record.value)["name"])
        self._known[key] = name
        return name
