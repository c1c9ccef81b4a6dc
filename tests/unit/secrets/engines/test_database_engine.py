"""Database engine without a database: templates, names, config/roles, leases.

The engine is exercised through a recording plugin, a small real implementation of our
own ``DbPlugin`` interface; the PostgreSQL plugin itself is tested against a real server in
``tests/integration/secrets/engines``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest

from socle.secrets.backend import Lease, Operation, Request, TokenInfo
from socle.secrets.engines._db_templates import (
    TemplateError,
    expiration_text,
    generate_password,
    generate_username,
    redact_url,
    render,
    render_connection_url,
)
from socle.secrets.engines._db_types import ConnectionConfig, DatabaseError
from socle.secrets.engines.database import DatabaseBackend
from tests.unit.secrets.engines.enginekit import FakeClock, call, exists, fails, mount
from tests.unit.secrets.engines.memstorage import MemStorage

VALUES = {
    "name": "v-app-abc",
    "username": "v-app-abc",
    "password": "Pw-123",
    "expiration": "2030-01-01 00:00:00+0000",
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
            "CREATE ROLE \"v-app-abc\" WITH LOGIN PASSWORD 'Pw-123' VALID UNTIL '2030-01-01 00:00:00+0000';",
        ),
        (
            "CREATE ROLE {{name}} PASSWORD {{password}}",
            "CREATE ROLE \"v-app-abc\" PASSWORD 'Pw-123'",
        ),
        (
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{ name }};",
            'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "v-app-abc";',
        ),
        ("SELECT 'it''s {{name}}'", "SELECT 'it''s v-app-abc'"),
        ("-- {{password}} in a comment\nSELECT 1", "--  in a comment\nSELECT 1"),
        ("/* {{password}} */ SELECT 1", "/*  */ SELECT 1"),
        (
            "DO $$ BEGIN EXECUTE 'GRANT x TO \"{{name}}\"'; END $$;",
            "DO $$ BEGIN EXECUTE 'GRANT x TO \"v-app-abc\"'; END $$;",
        ),
        (
            "DO $body$ SELECT '{{name}}' $body$; SELECT {{name}}",
            "DO $body$ SELECT 'v-app-abc' $body$; SELECT \"v-app-abc\"",
        ),
        ("SELECT $1, '{{name}}'", "SELECT $1, 'v-app-abc'"),
        ("{{unknown}} stays", "{{unknown}} stays"),
    ],
)
def test_render_contexts(template: str, expected: str) -> None:
    assert render(template, VALUES) == expected


@pytest.mark.parametrize(
    ("value", "template", "expected"),
    [
        (
            'evil"; DROP TABLE t; --',
            'CREATE ROLE "{{name}}"',
            'CREATE ROLE "evil""; DROP TABLE t; --"',
        ),
        ("x'; DROP TABLE t; --", "PASSWORD '{{name}}'", "PASSWORD 'x''; DROP TABLE t; --'"),
        ("a\"b'c", "ALTER ROLE {{name}}", 'ALTER ROLE "a""b\'c"'),
        ("o'brien", "ALTER ROLE x PASSWORD {{password}}", "ALTER ROLE x PASSWORD 'o''brien'"),
        (
            "back\\slash",
            "ALTER ROLE x PASSWORD {{password}}",
            "ALTER ROLE x PASSWORD E'back\\\\slash'",
        ),
    ],
)
def test_render_escapes_hostile_values(value: str, template: str, expected: str) -> None:
    values = {**VALUES, "name": value, "password": value}
    assert render(template, values) == expected


@pytest.mark.parametrize(
    ("value", "template"),
    [
        ("x$$; DROP TABLE t; $$", "DO $$ BEGIN PERFORM '{{name}}'; END $$"),
        ("back\\'slash", "PASSWORD '{{password}}'"),
        ("nul\x00", 'CREATE ROLE "{{name}}"'),
    ],
)
def test_render_refuses_what_cannot_be_escaped(value: str, template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, {**VALUES, "name": value, "password": value})


def test_render_needs_the_value() -> None:
    with pytest.raises(TemplateError, match="password"):
        render("ALTER ROLE {{name}} PASSWORD '{{password}}'", {"name": "x"})


def test_generated_usernames_are_safe_and_bounded() -> None:
    for role, display in [
        ("readonly", "token"),
        ("R\u00f4le'; DROP--", 'a"b c'),
        ("x" * 200, "y" * 200),
    ]:
        name = generate_username(role, display, 1_700_000_000)
        assert re.fullmatch(r"[a-z0-9_-]{1,63}", name), name
        assert name.startswith("v-")
    assert generate_username("r", "", 1) != generate_username("r", "", 1)


def test_generated_passwords() -> None:
    seen = {generate_password() for _ in range(50)}
    assert len(seen) == 50
    for password in seen:
        assert re.fullmatch(r"[A-Za-z0-9-]{20}", password)  # Vault's default policy
        assert password.count("-") == 1
        assert any(c.isupper() for c in password) and any(c.isdigit() for c in password)


def test_expiration_format() -> None:
    assert expiration_text(0) == "1970-01-01 00:00:00+0000"


def test_connection_url_rendering_and_redaction() -> None:
    url = "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres"
    assert (
        render_connection_url(url, "root@x", "p@ss:/w")
        == "postgresql://root%40x:p%40ss%3A%2Fw@127.0.0.1:5432/postgres"
    )
    dsn = "host=127.0.0.1 user={{username}} password={{password}}"
    assert render_connection_url(dsn, "r", "it's") == "host=127.0.0.1 user='r' password='it\\'s'"
    assert redact_url("postgresql://root:hunter2@h/db") == "postgresql://root:*****@h/db"
    assert redact_url(url) == url


class RecordingPlugin:
    """Keeps users in a dict and records every call: our interface, no database."""

    def __init__(self) -> None:
        self.users: dict[str, str] = {}
        self.calls: list[tuple[str, Any]] = []
        self.fail_verify = False

    async def verify(self, config: ConnectionConfig) -> None:
        self.calls.append(("verify", config.connection_url))
        if self.fail_verify:
            raise DatabaseError("connection refused")

    async def create_user(
        self,
        config: ConnectionConfig,
        statements: Sequence[str],
        username: str,
        password: str,
        expiration: str,
    ) -> None:
        for statement in statements:
            render(statement, {"name": username, "password": password, "expiration": expiration})
        self.users[username] = expiration
        self.calls.append(("create", username))

    async def renew_user(
        self, config: ConnectionConfig, statements: Sequence[str], username: str, expiration: str
    ) -> None:
        self.users[username] = expiration
        self.calls.append(("renew", expiration))

    async def revoke_user(
        self, config: ConnectionConfig, statements: Sequence[str], username: str
    ) -> None:
        self.users.pop(username, None)
        self.calls.append(("revoke", list(statements)))

    async def rotate_root(
        self, config: ConnectionConfig, statements: Sequence[str], new_password: str
    ) -> None:
        self.calls.append(("rotate", config.password))


PG_URL = "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres"
CREATE = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
]


@pytest.fixture
def plugin() -> RecordingPlugin:
    return RecordingPlugin()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def db(plugin: RecordingPlugin, clock: FakeClock) -> DatabaseBackend:
    backend = DatabaseBackend(
        MemStorage(),
        mount("database/", "database"),
        clock=clock,
        plugins={"postgresql-database-plugin": lambda: plugin},
    )
    await call(
        backend,
        "create",
        "config/pg",
        {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": PG_URL,
            "username": "root",
            "password": "RootPw",
            "allowed_roles": "app,ops-*",
        },
    )
    await call(
        backend,
        "create",
        "roles/app",
        {"db_name": "pg", "creation_statements": CREATE, "default_ttl": "1h", "max_ttl": "2h"},
    )
    return backend


async def test_config_read_never_returns_password(db: DatabaseBackend) -> None:
    read = await call(db, "read", "config/pg")
    assert read.data is not None
    assert read.data["connection_details"] == {"connection_url": PG_URL, "username": "root"}
    assert read.data["allowed_roles"] == ["app", "ops-*"]
    assert "RootPw" not in repr(read.data)
    assert (await call(db, "list", "config")).data == {"keys": ["pg"]}
    stored = db._storage.items["config/pg"]  # type: ignore[attr-defined]
    assert b"RootPw" in stored  # kept for the plugin, behind the core's barrier


async def test_config_verification_and_validation(
    db: DatabaseBackend, plugin: RecordingPlugin
) -> None:
    plugin.fail_verify = True
    error = await fails(db, "update", "config/pg", {"connection_url": PG_URL})
    assert (
        error.status == 400 and "error verifying connection: connection refused" in error.errors[0]
    )
    await call(db, "update", "config/pg", {"verify_connection": False})
    plugin.fail_verify = False
    assert (
        await fails(
            db,
            "create",
            "config/x",
            {"plugin_name": "mysql-database-plugin", "connection_url": "x"},
        )
    ).status == 400
    assert (await fails(db, "create", "config/x", {"connection_url": "x"})).errors == [
        "empty plugin name"
    ]
    assert (
        await fails(db, "create", "config/x", {"plugin_name": "postgresql-database-plugin"})
    ).status == 400
    literal = await call(
        db,
        "create",
        "config/lit",
        {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://u:secret@h/db",
            "bogus": 1,
        },
    )
    assert literal.warnings[0].startswith("Password found in connection_url")
    assert "bogus" in literal.warnings[1]
    assert "secret" not in repr((await call(db, "read", "config/lit")).data)


async def test_creds_lease_has_no_password(
    db: DatabaseBackend, plugin: RecordingPlugin, clock: FakeClock
) -> None:
    request = Request(
        Operation.READ,
        "creds/app",
        "database/",
        token=TokenInfo(accessor="a", policies=("default",), display_name="approle"),
    )
    response = await db.handle(request)
    assert response.data is not None and response.lease is not None
    username, password = response.data["username"], response.data["password"]
    assert re.fullmatch(r"v-approle-app-[a-z0-9]{20}-\d+", username)
    assert (
        response.lease.ttl == 3600 and response.lease.max_ttl == 7200 and response.lease.renewable
    )
    assert response.lease.internal["username"] == username
    assert password not in repr(response.lease.internal)
    assert plugin.users[username] == expiration_text(clock.now_ns / 1e9 + 3600)


async def test_allowed_roles_and_unknown_role(db: DatabaseBackend) -> None:
    await call(db, "create", "roles/other", {"db_name": "pg", "creation_statements": CREATE})
    assert (await fails(db, "read", "creds/other")).errors == ["other is not an allowed role"]
    await call(db, "create", "roles/ops-1", {"db_name": "pg", "creation_statements": CREATE})
    assert (await call(db, "read", "creds/ops-1")).data is not None
    assert (await fails(db, "read", "creds/nope")).errors == ["unknown role: nope"]


async def test_renew_within_max_ttl_and_revoke(
    db: DatabaseBackend, plugin: RecordingPlugin, clock: FakeClock
) -> None:
    response = await call(db, "read", "creds/app")
    lease = response.lease
    assert lease is not None
    clock.advance(3000)
    renewed = await db.renew(lease, 3600)
    assert renewed.ttl == 3600
    clock.advance(3000)
    clamped = await db.renew(renewed, 3600)
    assert clamped.ttl == pytest.approx(7200 - 6000)
    clock.advance(1300)
    with pytest.raises(Exception, match="maximum TTL"):
        await db.renew(clamped, 60)
    await db.revoke(lease)
    assert plugin.users == {}
    assert plugin.calls[-1] == ("revoke", [])


async def test_revoke_uses_role_statements(db: DatabaseBackend, plugin: RecordingPlugin) -> None:
    await call(
        db, "update", "roles/app", {"revocation_statements": 'DROP ROLE IF EXISTS "{{name}}";'}
    )
    lease = (await call(db, "read", "creds/app")).lease
    assert lease is not None
    await db.revoke(lease)
    assert plugin.calls[-1] == ("revoke", ['DROP ROLE IF EXISTS "{{name}}";'])
    with pytest.raises(Exception, match="missing"):
        await db.revoke(Lease(ttl=1, internal={}))


async def test_roles_crud_and_validation(db: DatabaseBackend) -> None:
    assert await exists(db, "roles/app") and not await exists(db, "roles/zzz")
    read = await call(db, "read", "roles/app")
    assert read.data is not None
    assert read.data["default_ttl"] == 3600 and read.data["max_ttl"] == 7200
    assert read.data["creation_statements"] == CREATE
    assert (await call(db, "list", "roles")).data == {"keys": ["app"]}
    assert (await fails(db, "create", "roles/x", {"creation_statements": CREATE})).errors == [
        "empty database name attribute"
    ]
    assert (await fails(db, "create", "roles/x", {"db_name": "pg"})).errors == [
        "empty creation statements"
    ]
    error = await fails(
        db,
        "create",
        "roles/x",
        {"db_name": "pg", "creation_statements": CREATE, "default_ttl": "3h", "max_ttl": "1h"},
    )
    assert error.errors == ["ttl cannot be greater than max_ttl"]
    bad_template = await fails(
        db,
        "create",
        "roles/x",
        {"db_name": "pg", "creation_statements": ["SELECT 1\x00; DROP"]},
    )
    assert bad_template.status == 400
    await call(db, "delete", "roles/app")
    assert (await fails(db, "read", "roles/app")).status == 404


@pytest.mark.parametrize(
    "path",
    [
        "roles/x'; DROP TABLE pg_roles;--",
        'creds/"; DROP',
        "config/a b",
        "roles/",
        "static-roles/x",
        "creds/../config/pg",
    ],
)
async def test_hostile_names_are_unsupported_paths(db: DatabaseBackend, path: str) -> None:
    error = await fails(db, "read", path)
    assert error.status in (404, 405)


@pytest.mark.parametrize(
    "body",
    [
        {"db_name": "pg", "creation_statements": [{"sql": 1}]},
        {"db_name": ["pg"], "creation_statements": CREATE},
        {"db_name": "pg", "creation_statements": CREATE, "default_ttl": "eternity"},
        {"db_name": "pg", "creation_statements": CREATE, "max_ttl": -5},
    ],
)
async def test_hostile_role_bodies(db: DatabaseBackend, body: dict[str, object]) -> None:
    assert (await fails(db, "create", "roles/x", body)).status == 400


async def test_rotate_root(db: DatabaseBackend, plugin: RecordingPlugin) -> None:
    await call(db, "update", "rotate-root/pg", {})
    assert plugin.calls[-1] == ("rotate", "RootPw")
    stored = db._storage.items["config/pg"]  # type: ignore[attr-defined]
    assert b"RootPw" not in stored
    await call(db, "update", "rotate-root/pg", {})
    assert plugin.calls[-1][1] != "RootPw"
    assert (await fails(db, "update", "rotate-root/none", {})).status == 400
