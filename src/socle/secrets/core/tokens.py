"""Service tokens: creation, lookup, use counting, renewal and tree revocation.

A token is ``hvs.`` + 32 random base62 characters (about 190 bits), like Vault's. It is never stored: entries are keyed
by HMAC-SHA256(token) with a salt that itself lives behind the barrier, so neither values
nor key names in the state store reveal a token. Accessors (the handle that can look up or
revoke a token without being able to use it) are stored the same way.

Storage (barrier paths)::

    token/salt                           HMAC key
    token/id/<hmac(token)>               the entry (JSON)
    token/accessor/<hmac(accessor)>      -> token hmac
    token/parent/<parent hmac>/<child>   the tree, so revoking a parent finds its children

Entries are cached in memory after their first decryption (the hot path of every request);
every change goes through this class, which updates the cache and the store together.

Batch tokens (``hvb.``) are the other kind: the entry itself, encrypted by the barrier's
active key (path ``token/batch`` as associated data), *is* the token, so creating one writes
nothing to the store and a token survives restarts, key rotation and load without a row per
token: what batch tokens are for (many short-lived tokens from CI or workloads). The price
is Vault's: no accessor, no cubbyhole, not renewable, not revocable on their own, no
children; a batch token dies with its TTL or with its parent, which is checked on every
lookup. An encrypted token rather than a stored one keeps those properties honest: nothing
in the store to list, revoke or leak, and a forged or altered token fails authentication.

Time rules (Vault's): the default TTL and the system maximum are 32 days; ``explicit_max_ttl``
is a hard cap that renewals cannot pass; a periodic token renews to its period forever (up
to an explicit max); a child never outlives its parent. Root tokens (policy ``root``, no TTL)
never expire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import string
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from socle.secrets.backend import SecretsError, TokenInfo
from socle.secrets.core.barrier import Barrier
from socle.secrets.core.fields import SYSTEM_MAX_TTL, rfc3339
from socle.units import go_duration

Clock = Callable[[], float]
TOKEN_PREFIX = "hvs."  # noqa: S105 - a format prefix, not a secret
BATCH_PREFIX = "hvb."
_BATCH_AD_PATH = "token/batch"
_MAX_BATCH_TOKEN = 8192
_DISPLAY = re.compile(r"[^a-zA-Z0-9_.@-]+")


_BASE62 = string.ascii_letters + string.digits


def _short(duration: str) -> str:
    """Vault's humanised form in warnings: ``2h0m0s`` is ``2h``, ``1h30m0s`` is ``1h30m``."""
    if duration == "0s":
        return duration
    return re.sub(r"(?<=[hm])0s$", "", re.sub(r"(?<=h)0m(?=0s$)", "", duration))


def base62(length: int) -> str:
    """Random letters and digits only, as Vault's tokens and accessors: clients and
    scripts split and match them with ``[A-Za-z0-9]`` (5.95 bits each)."""
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def new_accessor() -> str:
    return base62(24)


@dataclass
class TokenEntry:
    id: str
    """HMAC of the token: the storage key. The token itself is never kept."""
    accessor: str
    policies: list[str]
    parent: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    display_name: str = "token"
    num_uses: int = 0
    """0: unlimited; N: uses left; -1: used up (being revoked)."""
    creation_time: float = 0.0
    creation_ttl: int = 0
    ttl: int = 0
    explicit_max_ttl: int = 0
    period: int = 0
    renewable: bool = True
    path: str = "auth/token/create"
    expire_at: float = 0.0
    """Absolute expiry (epoch seconds); 0 means never."""
    max_expire_at: float = 0.0
    """Renewals cannot go past this; 0 means no cap."""
    orphan: bool = False
    last_renewal: float = 0.0
    """When the token was last renewed (epoch seconds); 0 if never."""
    type: str = "service"
    """``service`` (stored) or ``batch`` (self-contained, see the module docstring)."""
    role: str = ""
    """The token role it was created from, if any."""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TokenEntry:
        return cls(**json.loads(raw))

    @property
    def is_root(self) -> bool:
        return "root" in self.policies

    def remaining(self, now: float) -> int:
        return 0 if not self.expire_at else max(0, round(self.expire_at - now))

    def info(self) -> TokenInfo:
        return TokenInfo(
            accessor=self.accessor,
            policies=tuple(self.policies),
            display_name=self.display_name,
            meta=dict(self.meta),
        )

    def lookup_data(self, token_id: str, now: float) -> dict[str, Any]:
        """The ``data`` of ``auth/token/lookup*`` (``id`` is the token, or "" by accessor)."""
        data: dict[str, Any] = {
            "accessor": self.accessor,
            "creation_time": int(self.creation_time),
            "creation_ttl": self.creation_ttl,
            "display_name": self.display_name,
            "entity_id": "",
            "expire_time": rfc3339(self.expire_at) if self.expire_at else None,
            "explicit_max_ttl": self.explicit_max_ttl,
            "id": token_id,
            "issue_time": rfc3339(self.creation_time),  # not for init's root: see below
            "meta": self.meta or None,
            "num_uses": max(self.num_uses, 0),
            "orphan": self.orphan,
            "path": self.path,
            "policies": list(self.policies),
            "renewable": self.renewable,
            "ttl": self.remaining(now),
            "type": self.type,
        }
        if self.period and not self.role:  # a role's period is the role's, not shown here
            data["period"] = self.period
        if self.role:
            data["role"] = self.role
        if self.path == "auth/token/root":
            # Vault keeps no lease for the root token of init: no issue time, no renewable.
            del data["issue_time"], data["renewable"]
        if self.last_renewal:
            data["last_renewal"] = rfc3339(self.last_renewal)
            data["last_renewal_time"] = int(self.last_renewal)
        return data

    def auth_block(self, token: str, now: float) -> dict[str, Any]:
        """The ``auth`` object of a create/login/renew response."""
        return {
            "client_token": token,
            "accessor": self.accessor,
            "policies": list(self.policies),
            "token_policies": list(self.policies),
            "identity_policies": None,
            "metadata": self.meta or None,
            "lease_duration": self.remaining(now),
            "renewable": self.renewable and bool(self.expire_at),
            "entity_id": "",
            "token_type": self.type,
            "orphan": self.orphan,
            "mfa_requirement": None,
            "num_uses": max(self.num_uses, 0),
        }


@dataclass
class TokenParams:
    """What a new token should be; built from ``auth/token/create`` or an auth method."""

    policies: list[str]
    meta: dict[str, str] = field(default_factory=dict)
    display_name: str = ""
    num_uses: int = 0
    ttl: int = 0
    max_ttl: int = 0
    """An auth method's cap on renewals (AppRole ``token_max_ttl``)."""
    explicit_max_ttl: int = 0
    period: int = 0
    renewable: bool = True
    no_default_policy: bool = False
    path: str = "auth/token/create"
    token_id: str = ""
    """A caller-chosen token (root callers only)."""
    type: str = "service"
    role: str = ""


def sanitise_display_name(name: str) -> str:
    return _DISPLAY.sub("-", name.strip()).strip("-")[:64]


class TokenStore:
    _CACHE_LIMIT = 100_000

    def __init__(self, barrier: Barrier, clock: Clock = time.time) -> None:
        self._barrier = barrier
        self._clock = clock
        self._mac = hmac.new(b"", digestmod=hashlib.sha256)
        self._cache: OrderedDict[str, TokenEntry] = OrderedDict()
        self.on_revoke: Callable[[TokenEntry], Awaitable[None]] | None = None
        """Set by the core: revokes the token's leases and cubbyhole."""
        self.on_schedule: Callable[[TokenEntry], None] | None = None
        """Set by the core: (re)schedules the token's expiry."""

    # -- keys ---------------------------------------------------------------------------

    async def load(self, *, create: bool = False) -> None:
        salt = await self._barrier.get("token/salt")
        if salt is None:
            if not create:
                raise SecretsError(500, "token store salt is missing")
            salt = secrets.token_bytes(32)
            await self._barrier.put("token/salt", salt)
        self._mac = hmac.new(salt, digestmod=hashlib.sha256)
        self._cache.clear()

    def hash(self, value: str) -> str:
        mac = self._mac.copy()  # keyed once at load: a copy per value skips the key setup
        mac.update(value.encode())
        return mac.hexdigest()

    # -- reading ------------------------------------------------------------------------

    def _remember(self, entry: TokenEntry) -> None:
        self._cache[entry.id] = entry
        self._cache.move_to_end(entry.id)
        if len(self._cache) > self._CACHE_LIMIT:
            self._cache.popitem(last=False)

    async def _load(self, token_hash: str) -> TokenEntry | None:
        entry = self._cache.get(token_hash)
        if entry is not None:
            return entry
        raw = await self._barrier.get(f"token/id/{token_hash}")
        if raw is None:
            return None
        entry = self._cache.get(token_hash)  # another task may have loaded it meanwhile
        if entry is None:
            entry = TokenEntry.from_json(raw)
            self._remember(entry)
        return entry

    def _valid(self, entry: TokenEntry | None) -> TokenEntry | None:
        if entry is None or entry.num_uses < 0:
            return None
        if entry.expire_at and self._clock() >= entry.expire_at:
            return None
        return entry

    async def lookup(self, token: str) -> TokenEntry | None:
        """The live entry for a token, or None (unknown, expired or used up)."""
        if token.startswith(BATCH_PREFIX):
            return await self._lookup_batch(token)
        if not token or len(token) > 256:
            return None
        return self._valid(await self._load(self.hash(token)))

    async def _lookup_batch(self, token: str) -> TokenEntry | None:
        """A batch token decrypted (once, then cached), valid while its parent is."""
        if len(token) > _MAX_BATCH_TOKEN:
            return None
        token_hash = self.hash(token)
        entry = self._cache.get(token_hash)
        if entry is None:
            text = token[len(BATCH_PREFIX) :]
            try:
                blob = base64.urlsafe_b64decode(text + "==")
                # One spelling per token: the lenient decoder skips stray characters, which
                # would give one batch token endless names (hashes, audit HMACs, cache slots).
                if base64.urlsafe_b64encode(blob).decode().rstrip("=") != text:
                    return None
                entry = TokenEntry.from_json(self._barrier.decrypt(_BATCH_AD_PATH, blob))
            except (SecretsError, ValueError, TypeError):
                return None  # forged, altered, or from another store: unknown
            entry.id = token_hash
            self._remember(entry)
        if self._valid(entry) is None:
            return None
        if entry.parent and self._valid(await self._load(entry.parent)) is None:
            return None  # the parent was revoked or expired: so is its batch child
        return entry

    async def lookup_id(self, token_hash: str) -> TokenEntry | None:
        return await self._load(token_hash)

    async def by_accessor(self, accessor: str) -> TokenEntry | None:
        if not accessor or len(accessor) > 256:
            return None
        raw = await self._barrier.get(f"token/accessor/{self.hash(accessor)}")
        if raw is None:
            return None
        return self._valid(await self._load(raw.decode()))

    async def all_entries(self) -> list[TokenEntry]:
        """Every stored entry (one store query), cached as a side effect."""
        entries = []
        for _, raw in await self._barrier.scan("token/id/"):
            entry = TokenEntry.from_json(raw)
            entry = self._cache.get(entry.id, entry)  # prefer the live cached object
            self._remember(entry)
            entries.append(entry)
        return entries

    async def accessors(self) -> list[str]:
        return sorted(e.accessor for e in await self.all_entries() if self._valid(e) is not None)

    # -- writing ------------------------------------------------------------------------

    async def _save(self, entry: TokenEntry) -> None:
        await self._barrier.put(f"token/id/{entry.id}", entry.to_json())
        self._remember(entry)

    async def create(
        self, params: TokenParams, parent: TokenEntry | None
    ) -> tuple[str, TokenEntry, list[str]]:
        """Make a token; returns (token, entry, warnings)."""
        now = self._clock()
        warnings: list[str] = []
        if params.type == "batch":
            return await self._create_batch(params, parent, now, warnings)
        token = params.token_id or TOKEN_PREFIX + base62(32)
        token_hash = self.hash(token)
        if params.token_id and await self._load(token_hash) is not None:
            raise SecretsError(400, "cannot create a token with a duplicate ID")
        entry = self._new_entry(token_hash, new_accessor(), params, parent, now)
        self._apply_ttl(entry, params, parent, now, warnings)
        writes = {
            f"token/id/{entry.id}": entry.to_json(),
            f"token/accessor/{self.hash(entry.accessor)}": entry.id.encode(),
        }
        if parent is not None:
            writes[f"token/parent/{parent.id}/{entry.id}"] = b""
        await self._barrier.put_many(writes)
        self._remember(entry)
        if self.on_schedule is not None:
            self.on_schedule(entry)
        return token, entry, warnings

    @staticmethod
    def _new_entry(
        token_hash: str, accessor: str, params: TokenParams, parent: TokenEntry | None, now: float
    ) -> TokenEntry:
        policies = sorted(set(params.policies))
        if not params.no_default_policy and "root" not in policies and "default" not in policies:
            policies = sorted([*policies, "default"])
        name = sanitise_display_name(params.display_name)
        # Vault names every token made by auth/token/create "token" (or "token-NAME"), even
        # a root child; only other paths (init's root token, logins) name it themselves.
        display = "token-" + name if name else "token"
        if params.path != "auth/token/create" and "auth/token/create/" not in params.path and name:
            display = name
        return TokenEntry(
            id=token_hash,
            accessor=accessor,
            policies=policies,
            parent=parent.id if parent else "",
            meta=dict(params.meta),
            display_name=display,
            num_uses=params.num_uses,
            creation_time=now,
            explicit_max_ttl=params.explicit_max_ttl,
            period=params.period,
            renewable=params.renewable,
            path=params.path,
            orphan=parent is None,
            type=params.type,
            role=params.role,
        )

    async def _create_batch(
        self, params: TokenParams, parent: TokenEntry | None, now: float, warnings: list[str]
    ) -> tuple[str, TokenEntry, list[str]]:
        """A batch token: the encrypted entry, nothing stored (see the module docstring)."""
        if "root" in params.policies:
            raise SecretsError(400, "batch tokens cannot be root tokens")
        if params.token_id:
            raise SecretsError(400, "batch tokens cannot have a custom ID")
        if params.num_uses:
            raise SecretsError(400, "batch tokens cannot have a use limit")
        entry = self._new_entry("", "", params, parent, now)
        entry.renewable = False
        self._apply_ttl(entry, params, parent, now, warnings)
        blob = self._barrier.encrypt(_BATCH_AD_PATH, entry.to_json())
        token = BATCH_PREFIX + base64.urlsafe_b64encode(blob).decode().rstrip("=")
        entry.id = self.hash(token)
        self._remember(entry)
        return token, entry, warnings

    def _apply_ttl(
        self,
        entry: TokenEntry,
        params: TokenParams,
        parent: TokenEntry | None,
        now: float,
        warnings: list[str],
    ) -> None:
        root_forever = (
            entry.is_root and not params.ttl and not params.period and not params.explicit_max_ttl
        )
        if root_forever:
            entry.renewable = False
            return
        caps = [c for c in (params.explicit_max_ttl, params.max_ttl) if c > 0]
        if params.period:
            ttl = params.period
            max_ttl = min(caps) if params.explicit_max_ttl else 0
        else:
            ttl = params.ttl or SYSTEM_MAX_TTL
            max_ttl = min([*caps, SYSTEM_MAX_TTL])
        if max_ttl and ttl > max_ttl:
            if params.ttl:  # an asked-for TTL is worth a warning; the default is capped quietly
                warnings.append(
                    f"TTL of {ttl}s exceeded the effective max_ttl of {max_ttl}s; capped"
                )
            ttl = max_ttl
        entry.ttl = ttl
        entry.expire_at = now + ttl
        entry.max_expire_at = now + max_ttl if max_ttl else 0.0
        # No cap at the parent's remaining TTL (Vault has none): when a parent expires or is
        # revoked, the expiry manager revokes its whole tree, children included.
        entry.creation_ttl = round(entry.expire_at - now)

    async def use(self, entry: TokenEntry) -> bool:
        """Count one use; True when this was the last one (revoke after the request).

        The cached entry is updated before the first ``await``, so two concurrent requests
        on the event loop cannot both spend the last use.
        """
        if entry.num_uses <= 0:
            return False
        entry.num_uses -= 1
        last = entry.num_uses == 0
        if last:
            entry.num_uses = -1
        await self._save(entry)
        return last

    async def renew(self, entry: TokenEntry, increment: int) -> tuple[TokenEntry, list[str]]:
        now = self._clock()
        warnings: list[str] = []
        if entry.type == "batch":
            raise SecretsError(400, "batch tokens cannot be renewed")
        if not entry.expire_at:
            return entry, warnings
        if not entry.renewable:
            raise SecretsError(400, "lease is not renewable")
        # No increment: the TTL last granted (Vault's auth TTL), not the creation TTL.
        ttl = entry.period or increment or entry.ttl or SYSTEM_MAX_TTL
        entry.ttl = ttl
        entry.last_renewal = now
        expire = now + ttl
        if entry.max_expire_at and expire > entry.max_expire_at:
            expire = entry.max_expire_at
            warnings.append(
                f'TTL of "{_short(go_duration(ttl))}" exceeded the effective max_ttl of '
                f'"{_short(go_duration(entry.max_expire_at - now))}"; TTL value is '
                "capped accordingly"
            )
        if entry.parent:
            parent = await self._load(entry.parent)
            if parent is not None and parent.expire_at and expire > parent.expire_at:
                expire = parent.expire_at
        entry.expire_at = expire
        await self._save(entry)
        if self.on_schedule is not None:
            self.on_schedule(entry)
        return entry, warnings

    async def children(self, token_hash: str) -> list[str]:
        prefix = f"token/parent/{token_hash}/"
        return [key[len(prefix) :] for key in await self._barrier.keys(prefix)]

    async def revoke_tree(self, entry: TokenEntry) -> int:
        """Revoke a token and all its descendants, deepest first; returns how many."""
        order: list[str] = []
        stack = [entry.id]
        while stack:
            current = stack.pop()
            order.append(current)
            stack.extend(await self.children(current))
        for token_hash in reversed(order):
            await self._revoke_one(token_hash)
        return len(order)

    async def revoke_orphan(self, entry: TokenEntry) -> None:
        """Revoke one token; its children become orphans (``revoke-orphan``)."""
        for child_hash in await self.children(entry.id):
            child = await self._load(child_hash)
            if child is not None:
                child.parent = ""
                child.orphan = True
                await self._save(child)
        await self._revoke_one(entry.id)

    async def _revoke_one(self, token_hash: str) -> None:
        entry = await self._load(token_hash)
        if entry is None:
            return
        entry.num_uses = -1  # dead for concurrent requests from now on
        if self.on_revoke is not None:
            await self.on_revoke(entry)
        deletes = [
            f"token/id/{token_hash}",
            f"token/accessor/{self.hash(entry.accessor)}",
            *(f"token/parent/{token_hash}/{c}" for c in await self.children(token_hash)),
        ]
        if entry.parent:
            deletes.append(f"token/parent/{entry.parent}/{token_hash}")
        await self._barrier.put_many({}, deletes)
        self._cache.pop(token_hash, None)
