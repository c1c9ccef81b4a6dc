"""``sys/remount`` (``secrets move``, ``auth move``) and ``sys/remount/status/<id>``.

Vault runs a move as a background migration and reports it by id. In Socle a move rewrites
one mount table row and the mount's lease ids (no data is copied: storage is keyed by the
mount's UUID), so it is done when the request returns; the migration record, kept in memory
like Vault's, already says ``success`` for the CLI's status poll.
"""

from __future__ import annotations

import uuid

from socle.secrets.backend import Operation, Response, SecretsError
from socle.secrets.core.context import CoreRequest, CoreRoute
from socle.secrets.core.services import Services

R, U = Operation.READ, Operation.UPDATE
_LIMIT = 1000


def routes(s: Services) -> list[CoreRoute]:
    migrations: dict[str, dict[str, str]] = {}

    async def remount(request: CoreRequest, _: dict[str, str]) -> Response:
        source, target = request.data.get("from"), request.data.get("to")
        if not isinstance(source, str) or not isinstance(target, str) or not source or not target:
            raise SecretsError(400, "both 'from' and 'to' path must be specified as a string")
        old, new = await s.mounts.remount(source, target)
        migration_id = str(uuid.uuid4())
        if len(migrations) >= _LIMIT:
            migrations.pop(next(iter(migrations)))
        migrations[migration_id] = {
            "source_mount": old.path,
            "target_mount": new.path,
            "status": "success",
        }
        return Response(
            data={"migration_id": migration_id},
            warnings=[
                "Mount move has completed. Its status stays readable at "
                "sys/remount/status/ with the returned migration_id"
            ],
        )

    async def status(request: CoreRequest, params: dict[str, str]) -> Response:
        info = migrations.get(params["id"])
        if info is None:
            return Response(status=404)
        return Response(data={"migration_id": params["id"], "migration_info": dict(info)})

    return [
        CoreRoute("remount", {U: remount}),
        CoreRoute("remount/status/(?P<id>[^/]+)", {R: status}),
    ]
