"""``sys/mounts`` and ``sys/auth``: list, enable, read, tune, disable.

Listings are keyed by mount path (``"secret/": {...}``; auth paths without ``auth/``) in
Vault's shape, which the core also mirrors at the top level of the response for ``sys/``.
Disabling revokes the mount's leases, then deletes its storage.
"""

from __future__ import annotations

from typing import Any

from socle.secrets.backend import Operation, Response, SecretsError
from socle.secrets.core.context import CoreRequest, CoreRoute
from socle.secrets.core.fields import (
    SYSTEM_MAX_TTL,
    check_mount_ttls,
    parse_bool,
    parse_duration,
    parse_str,
    parse_str_map,
)
from socle.secrets.core.mounts import normalise_mount_path
from socle.secrets.core.router import DEFAULT_TOKEN_TYPE, MountEntry
from socle.secrets.core.services import Services

R, U, D = Operation.READ, Operation.UPDATE, Operation.DELETE
PATH = r"(?P<path>.+?)"


def _config(data: dict[str, Any]) -> dict[str, Any]:
    raw = data.get("config") or {}
    if not isinstance(raw, dict):
        raise SecretsError(400, "config must be an object")
    return raw


def _ttl(value: Any, field: str) -> int:
    """Mount TTLs also accept ``"system"`` (meaning 0: the system default)."""
    if value in ("system", None, ""):
        return 0
    return parse_duration(value, field)


def _tune_view(entry: MountEntry) -> dict[str, Any]:
    view: dict[str, Any] = {
        "default_lease_ttl": entry.default_lease_ttl or SYSTEM_MAX_TTL,
        "max_lease_ttl": entry.max_lease_ttl or SYSTEM_MAX_TTL,
        "force_no_cache": False,
        "description": entry.description,
    }
    if entry.options:
        view["options"] = dict(entry.options)
    if entry.listing_visibility:
        view["listing_visibility"] = entry.listing_visibility
    if entry.table == "auth":
        view["token_type"] = DEFAULT_TOKEN_TYPE
    return view


def _visibility(value: Any) -> str:
    visibility = parse_str(value, "listing_visibility")
    if visibility not in ("", "hidden", "unauth"):
        raise SecretsError(400, f"invalid listing_visibility {visibility}")
    return "" if visibility == "hidden" else visibility


def routes(s: Services) -> list[CoreRoute]:
    def listing(table: str) -> dict[str, Any]:
        cut = len("auth/") if table == "auth" else 0
        return {e.path[cut:]: e.describe() for e in s.mounts.entries(table)}

    def find(
        table: str, path: str, missing: str = "No secret engine mount at {path}"
    ) -> MountEntry:
        """The mount at ``path``; ``missing`` is Vault's wording for the endpoint asking."""
        full = normalise_mount_path(path)
        if table == "auth":
            full = "auth/" + full
        elif full.startswith("auth/"):
            table = "auth"  # the CLI tunes auth methods at sys/mounts/auth/PATH/tune
        entry = s.mounts.find(table, full)
        if entry is None:
            raise SecretsError(400, missing.format(path=full))
        return entry

    async def enable(request: CoreRequest, params: dict[str, str], table: str) -> Response:
        data = request.data
        type_ = parse_str(data.get("type"), "type")
        if not type_:
            raise SecretsError(400, "missing type")
        config = _config(data)
        options = parse_str_map(data.get("options"), "options")
        await s.mounts.mount(
            table,
            params["path"],
            type_,
            description=parse_str(data.get("description"), "description"),
            options=options,
            default_lease_ttl=_ttl(config.get("default_lease_ttl"), "default_lease_ttl"),
            max_lease_ttl=_ttl(config.get("max_lease_ttl"), "max_lease_ttl"),
            local=parse_bool(data.get("local"), "local"),
            seal_wrap=parse_bool(data.get("seal_wrap"), "seal_wrap"),
            listing_visibility=_visibility(config.get("listing_visibility")),
        )
        return Response()

    async def disable(request: CoreRequest, params: dict[str, str], table: str) -> Response:
        await s.mounts.unmount(table, params["path"])
        return Response()

    async def read_one(request: CoreRequest, params: dict[str, str], table: str) -> Response:
        return Response(data=find(table, params["path"]).describe())

    async def tune_read(request: CoreRequest, params: dict[str, str], table: str) -> Response:
        return Response(
            data=_tune_view(find(table, params["path"], 'cannot fetch sysview for path "{path}"'))
        )

    async def tune_write(request: CoreRequest, params: dict[str, str], table: str) -> Response:
        entry = find(table, params["path"], 'tune of path "{path}" failed: no mount entry found')
        data = request.data
        changes: dict[str, Any] = {}
        if data.get("description") is not None:
            changes["description"] = parse_str(data["description"], "description")
        for key in ("default_lease_ttl", "max_lease_ttl"):
            if data.get(key) not in (None, ""):  # the CLI sends "" for "unchanged"
                changes[key] = _ttl(data[key], key)
        check_mount_ttls(
            changes.get("default_lease_ttl", entry.default_lease_ttl),
            changes.get("max_lease_ttl", entry.max_lease_ttl),
            tuning=True,
        )
        if data.get("listing_visibility") not in (None, ""):
            changes["listing_visibility"] = _visibility(data["listing_visibility"])
        if data.get("options") is not None:
            options = {**entry.options, **parse_str_map(data["options"], "options")}
            if (
                entry.type == "kv"
                and entry.options.get("version", "1") == "2"
                and options.get("version") == "1"
            ):
                raise SecretsError(400, "cannot downgrade a KV mount from version 2 to 1")
            changes["options"] = options
        if changes:
            await s.mounts.tune(entry, changes)
        return Response()

    def bind(handler: Any, table: str) -> Any:
        async def bound(request: CoreRequest, params: dict[str, str]) -> Response:
            result: Response = await handler(request, params, table)
            return result

        return bound

    async def list_mounts(request: CoreRequest, _: dict[str, str]) -> Response:
        return Response(data=listing("mounts"))

    async def list_auth(request: CoreRequest, _: dict[str, str]) -> Response:
        return Response(data=listing("auth"))

    out = [
        CoreRoute("mounts/?", {R: list_mounts}),
        CoreRoute("auth/?", {R: list_auth}),
    ]
    for table, prefix in (("mounts", "mounts"), ("auth", "auth")):
        out += [
            CoreRoute(
                f"{prefix}/{PATH}/tune/?",
                {R: bind(tune_read, table), U: bind(tune_write, table)},
            ),
            CoreRoute(
                f"{prefix}/{PATH}/?",
                {R: bind(read_one, table), U: bind(enable, table), D: bind(disable, table)},
            ),
        ]
    return out
