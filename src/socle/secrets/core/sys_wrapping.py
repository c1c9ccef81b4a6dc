"""``sys/wrapping/wrap|unwrap|lookup|rewrap``: the endpoints of response wrapping.

Vault's rules: ``wrap`` and ``rewrap``'s caller needs ``update``; ``wrap`` answers only when
the request itself asks for wrapping (400 "endpoint requires response wrapping to be
used"); ``lookup`` needs no token at all (the wrapping token is the credential: body,
query or header); ``unwrap`` takes the wrapping token in the body, or uses the caller's own
token when that is a wrapping token (``bao unwrap`` with ``VAULT_TOKEN`` set to it).
"""

from __future__ import annotations

from socle.secrets.backend import Operation, Response, SecretsError
from socle.secrets.core.context import CoreRequest, CoreRoute, EnvelopeResponse
from socle.secrets.core.fields import parse_str
from socle.secrets.core.services import Services
from socle.secrets.core.wrapping import wrapped_envelope

R, U = Operation.READ, Operation.UPDATE


def _token(request: CoreRequest) -> str:
    return parse_str(request.data.get("token"), "token").strip()


def routes(s: Services) -> list[CoreRoute]:
    async def wrap(request: CoreRequest, _: dict[str, str]) -> Response:
        if not request.wrap_ttl:
            raise SecretsError(400, "endpoint requires response wrapping to be used")
        return Response(data=dict(request.data))

    async def lookup(request: CoreRequest, _: dict[str, str]) -> Response:
        return Response(data=await s.wrapping.lookup(_token(request) or request.token))

    async def unwrap(request: CoreRequest, _: dict[str, str]) -> Response:
        token = _token(request)
        caller = request.caller
        own = caller is not None and (not token or token == caller.token)
        if own:
            assert caller is not None
            stored = await s.wrapping.unwrap_spent(caller.entry)
        else:
            stored = await s.wrapping.unwrap(token)
        return EnvelopeResponse(status=200, body=stored)

    async def rewrap(request: CoreRequest, _: dict[str, str]) -> Response:
        wrap_info = await s.wrapping.rewrap(_token(request) or request.token)
        return EnvelopeResponse(status=200, body=wrapped_envelope(wrap_info))

    return [
        CoreRoute("wrapping/wrap", {U: wrap}),
        CoreRoute("wrapping/lookup", {R: lookup, U: lookup}),
        CoreRoute("wrapping/unwrap", {U: unwrap}),
        CoreRoute("wrapping/rewrap", {U: rewrap}),
    ]
