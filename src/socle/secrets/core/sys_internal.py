"""``sys/internal/ui/mounts/PATH``: what the ``vault``/``bao`` CLI asks before every ``kv``
command, to learn which mount serves PATH and whether it is KV version 1 or 2.

Vault serves it without requiring the path in the caller's policies (no policy grants
``sys/internal/...``), but only to a caller whose policies reach into that mount; anyone
else gets the same 403 whether the mount exists or not, so mount names do not leak.
"""

from __future__ import annotations

from socle.secrets.backend import Operation, Response, SecretsError
from socle.secrets.core.context import CoreRequest, CoreRoute
from socle.secrets.core.errors import PermissionDenied
from socle.secrets.core.services import Services


def routes(s: Services) -> list[CoreRoute]:
    async def mount_of(request: CoreRequest, params: dict[str, str]) -> Response:
        path = params["path"].strip("/") + "/"
        denied = SecretsError(
            403,
            "preflight capability check returned 403, please ensure client's policies "
            f'grant access to path "{path}"',
        )
        caller = request.caller
        if caller is None:  # no token, or a bad one
            raise PermissionDenied()
        match = s.router.match(path)
        if match is None:
            raise denied
        entry = match[0].entry
        if not caller.acl.reaches_under(entry.path):
            raise denied
        described = entry.describe()
        described["path"] = (
            entry.path.removeprefix("auth/") if entry.table == "auth" else entry.path
        )
        return Response(data=described)

    return [CoreRoute(r"internal/ui/mounts/(?P<path>.+)", {Operation.READ: mount_of})]
