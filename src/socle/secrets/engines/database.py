"""Database: dynamic credentials, one real database role per lease.

    config (LIST), config/<name>    a connection: plugin_name, connection_url (a template
                                    with {{username}}/{{password}}), username, password,
                                    allowed_roles, verify_connection; the password is never
                                    returned
    rotate-root/<name>              new root password, known only to Socle afterwards
    reset/<name>                    accepted for compatibility (connections are not pooled)
    roles (LIST), roles/<name>      db_name, creation/revocation/renew statements, TTLs
    creds/<role>                    a new user and password, with a lease

The lease's internal data names the connection, the role and the user, never the password.
When the core's lease manager revokes or renews the lease it calls :meth:`revoke` /
:meth:`renew`, which run the role's statements (or the plugin's safe defaults). Connection
settings, including the root password, live only in the mount's (encrypted) storage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from socle.secrets.backend import (
    Backend,
    Lease,
    MountInfo,
    Request,
    Response,
    SecretsError,
    Storage,
)
from socle.secrets.engines._db_templates import (
    TemplateError,
    expiration_text,
    generate_password,
    generate_username,
    redact_url,
    render,
)
from socle.secrets.engines._db_types import ConnectionConfig, DatabaseError, DbPlugin, DbRole
from socle.secrets.engines._framework import (
    NAME,
    SYSTEM_TTL,
    Clock,
    KeyLocks,
    Params,
    Route,
    RoutedBackend,
    Router,
    get_json,
    handlers,
    list_response,
    put_json,
    system_clock,
)
from socle.secrets.engines._params import get_bool, get_duration, get_str, get_str_list

LITERAL_CREDENTIALS_WARNING = (
    "Password found in connection_url, use a templated url to enable root rotation and "
    "prevent read access to password information."
)
DETAIL_FIELDS = (
    "max_open_connections",
    "max_idle_connections",
    "max_connection_lifetime",
    "username_template",
    "password_authentication",
)
CONFIG_FIELDS = frozenset(
    {
        "plugin_name",
        "plugin_version",
        "connection_url",
        "username",
        "password",
        "allowed_roles",
        "verify_connection",
        "root_rotation_statements",
        "password_policy",
        *DETAIL_FIELDS,
    }
)
SAMPLE_VALUES = {
    "name": "v-sample",
    "username": "v-sample",
    "password": "Sample-Password1",
    "expiration": "2000-01-01 00:00:00+0000",
}


def _postgres() -> DbPlugin:
    from socle.secrets.engines.database_postgres import PostgresPlugin

    return PostgresPlugin()


PLUGINS: dict[str, Callable[[], DbPlugin]] = {"postgresql-database-plugin": _postgres}
"""Plugin name → constructor; imported lazily so unused drivers are never loaded."""


class DatabaseBackend(RoutedBackend):
    """One mounted database engine."""

    def __init__(
        self,
        storage: Storage,
        mount: MountInfo,
        clock: Clock = system_clock,
        plugins: dict[str, Callable[[], DbPlugin]] | None = None,
    ) -> None:
        self._storage = storage
        self._mount = mount
        self._clock = clock
        self._plugin_factories = plugins if plugins is not None else PLUGINS
        self._plugins: dict[str, DbPlugin] = {}
        self._locks = KeyLocks()
        self._router = Router(
            [
                Route(r"config/?", handlers(list_=self._config_list)),
                Route(
                    f"config/(?P<name>{NAME})",
                    handlers(
                        read=self._config_read, write=self._config_write, delete=self._config_delete
                    ),
                    exists=self._config_exists,
                ),
                Route(f"reset/(?P<name>{NAME})", handlers(write=self._reset)),
                Route(f"rotate-root/(?P<name>{NAME})", handlers(write=self._rotate_root)),
                Route(r"roles/?", handlers(list_=self._roles_list)),
                Route(
                    f"roles/(?P<name>{NAME})",
                    handlers(
                        read=self._role_read, write=self._role_write, delete=self._role_delete
                    ),
                    exists=self._role_exists,
                ),
                Route(f"creds/(?P<name>{NAME})", handlers(read=self._creds)),
            ]
        )

    # -- Backend protocol -------------------------------------------------------------

    async def revoke(self, lease: Lease) -> None:
        """Drop the database user behind a lease (the role's statements or the default)."""
        db_name, username, role_name = _lease_target(lease)
        config = await self._config(db_name)
        if config is None:
            raise SecretsError(
                500, f"cannot revoke {username}: connection {db_name} no longer exists"
            )
        role = await self._role(role_name)
        statements = role.revocation_statements if role is not None else []
        try:
            await self._plugin(config).revoke_user(config, statements, username)
        except DatabaseError as exc:
            raise SecretsError(500, f"failed to revoke {username}: {exc}") from None

    async def renew(self, lease: Lease, increment: float | None) -> Lease:
        """Extend the user's validity, never past the role's (or mount's) max TTL."""
        db_name, username, role_name = _lease_target(lease)
        role = await self._role(role_name)
        if role is None:
            raise SecretsError(
                400, f"error during renew: could not find role with name {role_name}"
            )
        config = await self._config(db_name)
        if config is None:
            raise SecretsError(500, f"connection {db_name} no longer exists")
        default_ttl, max_ttl = self._ttls(role)
        now = self._now()
        issued_at = float(lease.internal.get("issued_at", now))
        remaining = issued_at + max_ttl - now
        if remaining <= 0:
            raise SecretsError(400, "lease has reached its maximum TTL and cannot be renewed")
        ttl = min(increment if increment and increment > 0 else default_ttl, remaining)
        try:
            await self._plugin(config).renew_user(
                config, role.renew_statements, username, expiration_text(now + ttl)
            )
        except DatabaseError as exc:
            raise SecretsError(500, f"failed to renew {username}: {exc}") from None
        return Lease(ttl=ttl, renewable=True, max_ttl=max_ttl, internal=dict(lease.internal))

    # -- helpers ----------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock() / 1e9

    def _plugin(self, config: ConnectionConfig) -> DbPlugin:
        plugin = self._plugins.get(config.plugin_name)
        if plugin is None:
            factory = self._plugin_factories.get(config.plugin_name)
            if factory is None:
                raise SecretsError(400, f'unsupported database plugin "{config.plugin_name[:64]}"')
            plugin = self._plugins[config.plugin_name] = factory()
        return plugin

    def _ttls(self, role: DbRole) -> tuple[float, float]:
        mount_max = self._mount.max_lease_ttl or SYSTEM_TTL
        maximum = min(role.max_ttl or mount_max, mount_max)
        default = role.default_ttl or self._mount.default_lease_ttl or SYSTEM_TTL
        return min(default, maximum), maximum

    async def _config(self, name: str) -> ConnectionConfig | None:
        raw = await get_json(self._storage, "config/" + name)
        return ConnectionConfig.from_json(raw) if raw is not None else None

    async def _role(self, name: str) -> DbRole | None:
        raw = await get_json(self._storage, "role/" + name)
        return DbRole.from_json(raw) if raw is not None else None

    async def _config_exists(self, request: Request, params: Params) -> bool:
        return await self._storage.get("config/" + params["name"]) is not None

    async def _role_exists(self, request: Request, params: Params) -> bool:
        return await self._storage.get("role/" + params["name"]) is not None

    # -- connections ------------------------------------------------------------------

    async def _config_list(self, request: Request, params: Params) -> Response:
        return list_response(await self._storage.list("config/"))

    async def _config_read(self, request: Request, params: Params) -> Response:
        config = await self._config(params["name"])
        if config is None:
            raise SecretsError(404)
        details: dict[str, Any] = {"connection_url": redact_url(config.connection_url)}
        if config.username:
            details["username"] = config.username
        details.update(config.details)
        return Response(
            data={
                "plugin_name": config.plugin_name,
                "plugin_version": "",
                "connection_details": details,
                "allowed_roles": config.allowed_roles,
                "root_credentials_rotate_statements": config.root_rotation_statements,
                "password_policy": "",
            }
        )

    async def _config_write(self, request: Request, params: Params) -> Response:
        name = params["name"]
        data = request.data
        async with self._locks.hold("config/" + name):
            existing = await self._config(name)
            config = _merge_config(existing, data)
            self._plugin(config)  # unknown plugin names are refused before anything is stored
            if config.verify_connection:
                try:
                    await self._plugin(config).verify(config)
                except DatabaseError as exc:
                    raise SecretsError(
                        400, f"error creating database object: error verifying connection: {exc}"
                    ) from None
            await put_json(self._storage, "config/" + name, config.to_json())
        warnings = (
            [LITERAL_CREDENTIALS_WARNING]
            if redact_url(config.connection_url) != config.connection_url
            else []
        )
        ignored = sorted(set(data) - CONFIG_FIELDS)
        if ignored:
            warnings.append(f"Endpoint ignored these unrecognized parameters: {ignored}")
        return Response(warnings=warnings, status=200 if warnings else None)

    async def _config_delete(self, request: Request, params: Params) -> Response:
        await self._storage.delete("config/" + params["name"])
        return Response()

    async def _reset(self, request: Request, params: Params) -> Response:
        if await self._config(params["name"]) is None:
            raise SecretsError(400, f"unable to reset: no connection named {params['name']}")
        return Response()

    async def _rotate_root(self, request: Request, params: Params) -> Response:
        name = params["name"]
        async with self._locks.hold("config/" + name):
            config = await self._config(name)
            if config is None:
                raise SecretsError(400, f"no connection named {name}")
            if not config.username or not config.password:
                raise SecretsError(
                    400,
                    "unable to rotate root credentials: no username or password in configuration",
                )
            new_password = generate_password()
            # Remember the new password before the database learns it: if we stop midway,
            # the operator can still find it (in encrypted storage) instead of losing access.
            config.pending_password = new_password
            await put_json(self._storage, "config/" + name, config.to_json())
            try:
                await self._plugin(config).rotate_root(
                    config, config.root_rotation_statements, new_password
                )
            except DatabaseError as exc:
                config.pending_password = ""
                await put_json(self._storage, "config/" + name, config.to_json())
                raise SecretsError(500, f"failed to rotate root credentials: {exc}") from None
            config.password, config.pending_password = new_password, ""
            await put_json(self._storage, "config/" + name, config.to_json())
        return Response()

    # -- roles ------------------------------------------------------------------------

    async def _roles_list(self, request: Request, params: Params) -> Response:
        return list_response(await self._storage.list("role/"))

    async def _role_read(self, request: Request, params: Params) -> Response:
        role = await self._role(params["name"])
        if role is None:
            raise SecretsError(404)
        return Response(data=role.describe())

    async def _role_write(self, request: Request, params: Params) -> Response:
        role = _merge_role(await self._role(params["name"]), request.data)
        await put_json(self._storage, "role/" + params["name"], role.to_json())
        return Response()

    async def _role_delete(self, request: Request, params: Params) -> Response:
        await self._storage.delete("role/" + params["name"])
        return Response()

    # -- credentials ------------------------------------------------------------------

    async def _creds(self, request: Request, params: Params) -> Response:
        name = params["name"]
        role = await self._role(name)
        if role is None:
            raise SecretsError(400, f"unknown role: {name}")
        config = await self._config(role.db_name)
        if config is None:
            raise SecretsError(400, f"could not retrieve db with name: {role.db_name}")
        if not config.allows(name):
            raise SecretsError(400, f"{name} is not an allowed role")
        ttl, max_ttl = self._ttls(role)
        now = self._now()
        display = request.token.display_name if request.token is not None else ""
        username = generate_username(name, display, now)
        password = generate_password()
        try:
            await self._plugin(config).create_user(
                config, role.creation_statements, username, password, expiration_text(now + ttl)
            )
        except DatabaseError as exc:
            raise SecretsError(500, f"failed to create user: {exc}") from None
        lease = Lease(
            ttl=ttl,
            renewable=True,
            max_ttl=max_ttl,
            internal={
                "db_name": role.db_name,
                "username": username,
                "role": name,
                "issued_at": now,
            },
        )
        return Response(data={"username": username, "password": password}, lease=lease)


def _lease_target(lease: Lease) -> tuple[str, str, str]:
    internal = lease.internal
    try:
        return str(internal["db_name"]), str(internal["username"]), str(internal["role"])
    except KeyError:
        raise SecretsError(500, "lease is missing its database, user or role") from None


def _merge_config(existing: ConnectionConfig | None, data: dict[str, Any]) -> ConnectionConfig:
    base = existing or ConnectionConfig(plugin_name="", connection_url="")
    plugin_name = get_str(data, "plugin_name", base.plugin_name)
    if not plugin_name:
        raise SecretsError(400, "empty plugin name")
    connection_url = get_str(data, "connection_url", base.connection_url)
    if not connection_url:
        raise SecretsError(400, "connection_url is required")
    details = dict(base.details)
    for name in DETAIL_FIELDS:
        if name in data:
            details[name] = get_str(data, name)
    statements = get_str_list(data, "root_rotation_statements", comma=False)
    for statement in statements or []:
        _check_template(statement, "root_rotation_statements")
    return ConnectionConfig(
        plugin_name=plugin_name,
        connection_url=connection_url,
        username=get_str(data, "username", base.username),
        password=get_str(data, "password", base.password),
        allowed_roles=get_str_list(data, "allowed_roles")
        or ([] if "allowed_roles" in data else base.allowed_roles),
        verify_connection=get_bool(data, "verify_connection", True),
        root_rotation_statements=statements
        if statements is not None
        else base.root_rotation_statements,
        details=details,
    )


def _merge_role(existing: DbRole | None, data: dict[str, Any]) -> DbRole:
    base = existing or DbRole(db_name="", creation_statements=[])
    db_name = get_str(data, "db_name", base.db_name)
    if not db_name:
        raise SecretsError(400, "empty database name attribute")

    def statements(field: str, current: list[str]) -> list[str]:
        given = get_str_list(data, field, comma=False)
        # Trimmed, empty ones dropped, as Vault stores them (a file read with @ ends in \n).
        chosen = [s.strip() for s in given if s.strip()] if given is not None else current
        for statement in chosen:
            _check_template(statement, field)
        return chosen

    role = DbRole(
        db_name=db_name,
        creation_statements=statements("creation_statements", base.creation_statements),
        revocation_statements=statements("revocation_statements", base.revocation_statements),
        rollback_statements=statements("rollback_statements", base.rollback_statements),
        renew_statements=statements("renew_statements", base.renew_statements),
        default_ttl=get_duration(data, "default_ttl", base.default_ttl),
        max_ttl=get_duration(data, "max_ttl", base.max_ttl),
    )
    if not role.creation_statements:
        raise SecretsError(400, "empty creation statements")
    if role.max_ttl and role.default_ttl > role.max_ttl:
        raise SecretsError(400, "ttl cannot be greater than max_ttl")
    return role


def _check_template(statement: str, field: str) -> None:
    """Refuse a statement that could not be rendered safely, at write time, not at use."""
    if "\x00" in statement:
        raise SecretsError(400, f"invalid {field}: statements cannot contain NUL")
    try:
        render(statement, SAMPLE_VALUES)
    except TemplateError as exc:
        raise SecretsError(400, f"invalid {field}: {exc}") from None


async def database_factory(storage: Storage, mount: MountInfo) -> Backend:
    """Registry entry: build the engine for a new or restored mount."""
    return DatabaseBackend(storage, mount)
