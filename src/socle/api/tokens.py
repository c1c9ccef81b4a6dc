"""API tokens: named, random, shown once, stored only as SHA-256 digests.

Each token has a name (the *who* of every revision it applies), a creation time, an
optional expiry, the time it was last used and whether it may manage tokens (``admin``).
The state store holds ``auth/tokens/<sha256>`` → that record, never the token itself.

The admin token is created at first start and written to ``SOCLE_HOME/admin.token`` (mode
0600) so the local CLI can use it. Rotating it writes the new one there and the old one
stops working at once. Revoking the last token that may manage tokens is refused: the way
back from a lost admin token is ``socle token rotate admin --local`` with the server
stopped (filesystem access to the home is the proof of ownership).

:class:`TokenGate` checks the token at the ASGI edge, before any route reads the request
body, so a client without a token cannot make the server read (and hold) a large body.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from socle.errors import AuthError, ConfigError, ConflictError, NotFoundError
from socle.fs import write_private
from socle.state.store import Delete, Put, StateStore

PREFIX = "auth/tokens/"
ADMIN = "admin"
TOKEN_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?")
LAST_USED_EVERY = 60.0
"""Seconds between two writes of a token's ``last_used`` (reads stay cheap)."""
SCOPE_KEY = "socle.token"
MAX_TTL = 10 * 365 * 86400.0

SERVICE_SCOPES: dict[str, frozenset[tuple[str, str]]] = {
    "socle-prometheus": frozenset(
        {("GET", "/metrics"), ("GET", "/metrics/instances"), ("GET", "/api/v1/metrics/targets")}
    ),
    "socle-alertmanager": frozenset({("POST", "/api/v1/alerts/webhook")}),
}
"""What the tokens of Socle's own daemons may call, and nothing else (names as in
``socle.observe.components``). Their token files sit beside a daemon that serves an
unauthenticated API on loopback: a leaked scrape token must not deploy apps."""
RESERVED: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/api/v1/alerts/webhook"): frozenset({"socle-alertmanager"}),
}
"""Routes only the named service tokens (or an admin token) may call: any other API token
posting to the webhook would be an alert source Socle never configured."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "socle_" + secrets.token_urlsafe(32)


def check_token_name(name: str) -> str:
    if not TOKEN_NAME_RE.fullmatch(name):
        raise ConfigError(
            f"invalid token name {name!r}",
            hint="use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit",
        )
    return name


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token: everything but the token."""

    name: str
    created: float
    admin: bool = False
    expires: float | None = None
    last_used: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _info(value: bytes) -> TokenInfo:
    data = json.loads(value)
    name = str(data["name"])
    return TokenInfo(
        name=name,
        created=float(data.get("created", 0.0)),
        # Homes made before named tokens hold one record, the admin's, without the flag.
        admin=bool(data.get("admin", name == ADMIN)),
        expires=data.get("expires"),
        last_used=data.get("last_used"),
    )


def _encode(info: TokenInfo) -> bytes:
    return json.dumps(info.to_dict()).encode()


class TokenStore:
    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._known: dict[str, TokenInfo] = {}
        self._written: dict[str, float] = {}
        self._admin_file: Path | None = None

    async def ensure_admin(self, token_file: Path) -> None:
        """At first start, create the admin token; later, keep the file's token valid.

        A missing or stale ``admin.token`` (deleted by hand, or a rotation whose file write
        was lost) is replaced by rotating the admin token: whoever can write the home owns
        the control plane anyway.
        """
        self._admin_file = token_file
        try:
            current = token_file.read_text().strip()
        except FileNotFoundError:
            current = ""
        if current:
            info = await self.check(current)
            if info is not None and info.name == ADMIN:
                return
        await self.rotate_admin(token_file)

    async def rotate_admin(self, token_file: Path | None = None) -> str:
        """A new admin token in ``token_file``; the old one stops working."""
        token_file = token_file or self._admin_file
        if token_file is None:
            raise ConfigError("this control plane has no admin token file to write")
        if await self._find(ADMIN) is None:
            token = await self.create(ADMIN, admin=True)
        else:
            token = await self.rotate(ADMIN)
        write_private(token_file, token + "\n")
        return token

    async def _records(self) -> list[tuple[str, int, TokenInfo]]:
        return [
            (record.key, record.version, _info(record.value))
            for record in await self._store.scan(PREFIX)
        ]

    async def _find(self, name: str) -> tuple[str, int, TokenInfo] | None:
        return next((r for r in await self._records() if r[2].name == name), None)

    async def _named(self, name: str) -> list[tuple[str, int, TokenInfo]]:
        """Every record called ``name``: one, except in homes where an older version made
        a new admin token each time ``admin.token`` went missing (all of them go together)."""
        found = [r for r in await self._records() if r[2].name == name]
        if not found:
            raise NotFoundError(f"no token named {name!r}", hint="see `socle token list`")
        return found

    async def create(self, name: str, *, ttl: float | None = None, admin: bool = False) -> str:
        """A new token called ``name`` (refused if the name is taken); returned once."""
        check_token_name(name)
        if ttl is not None and not 0 < ttl <= MAX_TTL:
            raise ConfigError(f"token ttl {ttl:g}s must be between 1s and 10 years")
        if await self._find(name) is not None:
            raise ConflictError(
                f"a token named {name!r} already exists",
                hint=f"pick another name, or `socle token revoke {name}` first",
            )
        token = new_token()
        now = time.time()
        info = TokenInfo(
            name=name, created=now, admin=admin, expires=now + ttl if ttl is not None else None
        )
        await self._store.put(PREFIX + digest(token), _encode(info), expect_version=0)
        return token

    async def list(self) -> list[TokenInfo]:
        return sorted((r[2] for r in await self._records()), key=lambda i: i.name)

    async def revoke(self, name: str) -> None:
        found = await self._named(name)
        if any(r[2].admin for r in found):
            now = time.time()
            managers = [r for r in await self._records() if r[2].admin and not r[2].expired(now)]
            if all(r[2].name == name for r in managers):
                raise ConflictError(
                    f"refusing to revoke {name!r}: it is the last token that can manage tokens",
                    hint="rotate it instead (`socle token rotate admin`), or create another "
                    "admin token first; a lost admin token is recovered with "
                    "`socle token rotate admin --local` while the server is stopped",
                )
        await self._store.commit([Delete(key, expect_version=version) for key, version, _ in found])
        for key, _, _ in found:
            self._forget(key)

    async def rotate(self, name: str) -> str:
        """Replace ``name``'s token by a new one (same name and rights); the old one dies."""
        found = await self._named(name)
        info = found[0][2]
        token = new_token()
        fresh = TokenInfo(name=info.name, created=time.time(), admin=info.admin, expires=None)
        if info.expires is not None:
            fresh = TokenInfo(
                name=info.name,
                created=fresh.created,
                admin=info.admin,
                expires=fresh.created + (info.expires - info.created),
            )
        # One commit: a crash leaves either the old token or the new one, never both or none.
        await self._store.commit(
            [
                *(Delete(key, expect_version=version) for key, version, _ in found),
                Put(PREFIX + digest(token), _encode(fresh), expect_version=0),
            ]
        )
        for key, _, _ in found:
            self._forget(key)
        return token

    def _forget(self, key: str) -> None:
        self._known.pop(key.removeprefix(PREFIX), None)

    async def check(self, token: str) -> TokenInfo | None:
        """The token's record if valid and not expired, else None."""
        key = digest(token)
        info = self._known.get(key)
        if info is None:
            record = await self._store.get(PREFIX + key)
            if record is None or not hmac.compare_digest(record.key, PREFIX + key):
                return None
            info = _info(record.value)
            self._known[key] = info
        now = time.time()
        if info.expired(now):
            return None
        if now - self._written.get(key, 0.0) >= LAST_USED_EVERY:
            self._written[key] = now
            await self._touch(key, now)
        return info

    async def _touch(self, key: str, now: float) -> None:
        record = await self._store.get(PREFIX + key)
        if record is None:  # revoked meanwhile (by another control plane)
            self._known.pop(key, None)
            return
        info = _info(record.value)
        updated = TokenInfo(info.name, info.created, info.admin, info.expires, last_used=now)
        with contextlib.suppress(ConflictError):  # a concurrent use wrote a time as good
            await self._store.put(PREFIX + key, _encode(updated), expect_version=record.version)


def bearer(headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> str | None:
    """The token of ``Authorization: Bearer`` (or ``X-Socle-Token``) raw ASGI headers."""
    token: str | None = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"authorization":
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer ":
                return text[7:].strip() or None
        elif lower == b"x-socle-token":
            token = value.decode("latin-1").strip() or None
    return token


class TokenGate:
    """ASGI middleware: ``/api/v1``, ``/loki`` and ``/metrics`` requests without a valid
    token get 401 unread.

    The token's record goes into ``scope[SCOPE_KEY]`` for the routes (``_who``); not into
    ``scope["state"]``, which servers may share with the lifespan.
    ``/healthz`` and the OpenAPI document stay open; ``/v1`` has its own Vault tokens.
    """

    OPEN = frozenset({"/api/v1/openapi.json"})
    GUARDED = ("/api/v1/", "/loki/", "/metrics/")
    """Path prefixes that need a token (``/api/v1`` and ``/metrics`` themselves too): the
    platform API, the Loki-compatible log API and the metrics pages."""
    OPEN_PREFIXES = ("/api/v1/gitops/webhook/",)
    """Git hosts' push webhooks: each is authenticated by its own signature (HMAC or the
    GitLab token) in its route, never by a platform token."""

    def __init__(self, app: ASGIApp, tokens: TokenStore) -> None:
        self._app = app
        self._tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        guarded = scope["type"] == "http" and (
            path in ("/api/v1", "/metrics") or path.startswith(self.GUARDED)
        )
        if guarded and path not in self.OPEN and not path.startswith(self.OPEN_PREFIXES):
            token = bearer(scope.get("headers") or ())
            info = await self._tokens.check(token) if token else None
            if info is None:
                error = AuthError(
                    "missing or invalid API token",
                    status=401,
                    hint="set SOCLE_TOKEN or use the admin token in SOCLE_HOME/admin.token",
                )
                body = json.dumps(error.to_dict()).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer"),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            refusal = out_of_scope(info, str(scope.get("method", "")).upper(), path)
            if refusal is not None:
                body = json.dumps(refusal.to_dict()).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            scope[SCOPE_KEY] = info
        await self._app(scope, receive, send)


def out_of_scope(info: TokenInfo, method: str, path: str) -> AuthError | None:
    """Why ``info`` may not call ``method path`` (:data:`SERVICE_SCOPES`, :data:`RESERVED`).

    The gate asks it for every HTTP request; routes that check a token themselves (the
    WebSocket tail, which the gate does not see) must ask it too."""
    if method == "HEAD":
        method = "GET"
    allowed = SERVICE_SCOPES.get(info.name)
    if allowed is not None and (method, path) not in allowed:
        return AuthError(
            f"token {info.name!r} is a service token and may not call {method} {path}",
            status=403,
            hint="it only serves " + ", ".join(sorted(f"{m} {p}" for m, p in allowed)),
        )
    callers = RESERVED.get((method, path))
    if callers is not None and not info.admin and info.name not in callers:
        return AuthError(
            f"{method} {path} is only for {', '.join(sorted(callers))} (or an admin token)",
            status=403,
            hint="Alertmanager calls it with the token Socle gave it",
        )
    return None
