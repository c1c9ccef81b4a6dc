"""Response wrapping: a response handed over as a single-use token instead of in clear.

A request with ``X-Vault-Wrap-TTL`` (the CLI's ``-wrap-ttl``) gets back only ``wrap_info``:
a new orphan token whose sole policy is ``response-wrapping``, with one use and the asked
TTL. The real response is kept in *that token's* cubbyhole, so it lives behind the barrier,
is readable by nobody else (not even root: cubbyholes are per token) and disappears with the
token: on unwrap (the one use), on revocation, or when the TTL runs out and the expiry
manager revokes it. ``sys/wrapping/unwrap`` then answers the stored response once; every
later attempt, like one with an expired token, gets Vault's 400 "wrapping token is not
valid or does not exist".

Storage: one cubbyhole entry, ``response``, holding both the wrapped response and the
wrapping facts (creation path, time and TTL, wrapped accessor), written in one put after
the token exists: a crash in between leaves a token with nothing to unwrap, which answers
"not valid" like a used one, never a response reachable without a token.

Single use is enforced on the event loop: a token given in the body is claimed (its use
count set to "used up" in the cached entry) after the last ``await`` of its lookup and
before anything is read, so two concurrent unwraps cannot both get the response; a token
given as the caller's own token is spent by the pipeline's use counting before the handler
runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from socle.secrets.backend import SecretsError
from socle.secrets.core.cubbyhole import Cubbyhole
from socle.secrets.core.fields import rfc3339
from socle.secrets.core.tokens import TokenEntry, TokenParams, TokenStore

WRAPPING_POLICY = "response-wrapping"
INVALID = "wrapping token is not valid or does not exist"
_KEY = "response"


def is_wrapping(entry: TokenEntry | None) -> bool:
    """A wrapping token is recognised by its policy list, as in Vault."""
    return entry is not None and entry.policies == [WRAPPING_POLICY]


def wrapped_envelope(wrap_info: dict[str, Any]) -> dict[str, Any]:
    """The whole body of a wrapped answer: nothing but ``wrap_info`` (and an empty
    ``request_id``, as OpenBao sends)."""
    return {
        "request_id": "",
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": None,
        "wrap_info": wrap_info,
        "warnings": None,
        "auth": None,
    }


class Wrapping:
    def __init__(
        self, tokens: TokenStore, cubbyhole: Cubbyhole, clock: Callable[[], float]
    ) -> None:
        self._tokens = tokens
        self._cubbyhole = cubbyhole
        self._clock = clock

    async def wrap(
        self,
        response: dict[str, Any],
        ttl: int,
        creation_path: str,
        *,
        wrapped_accessor: str = "",
    ) -> dict[str, Any]:
        """Store ``response`` (a full response body) under a new wrapping token; returns
        the ``wrap_info`` object."""
        params = TokenParams(
            policies=[WRAPPING_POLICY],
            display_name="response-wrapping",
            num_uses=1,
            ttl=ttl,
            max_ttl=ttl,
            explicit_max_ttl=ttl,
            renewable=False,
            no_default_policy=True,
            path=creation_path,
        )
        token, entry, _ = await self._tokens.create(params, None)
        now = entry.creation_time
        ttl = entry.creation_ttl  # what the token store granted (capped at the system max)
        info = {
            "creation_path": creation_path,
            "creation_time": rfc3339(now),
            "creation_ttl": ttl,
            "wrapped_accessor": wrapped_accessor,
        }
        record = {"response": {k: v for k, v in response.items() if k != "request_id"}}
        record["info"] = info
        await self._cubbyhole.put_for(entry.accessor, _KEY, json.dumps(record).encode())
        wrap_info: dict[str, Any] = {
            "token": token,
            "accessor": entry.accessor,
            "ttl": ttl,
            "creation_time": info["creation_time"],
            "creation_path": creation_path,
        }
        if wrapped_accessor:
            wrap_info["wrapped_accessor"] = wrapped_accessor
        return wrap_info

    async def _entry(self, token: str) -> TokenEntry:
        entry = await self._tokens.lookup(token) if token else None
        if entry is None or not is_wrapping(entry):
            raise SecretsError(400, INVALID)
        return entry

    async def _record(self, entry: TokenEntry) -> dict[str, Any]:
        raw = await self._cubbyhole.get_for(entry.accessor, _KEY)
        if raw is None:
            raise SecretsError(400, INVALID)
        record: dict[str, Any] = json.loads(raw)
        return record

    async def lookup(self, token: str) -> dict[str, Any]:
        """``sys/wrapping/lookup``: the wrapping facts, without spending the token."""
        if not token:
            raise SecretsError(403, "error validating wrapping token: token is empty")
        info = (await self._record(await self._entry(token)))["info"]
        return {
            "creation_path": info["creation_path"],
            "creation_time": info["creation_time"],
            "creation_ttl": info["creation_ttl"],
        }

    async def unwrap(self, token: str) -> dict[str, Any]:
        """Claim, read and revoke a wrapping token given by another caller."""
        entry = await self._entry(token)
        entry.num_uses = -1  # claimed: no await since the lookup saw it valid
        try:
            return dict((await self._record(entry))["response"])
        finally:
            await self._tokens.revoke_tree(entry)

    async def unwrap_spent(self, entry: TokenEntry | None) -> dict[str, Any]:
        """The response of the caller's own wrapping token, already spent by the
        pipeline's use counting (which revokes it after the request)."""
        if entry is None or not is_wrapping(entry):
            raise SecretsError(400, INVALID)
        return dict((await self._record(entry))["response"])

    async def rewrap(self, token: str) -> dict[str, Any]:
        """A new wrapping token for the same response, same path and TTL. The old one is
        claimed first (so only one of them can ever unwrap) and revoked once the new one
        holds the response: a crash in between leaves the response under a token, never
        under none."""
        entry = await self._entry(token)
        entry.num_uses = -1
        try:
            record = await self._record(entry)
            info = record["info"]
            return await self.wrap(
                record["response"],
                int(info["creation_ttl"]),
                str(info["creation_path"]),
                wrapped_accessor=str(info.get("wrapped_accessor") or ""),
            )
        finally:
            await self._tokens.revoke_tree(entry)


__all__ = ["INVALID", "WRAPPING_POLICY", "Wrapping", "is_wrapping", "wrapped_envelope"]
