"""``sys/leases/*`` (and the legacy ``sys/renew``, ``sys/revoke``, ``sys/revoke-prefix``).

The lease id may come in the body (``lease_id``) or, on the legacy paths, in the URL.
Revoking an unknown lease is not an error (idempotent, as in Vault).
"""

from __future__ import annotations

from socle.secrets.backend import Operation, Response, SecretsError
from socle.secrets.core.context import CoreRequest, CoreResponse, CoreRoute
from socle.secrets.core.fields import parse_duration, parse_str
from socle.secrets.core.services import Services

R, U, L = Operation.READ, Operation.UPDATE, Operation.LIST
REST = r"(?P<rest>.+)"


def _lease_id(request: CoreRequest, params: dict[str, str]) -> str:
    lease_id = parse_str(request.data.get("lease_id"), "lease_id") or params.get("rest", "")
    if not lease_id:
        raise SecretsError(400, "missing lease_id")
    return lease_id


async def _revoke_tokens_under(s: Services, prefix: str) -> None:
    """Tokens are leases of the path that made them in Vault: ``revoke-prefix
    auth/approle/login`` revokes every AppRole login (with its children)."""
    if not prefix.startswith("auth/"):
        return
    folder = prefix.rstrip("/") + "/"
    for entry in await s.tokens.all_entries():
        if (entry.path.rstrip("/") + "/").startswith(folder):
            await s.tokens.revoke_tree(entry)


def routes(s: Services) -> list[CoreRoute]:
    async def lookup(request: CoreRequest, params: dict[str, str]) -> Response:
        entry = await s.leases.lookup(_lease_id(request, params))
        return Response(data=entry.lookup_data(s.clock()))

    async def list_prefix(request: CoreRequest, params: dict[str, str]) -> Response:
        keys = await s.leases.list(params.get("rest", ""))
        if not keys:
            raise SecretsError(404)
        return Response(data={"keys": keys})

    async def renew(request: CoreRequest, params: dict[str, str]) -> Response:
        lease_id = _lease_id(request, params)
        increment = parse_duration(request.data.get("increment"), "increment")
        entry, warnings = await s.leases.renew(lease_id, increment)
        return CoreResponse(
            warnings=warnings,
            status=200,
            envelope={
                "lease_id": entry.lease_id,
                "renewable": entry.renewable,
                "lease_duration": max(0, round(entry.expire_at - s.clock())),
            },
        )

    async def revoke(request: CoreRequest, params: dict[str, str]) -> Response:
        await s.leases.revoke(_lease_id(request, params))
        return Response()

    async def revoke_prefix(request: CoreRequest, params: dict[str, str]) -> Response:
        prefix = params.get("rest", "")
        await s.leases.revoke_prefix(prefix)
        await _revoke_tokens_under(s, prefix)
        return Response()

    async def revoke_force(request: CoreRequest, params: dict[str, str]) -> Response:
        await s.leases.revoke_prefix(params.get("rest", ""), force=True)
        return Response()

    return [
        CoreRoute("leases/lookup", {U: lookup}),
        CoreRoute("leases/lookup/?", {L: list_prefix}),
        CoreRoute(f"leases/lookup/{REST}", {L: list_prefix}),
        CoreRoute(f"(?:leases/)?renew(?:/{REST})?", {U: renew}),
        CoreRoute(f"(?:leases/)?revoke-prefix/{REST}", {U: revoke_prefix}),
        CoreRoute(f"(?:leases/)?revoke-force/{REST}", {U: revoke_force}),
        CoreRoute(f"(?:leases/)?revoke(?:/{REST})?", {U: revoke}),
    ]
