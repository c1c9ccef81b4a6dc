"""``auth/token/``: the token store's HTTP endpoints, with Vault's rules for child tokens.

* a child's policies must be a subset of its parent's (``default`` is always allowed), and
  only a root token can create a root token;
* ``no_parent`` on ``create`` (an orphan) and ``period`` need root or ``sudo``;
  ``create-orphan`` needs only its own ``update``;
* a token with a use limit cannot create children;
* ``revoke`` removes the token and all its descendants; ``revoke-orphan`` (sudo) only the
  token, its children become orphans;
* ``create/NAME`` creates through a token role (``roles/NAME``, see
  :mod:`~socle.secrets.core.token_roles`), which may grant orphan and period without sudo;
* ``type=batch`` makes a batch token (see :mod:`~socle.secrets.core.tokens`): a batch token
  cannot create tokens, be renewed or be revoked on its own.
"""

from __future__ import annotations

from socle.secrets.backend import Operation, Response, SecretsError
from socle.secrets.core.context import CoreRequest, CoreRoute, dispatch
from socle.secrets.core.errors import PermissionDenied, multierror
from socle.secrets.core.fields import (
    clamp_ttl,
    parse_bool,
    parse_duration,
    parse_int,
    parse_str,
    parse_str_list,
    parse_str_map,
)
from socle.secrets.core.help import synopses
from socle.secrets.core.services import Services
from socle.secrets.core.token_roles import TokenRole, TokenRoles, apply_role
from socle.secrets.core.tokens import TokenEntry, TokenParams

R, U, D, L = Operation.READ, Operation.UPDATE, Operation.DELETE, Operation.LIST


NON_ASSIGNABLE = ("response-wrapping", "control-group")
"""Policies Socle gives its own tokens only (Vault's ``nonAssignablePolicies``)."""


def _check_assignable(policies: list[str], parent: TokenEntry) -> None:
    """Vault's last guards on a new token's policies, whatever allowed them.

    A role's ``allowed_policies`` (``root``, or a glob such as ``*``) lifts the "subset of
    the parent's policies" rule: without this check a token holding only ``update`` on
    ``auth/token/create/ROLE`` could mint a root token, orphan if the role says so.
    """
    names = {p.strip().lower() for p in policies}
    if "root" in names and not parent.is_root:
        raise SecretsError(400, "root tokens may not be created without parent token being root")
    for name in NON_ASSIGNABLE:
        if name in names:
            raise SecretsError(400, f'cannot assign policy "{name}"')


class TokenBackend:
    sudo_paths = ("revoke-orphan", "accessors", "accessors/")

    def __init__(self, services: Services) -> None:
        self._s = services
        self._roles = TokenRoles(services.barrier)
        self._routes = [
            CoreRoute("create-orphan", {U: self._create_orphan}),
            CoreRoute("create", {U: self._create}),
            CoreRoute("create/(?P<role>[^/]+)", {U: self._create_with_role}),
            CoreRoute("roles/?", {L: self._list_roles}),
            CoreRoute(
                "roles/(?P<name>[^/]+)",
                {R: self._read_role, U: self._write_role, D: self._delete_role},
            ),
            CoreRoute("lookup-self", {R: self._lookup_self, U: self._lookup_self}),
            CoreRoute("lookup-accessor", {U: self._lookup_accessor}),
            CoreRoute("lookup", {R: self._lookup, U: self._lookup}),
            CoreRoute("renew-self", {U: self._renew_self}),
            CoreRoute("renew-accessor", {U: self._renew_accessor}),
            CoreRoute("renew", {U: self._renew}),
            CoreRoute("revoke-self", {U: self._revoke_self}),
            CoreRoute("revoke-accessor", {U: self._revoke_accessor}),
            CoreRoute("revoke-orphan", {U: self._revoke_orphan}),
            CoreRoute("revoke", {U: self._revoke}),
            CoreRoute("accessors/?", {L: self._accessors}),
        ]

    async def handle_core(self, request: CoreRequest) -> Response:
        return await dispatch(self._routes, request)

    def help_routes(self) -> list[tuple[str, str]]:
        return synopses((route.pattern, route.handlers) for route in self._routes)

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _me(request: CoreRequest) -> TokenEntry:
        if request.caller is None or request.caller.entry is None:
            raise PermissionDenied()
        return request.caller.entry

    async def _by_token(
        self, request: CoreRequest, unknown: SecretsError | None = None
    ) -> tuple[str, TokenEntry]:
        token = parse_str(request.data.get("token"), "token")
        if not token:
            raise SecretsError(400, "missing token")
        entry = await self._s.tokens.lookup(token)
        if entry is None:
            raise unknown or SecretsError(403, "bad token")
        return token, entry

    async def _by_accessor(self, request: CoreRequest) -> TokenEntry:
        accessor = parse_str(request.data.get("accessor"), "accessor")
        if not accessor:
            raise SecretsError(400, "missing accessor")
        entry = await self._s.tokens.by_accessor(accessor)
        if entry is None:
            raise SecretsError(400, multierror("invalid accessor"))
        return entry

    def _privileged(self, request: CoreRequest, path: str) -> bool:
        caller = request.caller
        return caller is not None and caller.acl.allows(path, U, request.data, sudo=True)

    # -- create -------------------------------------------------------------------------

    async def _create(self, request: CoreRequest, _: dict[str, str]) -> Response:
        return await self._create_token(request, orphan_path=False)

    async def _create_orphan(self, request: CoreRequest, _: dict[str, str]) -> Response:
        return await self._create_token(request, orphan_path=True)

    async def _create_with_role(self, request: CoreRequest, params: dict[str, str]) -> Response:
        role = await self._roles.get(params["role"])
        if role is None:
            raise SecretsError(400, f"unknown role {params['role']}")
        return await self._create_token(request, orphan_path=False, role=role)

    async def _create_token(
        self, request: CoreRequest, *, orphan_path: bool, role: TokenRole | None = None
    ) -> Response:
        parent = self._me(request)
        data = request.data
        privileged = parent.is_root or self._privileged(request, request.path)
        no_parent = parse_bool(data.get("no_parent"), "no_parent")
        if no_parent and not orphan_path and not privileged and role is None:
            raise SecretsError(400, "root or sudo privileges required to create orphan token")
        if parent.type == "batch":
            raise SecretsError(400, "batch tokens cannot create more tokens")
        if parent.num_uses != 0:
            raise SecretsError(400, "restricted use token cannot generate child tokens")
        token_type = parse_str(data.get("type"), "type").strip().lower()
        if token_type not in ("", "service", "batch", "default"):
            raise SecretsError(400, "invalid 'token_type' value")
        policies = parse_str_list(data.get("policies"), "policies")
        no_default = parse_bool(data.get("no_default_policy"), "no_default_policy")
        period = parse_duration(data.get("period"), "period")
        explicit_max_ttl = parse_duration(data.get("explicit_max_ttl"), "explicit_max_ttl")
        renewable = parse_bool(data.get("renewable"), "renewable", default=True)
        orphan = orphan_path or no_parent
        path = request.path
        parent_bound = True
        if role is not None:
            decision = apply_role(role, policies, token_type, no_default)
            policies, token_type, path = decision.policies, decision.token_type, decision.path
            parent_bound = decision.parent_bound
            orphan = role.orphan
            no_default = no_default or role.token_no_default_policy
            renewable = renewable and role.renewable
            explicit_max_ttl = clamp_ttl(explicit_max_ttl, role.explicit_max_ttl)
            if role.period:
                period = role.period
                privileged = True  # the role grants the period, not the caller
        if not policies and parent_bound:
            policies = [p for p in parent.policies if p != "default" or parent.is_root]
        if parent_bound and not parent.is_root:
            extra = sorted(set(policies) - set(parent.policies) - {"default"})
            if extra:
                raise SecretsError(400, "child policies must be subset of parent")
        _check_assignable(policies, parent)
        num_uses = parse_int(data.get("num_uses"), "num_uses")
        if num_uses < 0:
            raise SecretsError(400, "number of uses cannot be negative")
        if period and not privileged:
            raise SecretsError(400, "root or sudo privileges required to create periodic token")
        custom_id = parse_str(data.get("id"), "id")
        if custom_id and not parent.is_root:
            raise SecretsError(400, "root or sudo privileges required to specify token id")
        params = TokenParams(
            policies=policies,
            meta=parse_str_map(data.get("meta"), "meta"),
            display_name=parse_str(data.get("display_name"), "display_name"),
            num_uses=num_uses,
            ttl=parse_duration(data.get("ttl") or data.get("lease"), "ttl"),
            explicit_max_ttl=explicit_max_ttl,
            period=period,
            renewable=renewable,
            no_default_policy=no_default,
            path=path,
            token_id=custom_id,
            type="batch" if token_type == "batch" else "service",  # noqa: S105 - a type name
            role=role.name if role is not None else "",
        )
        token, entry, warnings = await self._s.tokens.create(params, None if orphan else parent)
        for name in entry.policies:
            if name not in ("root", "default") and await self._s.policies.get(name) is None:
                warnings.append(f'Policy "{name}" does not exist')
        return Response(auth=entry.auth_block(token, self._s.clock()), warnings=warnings)

    # -- lookup -------------------------------------------------------------------------

    async def _lookup_self(self, request: CoreRequest, _: dict[str, str]) -> Response:
        entry = self._me(request)
        assert request.caller is not None
        return Response(data=entry.lookup_data(request.caller.token, self._s.clock()))

    async def _lookup(self, request: CoreRequest, _: dict[str, str]) -> Response:
        token, entry = await self._by_token(request)
        return Response(data=entry.lookup_data(token, self._s.clock()))

    async def _lookup_accessor(self, request: CoreRequest, _: dict[str, str]) -> Response:
        entry = await self._by_accessor(request)
        return Response(data=entry.lookup_data("", self._s.clock()))

    # -- renew --------------------------------------------------------------------------

    async def _renewed(self, request: CoreRequest, token: str, entry: TokenEntry) -> Response:
        increment = parse_duration(request.data.get("increment"), "increment")
        entry, warnings = await self._s.tokens.renew(entry, increment)
        return Response(auth=entry.auth_block(token, self._s.clock()), warnings=warnings)

    async def _renew_self(self, request: CoreRequest, _: dict[str, str]) -> Response:
        entry = self._me(request)
        assert request.caller is not None
        return await self._renewed(request, request.caller.token, entry)

    async def _renew(self, request: CoreRequest, _: dict[str, str]) -> Response:
        token, entry = await self._by_token(request, SecretsError(400, "token not found"))
        return await self._renewed(request, token, entry)

    async def _renew_accessor(self, request: CoreRequest, _: dict[str, str]) -> Response:
        return await self._renewed(request, "", await self._by_accessor(request))

    # -- revoke -------------------------------------------------------------------------

    @staticmethod
    def _revocable(entry: TokenEntry) -> TokenEntry:
        if entry.type == "batch":
            raise SecretsError(400, "batch tokens cannot be revoked")
        return entry

    async def _revoke_self(self, request: CoreRequest, _: dict[str, str]) -> Response:
        await self._s.tokens.revoke_tree(self._revocable(self._me(request)))
        return Response()

    async def _revoke(self, request: CoreRequest, _: dict[str, str]) -> Response:
        token = parse_str(request.data.get("token"), "token")
        if not token:
            raise SecretsError(400, "missing token")
        entry = await self._s.tokens.lookup(token)
        if entry is not None:
            await self._s.tokens.revoke_tree(self._revocable(entry))
        return Response()

    async def _revoke_accessor(self, request: CoreRequest, _: dict[str, str]) -> Response:
        accessor = parse_str(request.data.get("accessor"), "accessor")
        if not accessor:
            raise SecretsError(400, "missing accessor")
        entry = await self._s.tokens.by_accessor(accessor)
        if entry is not None:  # revoking what is gone succeeds, as in Vault
            await self._s.tokens.revoke_tree(entry)
        return Response()

    async def _revoke_orphan(self, request: CoreRequest, _: dict[str, str]) -> Response:
        _token, entry = await self._by_token(request)
        await self._s.tokens.revoke_orphan(self._revocable(entry))
        return Response()

    async def _accessors(self, request: CoreRequest, _: dict[str, str]) -> Response:
        return Response(data={"keys": await self._s.tokens.accessors()})

    # -- roles --------------------------------------------------------------------------

    async def _list_roles(self, request: CoreRequest, _: dict[str, str]) -> Response:
        names = await self._roles.names()
        return Response(data={"keys": names}) if names else Response(status=404)

    async def _read_role(self, request: CoreRequest, params: dict[str, str]) -> Response:
        role = await self._roles.get(params["name"])
        return Response(status=404) if role is None else Response(data=role.describe())

    async def _write_role(self, request: CoreRequest, params: dict[str, str]) -> Response:
        name = self._roles.check_name(params["name"])
        role = await self._roles.get(name) or TokenRole(name)
        role.update(request.data)
        await self._roles.put(role)
        return Response()

    async def _delete_role(self, request: CoreRequest, params: dict[str, str]) -> Response:
        await self._roles.delete(params["name"])
        return Response()
