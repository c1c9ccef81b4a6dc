"""The expiration manager: leases and token expiry, revoked on time.

When a backend answers with a :class:`~socle.secrets.backend.Lease`, the core records it
(behind the barrier) under a lease id ``<mount path><request path>/<random>``, indexed by
the token that obtained it, and schedules it. One asyncio task sleeps until the earliest
expiry in a heap (it is woken when an earlier one arrives), so the cost is O(log n) per
lease and nothing is polled. Expired tokens are in the same heap: their expiry revokes the
token tree and, through it, their leases.

For metrics, an in-memory index keeps each lease's mount and *final* expiry: when it ends
for good, because it is not renewable or a renewal already reached its max TTL (None while a
renewal can still push it back). :meth:`ExpirationManager.summary` answers per mount with
the lease count and the soonest final expiry, without reading storage (the gauge
``socle_secrets_lease_final_expiry_timestamp_seconds`` and the built-in rule
``SocleSecretsLeaseEndingSoon`` use it).

The schedule is rebuilt from storage at every unseal, so expiries survive restarts; what
expired while the server was down is revoked right after the unseal. A backend that fails
to revoke is retried with exponential backoff (capped at 5 minutes); the lease stays
recorded until revocation succeeds.

Storage (barrier paths)::

    lease/id/<lease id>                  the lease (JSON, with the backend's internal data)
    lease/token/<token hmac>/<digest>    -> lease id, to revoke a token's leases
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import json
import logging
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from socle.secrets.backend import Lease, SecretsError
from socle.secrets.core.barrier import Barrier
from socle.secrets.core.fields import SYSTEM_MAX_TTL, clamp_ttl, rfc3339
from socle.secrets.core.router import MountEntry, Router
from socle.secrets.core.tokens import TokenEntry, TokenStore
from socle.tasks import TaskMonitor, within

log = logging.getLogger("socle.secrets")
Clock = Callable[[], float]
_ALPHABET = string.ascii_letters + string.digits
_MAX_BACKOFF = 300.0


def new_lease_suffix() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(24))


@dataclass
class LeaseEntry:
    lease_id: str
    mount_uuid: str
    path: str
    token_id: str
    issue_time: float
    expire_at: float
    max_expire_at: float
    ttl: int
    renewable: bool
    internal: dict[str, Any] = field(default_factory=dict)
    last_renewal: float = 0.0
    failures: int = 0

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LeaseEntry:
        return cls(**json.loads(raw))

    def lease(self, now: float) -> Lease:
        max_ttl = max(0.0, self.max_expire_at - now) if self.max_expire_at else None
        return Lease(
            ttl=max(0.0, self.expire_at - now),
            renewable=self.renewable,
            max_ttl=max_ttl,
            internal=dict(self.internal),
        )

    def final_expiry(self) -> float | None:
        """When this lease ends for good: now known if it cannot be renewed, or if its
        expiry already reached its max TTL; None while a renewal can still extend it."""
        if not self.renewable or (self.max_expire_at and self.expire_at >= self.max_expire_at):
            return self.expire_at
        return None

    def lookup_data(self, now: float) -> dict[str, Any]:
        return {
            "id": self.lease_id,
            "issue_time": rfc3339(self.issue_time),
            "expire_time": rfc3339(self.expire_at),
            "last_renewal": rfc3339(self.last_renewal) if self.last_renewal else None,
            "path": self.path,
            "renewable": self.renewable,
            "ttl": max(0, round(self.expire_at - now)),
        }


def _owner(token: TokenEntry | None) -> str:
    """The token whose revocation revokes a lease: a batch token is never revoked on its
    own (nothing is stored for it), so its leases belong to its parent, as in Vault."""
    if token is None:
        return ""
    return token.parent if token.type == "batch" else token.id


def _token_index(token_id: str, lease_id: str) -> str:
    return f"lease/token/{token_id}/{hashlib.sha256(lease_id.encode()).hexdigest()[:40]}"


class ExpirationManager:
    def __init__(
        self,
        barrier: Barrier,
        router: Router,
        tokens: TokenStore,
        clock: Clock = time.time,
        tasks: TaskMonitor | None = None,
    ) -> None:
        self._barrier = barrier
        self._router = router
        self._tokens = tokens
        self._clock = clock
        self._heap: list[tuple[float, int, str, str]] = []
        self._due: dict[tuple[str, str], float] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks = (tasks if tasks is not None else TaskMonitor()).group("secrets")
        self._lock = asyncio.Lock()
        self._index: dict[str, tuple[str, float | None]] = {}
        """lease id -> (mount uuid, final expiry or None): see the module docstring."""

    # -- schedule -----------------------------------------------------------------------

    def schedule(self, kind: str, key: str, when: float) -> None:
        self._due[(kind, key)] = when
        heapq.heappush(self._heap, (when, next(self._seq), kind, key))
        if self._heap[0][0] == when:
            self._wake.set()

    def unschedule(self, kind: str, key: str) -> None:
        self._due.pop((kind, key), None)

    def schedule_token(self, entry: TokenEntry) -> None:
        if entry.expire_at:
            self.schedule("token", entry.id, entry.expire_at)

    async def start(self) -> None:
        """Rebuild the schedule from storage, then run the expiry task."""
        for _, raw in await self._barrier.scan("lease/id/"):
            entry = LeaseEntry.from_json(raw)
            self.schedule("lease", entry.lease_id, entry.expire_at)
            self._indexed(entry)
        for token in await self._tokens.all_entries():
            if token.expire_at:
                self.schedule("token", token.id, token.expire_at)
            elif token.num_uses < 0:  # used up before a crash: finish the revocation
                self.schedule("token", token.id, self._clock())
        self._task = self._tasks.spawn(self._run(), "expiry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._heap.clear()
        self._due.clear()
        self._index.clear()

    def _indexed(self, entry: LeaseEntry) -> None:
        self._index[entry.lease_id] = (entry.mount_uuid, entry.final_expiry())

    def summary(self) -> dict[str, tuple[int, float | None]]:
        """Per mount path: how many leases, and the soonest final expiry among them (None:
        every lease can still be renewed). In memory, O(leases): for metrics at scrape."""
        out: dict[str, tuple[int, float | None]] = {}
        for uuid, final in list(self._index.values()):
            mounted = self._router.by_uuid(uuid)
            if mounted is None:
                continue
            path = mounted.entry.path
            count, soonest = out.get(path, (0, None))
            if final is not None and (soonest is None or final < soonest):
                soonest = final
            out[path] = (count + 1, soonest)
        return out

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            due: list[tuple[str, str]] = []
            while self._heap and self._heap[0][0] <= now:
                when, _, kind, key = heapq.heappop(self._heap)
                if self._due.get((kind, key)) == when:
                    del self._due[(kind, key)]
                    due.append((kind, key))
            for kind, key in due:
                await self._expire(kind, key)
            if due:
                continue
            timeout = self._heap[0][0] - self._clock() if self._heap else None
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), timeout)

    async def _expire(self, kind: str, key: str) -> None:
        try:
            if kind == "token":
                token = await self._tokens.lookup_id(key)
                if token is None:
                    return
                if token.expire_at and token.expire_at > self._clock() and token.num_uses >= 0:
                    self.schedule("token", key, token.expire_at)  # renewed meanwhile
                    return
                await self._tokens.revoke_tree(token)
            else:
                await self.revoke(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._retry_later(kind, key, exc)

    async def _retry_later(self, kind: str, key: str, exc: Exception) -> None:
        failures = 1
        if kind == "lease":
            entry = await self._load(key)
            if entry is None:
                return
            entry.failures += 1
            failures = entry.failures
            await self._barrier.put(f"lease/id/{key}", entry.to_json())
        delay = min(_MAX_BACKOFF, 2.0**failures)
        log.warning(
            "revoking %s %s failed (%s); retrying in %.0fs",
            kind,
            key if kind == "lease" else "(token)",
            type(exc).__name__,
            delay,
        )
        self.schedule(kind, key, self._clock() + delay)

    # -- leases -------------------------------------------------------------------------

    async def _load(self, lease_id: str) -> LeaseEntry | None:
        if not lease_id or len(lease_id) > 1024:
            return None
        raw = await self._barrier.get(f"lease/id/{lease_id}")
        return None if raw is None else LeaseEntry.from_json(raw)

    async def register(
        self, mount: MountEntry, path: str, lease: Lease, token: TokenEntry | None
    ) -> LeaseEntry:
        now = self._clock()
        # A tuned mount max replaces the system max (Vault's system view), it is not capped.
        mount_max = mount.max_lease_ttl or SYSTEM_MAX_TTL
        ttl = clamp_ttl(int(lease.ttl) or mount.default_lease_ttl or SYSTEM_MAX_TTL, mount_max)
        max_ttl = clamp_ttl(int(lease.max_ttl or 0) or mount_max, mount_max)
        expire = now + ttl
        max_expire = now + max_ttl
        if token is not None and token.expire_at:  # a lease never outlives its token
            expire = min(expire, token.expire_at)
        if token is not None and token.max_expire_at:
            max_expire = min(max_expire, token.max_expire_at)
        entry = LeaseEntry(
            lease_id=f"{path.rstrip('/')}/{new_lease_suffix()}",
            mount_uuid=mount.uuid,
            path=path,
            token_id=_owner(token),
            issue_time=now,
            expire_at=expire,
            max_expire_at=max_expire,
            ttl=ttl,
            renewable=lease.renewable,
            internal=dict(lease.internal),
        )
        writes = {f"lease/id/{entry.lease_id}": entry.to_json()}
        if entry.token_id:
            writes[_token_index(entry.token_id, entry.lease_id)] = entry.lease_id.encode()
        await self._barrier.put_many(writes)
        self.schedule("lease", entry.lease_id, entry.expire_at)
        self._indexed(entry)
        return entry

    async def lookup(self, lease_id: str) -> LeaseEntry:
        entry = await self._load(lease_id)
        if entry is None:
            raise SecretsError(400, "invalid lease")
        return entry

    async def renew(self, lease_id: str, increment: int) -> tuple[LeaseEntry, list[str]]:
        now = self._clock()
        entry = await self._load(lease_id)
        if entry is None:
            raise SecretsError(400, "lease not found")
        if entry.expire_at <= now:
            raise SecretsError(400, "lease expired")
        if not entry.renewable:
            raise SecretsError(400, "lease is not renewable")
        mounted = self._router.by_uuid(entry.mount_uuid)
        if mounted is None:
            raise SecretsError(400, "the mount that issued this lease is gone")
        renewed: Lease = await mounted.backend.renew(entry.lease(now), float(increment) or None)
        warnings: list[str] = []
        ttl = int(renewed.ttl) or increment or entry.ttl
        expire = now + ttl
        if entry.max_expire_at and expire > entry.max_expire_at:
            expire = entry.max_expire_at
            warnings.append("TTL of the renewed lease is capped by its max TTL")
        entry.expire_at = expire
        entry.last_renewal = now
        entry.renewable = renewed.renewable
        entry.internal = dict(renewed.internal)
        await self._barrier.put(f"lease/id/{entry.lease_id}", entry.to_json())
        self.schedule("lease", entry.lease_id, entry.expire_at)
        self._indexed(entry)
        return entry, warnings

    async def revoke(self, lease_id: str, *, force: bool = False) -> bool:
        """Ask the backend to revoke, then forget the lease; False if it did not exist.

        ``force`` forgets the lease even when the backend fails (``revoke-force``: for a
        backend that will never succeed, at the price of maybe leaving the secret valid).
        """
        entry = await self._load(lease_id)
        if entry is None:
            return False
        mounted = self._router.by_uuid(entry.mount_uuid)
        if mounted is not None:
            try:
                await mounted.backend.revoke(entry.lease(self._clock()))
            except Exception as exc:
                if not force:
                    raise
                log.warning(
                    "revoke-force: backend failed to revoke %s (%s); forgotten anyway",
                    lease_id,
                    type(exc).__name__,
                )
        deletes = [f"lease/id/{lease_id}"]
        if entry.token_id:
            deletes.append(_token_index(entry.token_id, lease_id))
        await self._barrier.put_many({}, deletes)
        self.unschedule("lease", lease_id)
        self._index.pop(lease_id, None)
        return True

    async def revoke_prefix(self, prefix: str, *, force: bool = False) -> int:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        count = 0
        for key in await self._barrier.keys(f"lease/id/{prefix}"):
            if await self.revoke(key[len("lease/id/") :], force=force):
                count += 1
        return count

    async def move_prefix(self, source: str, target: str) -> int:
        """Give the leases under ``source`` ids under ``target`` (a remount): each lease is
        rewritten under its new id with its token index in one commit, so a crash midway
        leaves every lease under exactly one id (its backend is found by mount UUID, which
        a move keeps), and the rest move on the next remount of the same path."""
        moved = 0
        for key in await self._barrier.keys(f"lease/id/{source}"):
            old_id = key[len("lease/id/") :]
            entry = await self._load(old_id)
            if entry is None:
                continue
            entry.lease_id = target + old_id[len(source) :]
            if entry.path.startswith(source):
                entry.path = target + entry.path[len(source) :]
            writes = {f"lease/id/{entry.lease_id}": entry.to_json()}
            deletes = [key]
            if entry.token_id:
                writes[_token_index(entry.token_id, entry.lease_id)] = entry.lease_id.encode()
                deletes.append(_token_index(entry.token_id, old_id))
            await self._barrier.put_many(writes, deletes)
            self.unschedule("lease", old_id)
            self.schedule("lease", entry.lease_id, entry.expire_at)
            self._index.pop(old_id, None)
            self._indexed(entry)
            moved += 1
        return moved

    async def revoke_token(self, token: TokenEntry) -> None:
        prefix = f"lease/token/{token.id}/"
        for key in await self._barrier.keys(prefix):
            raw = await self._barrier.get(key)
            if raw is None or not await self.revoke(raw.decode()):
                await self._barrier.delete(key)  # stale index entry
        self.unschedule("token", token.id)

    async def list(self, prefix: str) -> list[str]:
        return await self._barrier.list(f"lease/id/{prefix}")
