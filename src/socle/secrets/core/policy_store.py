"""Where ACL policies live (behind the barrier), and the ACL cache in front of them.

``root`` is built in and cannot be written or deleted. ``default`` is written at
initialisation, can be edited (as in Vault) but not deleted, and is attached to every token
unless it was created with ``no_default_policy``. Names are lower-cased, as in Vault.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from socle.secrets.backend import SecretsError
from socle.secrets.core.barrier import Barrier, StorageView
from socle.secrets.core.policy import ACL, Policy, PolicyError, parse_policy, valid_name

DEFAULT_POLICY = """\
# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up and renew leases it was given (the lease id is the secret)
path "sys/leases/lookup" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}
path "sys/renew" {
    capabilities = ["update"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}
"""

ROOT = "root"
DEFAULT = "default"
WRAPPING = "response-wrapping"
_ROOT_POLICY = Policy(ROOT, "", ())
_WRAPPING_POLICY = parse_policy(
    WRAPPING, 'path "sys/wrapping/unwrap" {\n    capabilities = ["update"]\n}\n'
)
"""Built in, like root: a wrapping token may only unwrap itself (its response is read by
the core, never through ``cubbyhole/``)."""


class PolicyStore:
    def __init__(self, barrier: Barrier) -> None:
        self._storage = StorageView(barrier, "policy/")
        self._policies: dict[str, Policy | None] = {}
        self._acls: dict[frozenset[str], ACL] = {}
        self._lock = asyncio.Lock()
        self._generation = 0

    @staticmethod
    def normalise(name: str) -> str:
        name = name.strip().lower()
        if not valid_name(name):
            raise SecretsError(
                400, f"invalid policy name {name!r}: use letters, digits, '-', '_', '.', '@'"
            )
        return name

    async def setup(self) -> None:
        """First initialisation: write the default policy."""
        if await self._storage.get(DEFAULT) is None:
            await self.put(DEFAULT, DEFAULT_POLICY)

    async def get(self, name: str) -> Policy | None:
        if name == ROOT:
            return _ROOT_POLICY
        if name == WRAPPING:
            return _WRAPPING_POLICY
        if name in self._policies:
            return self._policies[name]
        generation = self._generation
        raw = await self._storage.get_json(name)
        policy = None if raw is None else parse_policy(name, str(raw["policy"]))
        if generation == self._generation:
            self._policies[name] = policy
        return policy

    async def put(self, name: str, text: str) -> Policy:
        name = self.normalise(name)
        if name in (ROOT, WRAPPING):
            raise SecretsError(400, f"cannot update the {name} policy")
        try:
            policy = parse_policy(name, text)
        except PolicyError as exc:
            raise SecretsError(400, str(exc)) from None
        async with self._lock:
            await self._storage.put_json(name, {"name": name, "policy": text})
            self._policies[name] = policy
            self._invalidate()
        return policy

    async def delete(self, name: str) -> None:
        name = self.normalise(name)
        if name == ROOT:  # Vault words the two refusals differently
            raise SecretsError(400, 'cannot delete "root" policy')
        if name == DEFAULT:
            raise SecretsError(400, "cannot delete default policy")
        if name == WRAPPING:
            raise SecretsError(400, f'cannot delete "{WRAPPING}" policy')
        async with self._lock:
            await self._storage.delete(name)
            self._policies[name] = None
            self._invalidate()

    def _invalidate(self) -> None:
        self._generation += 1
        self._acls.clear()

    async def names(self) -> list[str]:
        stored = [n for n in await self._storage.list("") if not n.endswith("/")]
        return [*sorted(set(stored) | {DEFAULT}), ROOT]

    async def acl(self, names: Iterable[str]) -> ACL:
        key = frozenset(names)
        acl = self._acls.get(key)
        if acl is None:
            generation = self._generation
            policies = [p for p in [await self.get(n) for n in sorted(key)] if p is not None]
            acl = ACL(policies)
            if generation == self._generation:  # no policy changed while we were loading
                self._acls[key] = acl
        return acl
