"""The database engine and its PostgreSQL plugin against a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest

from socle.secrets.backend import SecretsError
from socle.secrets.engines.database import DatabaseBackend
from tests.integration.secrets.engines.conftest import PgServer
from tests.unit.secrets.engines.enginekit import call, fails, mount
from tests.unit.secrets.engines.memstorage import MemStorage

CREATE = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT pg_read_all_data TO "{{name}}";',
]


@pytest.fixture
async def db(postgres: PgServer) -> DatabaseBackend:
    backend = DatabaseBackend(MemStorage(), mount("database/", "database"))
    await call(
        backend,
        "create",
        "config/pg",
        {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": postgres.url_template,
            "username": postgres.root_user,
            "password": postgres.root_password,
            "allowed_roles": "*",
        },
    )
    await call(
        backend,
        "create",
        "roles/reader",
        {"db_name": "pg", "creation_statements": CREATE, "default_ttl": "1h", "max_ttl": "24h"},
    )
    return backend


def login(postgres: PgServer, username: str, password: str) -> psycopg.Connection:
    return postgres.connect(username, password)


async def test_verify_connection_refuses_bad_credentials(postgres: PgServer) -> None:
    backend = DatabaseBackend(MemStorage(), mount("database/", "database"))
    error = await fails(
        backend,
        "create",
        "config/bad",
        {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": postgres.url_template,
            "username": postgres.root_user,
            "password": "Wrong-Secret-Value",
        },
    )
    assert error.status == 400
    assert "error verifying connection" in error.errors[0]
    assert "Wrong-Secret-Value" not in error.errors[0]
    assert (await fails(backend, "read", "config/bad")).status == 404


async def test_creds_log_in_then_revoke_drops_role(db: DatabaseBackend, postgres: PgServer) -> None:
    response = await call(db, "read", "creds/reader")
    assert response.data is not None and response.lease is not None
    username, password = response.data["username"], response.data["password"]
    with login(postgres, username, password) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (username,)
        valid_until = conn.execute(
            "SELECT rolvaliduntil FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert valid_until is not None and valid_until[0] is not None
        await db.revoke(response.lease)
        # The open session was terminated by the revocation.
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert not postgres.role_exists(username)
    with pytest.raises(psycopg.OperationalError):
        login(postgres, username, password)
    await db.revoke(response.lease)  # revoking twice is harmless


async def test_revoke_reassigns_owned_objects(db: DatabaseBackend, postgres: PgServer) -> None:
    await call(
        db,
        "create",
        "roles/owner",
        {
            "db_name": "pg",
            "creation_statements": [CREATE[0], 'GRANT CREATE ON SCHEMA public TO "{{name}}";'],
        },
    )
    response = await call(db, "read", "creds/owner")
    assert response.data is not None and response.lease is not None
    username = response.data["username"]
    with login(postgres, username, response.data["password"]) as conn:
        conn.execute("CREATE TABLE owned_by_dynamic_user (id int)")
    await db.revoke(response.lease)
    assert not postgres.role_exists(username)
    with postgres.connect() as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'owned_by_dynamic_user'"
        ).fetchone()
        assert owner == (postgres.root_user,)
        conn.execute("DROP TABLE owned_by_dynamic_user")


async def test_renew_moves_valid_until(db: DatabaseBackend, postgres: PgServer) -> None:
    response = await call(db, "read", "creds/reader")
    assert response.lease is not None and response.data is not None
    username = response.data["username"]

    def valid_until() -> object:
        with postgres.connect() as conn:
            row = conn.execute(
                "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (username,)
            ).fetchone()
            assert row is not None
            return row[0]

    before = valid_until()
    renewed = await db.renew(response.lease, 7200)
    assert renewed.ttl == 7200
    assert valid_until() > before  # type: ignore[operator]
    await db.revoke(renewed)


async def test_expired_credentials_are_refused_by_postgres(
    db: DatabaseBackend, postgres: PgServer
) -> None:
    await call(
        db,
        "create",
        "roles/short",
        {"db_name": "pg", "creation_statements": CREATE, "default_ttl": "1s"},
    )
    response = await call(db, "read", "creds/short")
    assert response.data is not None and response.lease is not None and response.lease.ttl == 1
    await asyncio.sleep(2.1)
    with pytest.raises(psycopg.OperationalError):
        login(postgres, response.data["username"], response.data["password"])
    await db.revoke(response.lease)
    assert not postgres.role_exists(response.data["username"])


async def test_hostile_role_name_and_quoting(db: DatabaseBackend, postgres: PgServer) -> None:
    """A role name with dots, unquoted templates and custom revocation all stay well-formed."""
    await call(
        db,
        "create",
        "roles/team.app-1",
        {
            "db_name": "pg",
            "creation_statements": [
                "CREATE ROLE {{name}} WITH LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"
            ],
            "revocation_statements": ['DROP ROLE IF EXISTS "{{name}}"'],
        },
    )
    response = await call(db, "read", "creds/team.app-1")
    assert response.data is not None and response.lease is not None
    username = response.data["username"]
    assert username.startswith("v-team_app-")
    with login(postgres, username, response.data["password"]):
        pass
    await db.revoke(response.lease)
    assert not postgres.role_exists(username)


async def test_failed_creation_rolls_back(db: DatabaseBackend, postgres: PgServer) -> None:
    await call(
        db,
        "create",
        "roles/broken",
        {
            "db_name": "pg",
            "creation_statements": [CREATE[0], 'GRANT nonexistent_role TO "{{name}}";'],
        },
    )
    with pytest.raises(SecretsError) as caught:
        await call(db, "read", "creds/broken")
    assert caught.value.status == 500
    with postgres.connect() as conn:
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-broken-%'"
        ).fetchone()
    assert leftovers == (0,)


async def test_rotate_root(postgres: PgServer) -> None:
    with postgres.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS rotator")
        conn.execute("CREATE ROLE rotator WITH LOGIN CREATEROLE PASSWORD 'Rotator-Old-1'")
    backend = DatabaseBackend(MemStorage(), mount("database/", "database"))
    await call(
        backend,
        "create",
        "config/rot",
        {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": postgres.url_template,
            "username": "rotator",
            "password": "Rotator-Old-1",
            "allowed_roles": "r",
        },
    )
    await call(backend, "update", "rotate-root/rot", {})
    with pytest.raises(psycopg.OperationalError):
        postgres.connect("rotator", "Rotator-Old-1")
    # The engine still works with the password only it knows now.
    await call(backend, "create", "roles/r", {"db_name": "rot", "creation_statements": CREATE[:1]})
    response = await call(backend, "read", "creds/r")
    assert response.lease is not None
    await backend.revoke(response.lease)
    with postgres.connect() as conn:
        conn.execute("DROP ROLE rotator")


async def test_concurrent_creds(db: DatabaseBackend, postgres: PgServer) -> None:
    responses = await asyncio.gather(*(call(db, "read", "creds/reader") for _ in range(8)))
    names = {r.data["username"] for r in responses if r.data is not None}
    assert len(names) == 8
    await asyncio.gather(*(db.revoke(r.lease) for r in responses if r.lease is not None))
    assert not any(postgres.role_exists(n) for n in names)
    assert threading.active_count() >= 1
