"""``sys/``: the logical system endpoints, gathered from the ``sys_*`` modules.

The raw endpoints that must work while sealed (``sys/init``, ``sys/unseal``,
``sys/seal-status``, ``sys/health``) are not here: the HTTP layer answers them before the
sealed gate (see :mod:`socle.secrets.core.sys_seal`).

``sudo_paths`` are Vault's root-protected system paths: even with ``update`` on them a
token also needs ``sudo``.
"""

from __future__ import annotations

from socle.secrets.backend import Response
from socle.secrets.core import (
    sys_audit,
    sys_internal,
    sys_keys,
    sys_leases,
    sys_mounts,
    sys_policy,
    sys_remount,
    sys_wrapping,
)
from socle.secrets.core.context import CoreRequest, CoreRoute, dispatch
from socle.secrets.core.help import synopses
from socle.secrets.core.services import Services


class SystemBackend:
    # internal/ui/mounts: checked by the handler against the caller's policies (see
    # sys_internal); wrapping/lookup: the wrapping token is the credential.
    unauthenticated_paths = ("internal/ui/mounts/*", "wrapping/lookup")
    sudo_paths = (
        "audit",
        "audit/*",
        "auth/*",
        "rotate",
        "remount",
        "rotate/keyring",
        "leases/revoke-prefix/*",
        "leases/revoke-force/*",
        "revoke-prefix/*",
        "revoke-force/*",
        "leases/lookup/*",
        "seal",
    )

    def __init__(self, services: Services) -> None:
        routes: list[CoreRoute] = []
        for module in (
            sys_policy,
            sys_mounts,
            sys_leases,
            sys_audit,
            sys_keys,
            sys_internal,
            sys_remount,
            sys_wrapping,
        ):
            routes.extend(module.routes(services))
        self._routes = routes

    async def handle_core(self, request: CoreRequest) -> Response:
        return await dispatch(self._routes, request)

    def help_routes(self) -> list[tuple[str, str]]:
        return synopses((route.pattern, route.handlers) for route in self._routes)
