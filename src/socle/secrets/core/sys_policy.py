"""``sys/policy`` (the old API), ``sys/policies/acl`` and ``sys/capabilities*``.

Shapes as in Vault: ``GET sys/policy`` lists under both ``keys`` and ``policies``;
``sys/policy/<name>`` reads as ``name`` + ``rules`` and writes from ``policy`` (or
``rules``); ``sys/policies/acl/<name>`` reads as ``name`` + ``policy``.
"""

from __future__ import annotations

from socle.secrets.backend import Operation, Response, SecretsError
from socle.secrets.core.context import CoreRequest, CoreRoute
from socle.secrets.core.errors import PermissionDenied, multierror
from socle.secrets.core.fields import parse_str, parse_str_list
from socle.secrets.core.policy import ACL, cap_names
from socle.secrets.core.services import Services

R, U, D, L = Operation.READ, Operation.UPDATE, Operation.DELETE, Operation.LIST
NAME = r"(?P<name>[^/]+)"


def routes(s: Services) -> list[CoreRoute]:
    async def list_old(request: CoreRequest, _: dict[str, str]) -> Response:
        names = await s.policies.names()
        return Response(data={"keys": names, "policies": names})

    async def list_acl(request: CoreRequest, _: dict[str, str]) -> Response:
        return Response(data={"keys": await s.policies.names()})

    async def read(request: CoreRequest, params: dict[str, str], field: str) -> Response:
        name = s.policies.normalise(params["name"])
        policy = await s.policies.get(name)
        if policy is None:
            raise SecretsError(404)
        return Response(data={"name": name, field: policy.raw})

    async def read_old(request: CoreRequest, params: dict[str, str]) -> Response:
        return await read(request, params, "rules")

    async def read_acl(request: CoreRequest, params: dict[str, str]) -> Response:
        return await read(request, params, "policy")

    async def write(request: CoreRequest, params: dict[str, str]) -> Response:
        text = parse_str(request.data.get("policy"), "policy") or parse_str(
            request.data.get("rules"), "rules"
        )
        if not text.strip():
            raise SecretsError(400, "'policy' parameter not supplied or empty")
        policy = await s.policies.put(params["name"], text)
        return Response(warnings=list(policy.warnings))

    async def delete(request: CoreRequest, params: dict[str, str]) -> Response:
        await s.policies.delete(params["name"])
        return Response()

    def _paths(request: CoreRequest) -> list[str]:
        paths = parse_str_list(request.data.get("paths"), "paths") or parse_str_list(
            request.data.get("path"), "path"
        )
        if not paths:
            raise SecretsError(400, "missing paths")
        return paths

    def _answer(acl: ACL, paths: list[str]) -> Response:
        data: dict[str, object] = {}
        for path in paths:
            # Vault answers "root" for a root token, and names capabilities sorted.
            data[path] = (
                ["root"] if acl.root else sorted(cap_names(acl.capabilities(path.lstrip("/"))))
            )
        if len(paths) == 1:
            data["capabilities"] = data[paths[0]]
        return Response(data=data)

    async def caps_self(request: CoreRequest, _: dict[str, str]) -> Response:
        if request.caller is None:
            raise PermissionDenied()
        return _answer(request.caller.acl, _paths(request))

    async def caps_token(request: CoreRequest, _: dict[str, str]) -> Response:
        token = parse_str(request.data.get("token"), "token")
        entry = await s.tokens.lookup(token) if token else None
        if entry is None:
            raise SecretsError(400, "invalid token")
        return _answer(await s.policies.acl(entry.policies), _paths(request))

    async def caps_accessor(request: CoreRequest, _: dict[str, str]) -> Response:
        entry = await s.tokens.by_accessor(parse_str(request.data.get("accessor"), "accessor"))
        if entry is None:
            raise SecretsError(400, multierror("invalid accessor"))
        return _answer(await s.policies.acl(entry.policies), _paths(request))

    return [
        CoreRoute("policy/?", {R: list_old, L: list_old}),
        CoreRoute(f"policy/{NAME}", {R: read_old, U: write, D: delete}),
        CoreRoute("policies/acl/?", {L: list_acl, R: list_acl}),
        CoreRoute(f"policies/acl/{NAME}", {R: read_acl, U: write, D: delete}),
        CoreRoute("capabilities-self", {U: caps_self}),
        CoreRoute("capabilities", {U: caps_token}),
        CoreRoute("capabilities-accessor", {U: caps_accessor}),
    ]
