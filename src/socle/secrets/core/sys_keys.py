"""``sys/rotate`` and ``sys/rotate/keyring`` (new barrier key term, sudo) and
``sys/key-status``."""

from __future__ import annotations

from socle.secrets.backend import Operation, Response
from socle.secrets.core.context import CoreRequest, CoreRoute
from socle.secrets.core.fields import rfc3339
from socle.secrets.core.services import Services

R, U = Operation.READ, Operation.UPDATE


def routes(s: Services) -> list[CoreRoute]:
    async def rotate(request: CoreRequest, _: dict[str, str]) -> Response:
        await s.barrier.rotate()
        return Response()

    async def key_status(request: CoreRequest, _: dict[str, str]) -> Response:
        status = s.barrier.key_status()
        return Response(
            data={
                "term": status.term,
                "install_time": rfc3339(status.install_time),
                "encryptions": status.encryptions,
            }
        )

    return [
        CoreRoute("rotate", {U: rotate}),
        CoreRoute("rotate/keyring", {U: rotate}),  # what ``operator rotate`` calls
        CoreRoute("key-status", {R: key_status}),
    ]
