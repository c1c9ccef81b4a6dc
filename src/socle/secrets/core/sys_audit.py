"""``sys/audit`` (list, enable, disable) and ``sys/audit-hash/<device>``."""

from __future__ import annotations

from socle.secrets.backend import Operation, Response, SecretsError
from socle.secrets.core.context import CoreRequest, CoreRoute
from socle.secrets.core.fields import parse_bool, parse_str, parse_str_map
from socle.secrets.core.services import Services

R, U, D = Operation.READ, Operation.UPDATE, Operation.DELETE
PATH = r"(?P<path>.+?)/?"


def _device_path(raw: str) -> str:
    path = raw.strip("/")
    if not path:
        raise SecretsError(400, "missing audit device path")
    return path + "/"


def routes(s: Services) -> list[CoreRoute]:
    async def listing(request: CoreRequest, _: dict[str, str]) -> Response:
        return Response(data={p: d.config.describe() for p, d in sorted(s.audit.devices.items())})

    async def enable(request: CoreRequest, params: dict[str, str]) -> Response:
        data = request.data
        type_ = parse_str(data.get("type"), "type")
        if not type_:
            raise SecretsError(400, "missing type")
        await s.audit.enable(
            _device_path(params["path"]),
            type_,
            parse_str(data.get("description"), "description"),
            parse_str_map(data.get("options"), "options"),
            parse_bool(data.get("local"), "local"),
        )
        return Response()

    async def disable(request: CoreRequest, params: dict[str, str]) -> Response:
        await s.audit.disable(_device_path(params["path"]))
        return Response()

    async def audit_hash(request: CoreRequest, params: dict[str, str]) -> Response:
        value = parse_str(request.data.get("input"), "input")
        return Response(data={"hash": s.audit.hash(_device_path(params["path"]), value)})

    return [
        CoreRoute("audit/?", {R: listing}),
        CoreRoute(f"audit/{PATH}", {U: enable, D: disable}),
        CoreRoute(f"audit-hash/{PATH}", {U: audit_hash}),
    ]
