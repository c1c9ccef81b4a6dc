"""Dynamic PostgreSQL credentials through the real HTTP server with hvac: lease revoke,
renew and expiry drop the real role."""

from __future__ import annotations

import time

import hvac
import psycopg
import pytest
from hvac.exceptions import InvalidRequest

from tests.integration.secrets.conftest import VaultServer
from tests.integration.secrets.engines.conftest import PgServer

CREATE = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT pg_read_all_data TO "{{name}}";',
]


@pytest.fixture
def client(vault_server: VaultServer, postgres: PgServer) -> hvac.Client:
    client = vault_server.client()
    client.adapter.strict_http = True  # LIST as GET ?list=true (httptools refuses LIST)
    client.sys.enable_secrets_engine("database")
    client.secrets.database.configure(
        "pg",
        "postgresql-database-plugin",
        verify_connection=True,
        allowed_roles=["reader", "short"],
        connection_url=postgres.url_template,
        username=postgres.root_user,
        password=postgres.root_password,
    )
    client.secrets.database.create_role("reader", "pg", CREATE, default_ttl="1h", max_ttl="2h")
    return client


def wait_until_gone(postgres: PgServer, username: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not postgres.role_exists(username):
            return True
        time.sleep(0.1)
    return False


def test_configure_hides_password(client: hvac.Client, postgres: PgServer) -> None:
    connection = client.secrets.database.read_connection("pg")["data"]
    assert connection["plugin_name"] == "postgresql-database-plugin"
    assert connection["connection_details"]["username"] == postgres.root_user
    assert postgres.root_password not in str(connection)
    assert client.secrets.database.list_connections()["data"]["keys"] == ["pg"]
    assert client.secrets.database.list_roles()["data"]["keys"] == ["reader"]
    with pytest.raises(InvalidRequest, match="error verifying connection"):
        client.secrets.database.configure(
            "bad",
            "postgresql-database-plugin",
            connection_url=postgres.url_template,
            username=postgres.root_user,
            password="not-the-password",
        )


def test_generate_login_revoke(client: hvac.Client, postgres: PgServer) -> None:
    creds = client.secrets.database.generate_credentials("reader")
    assert creds["lease_duration"] == 3600 and creds["renewable"] is True
    username, password = creds["data"]["username"], creds["data"]["password"]
    with postgres.connect(username, password) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (username,)

    renewed = client.sys.renew_lease(creds["lease_id"], increment=1800)
    assert renewed["lease_duration"] == 1800

    client.sys.revoke_lease(creds["lease_id"])
    assert not postgres.role_exists(username)
    with pytest.raises(psycopg.OperationalError):
        postgres.connect(username, password)


def test_short_ttl_expires_and_drops_role(client: hvac.Client, postgres: PgServer) -> None:
    client.secrets.database.create_role("short", "pg", CREATE[:1], default_ttl="2s", max_ttl="2s")
    creds = client.secrets.database.generate_credentials("short")
    assert creds["lease_duration"] == 2
    username = creds["data"]["username"]
    assert postgres.role_exists(username)
    assert wait_until_gone(postgres, username, 8), "the lease manager did not revoke on expiry"


def test_disallowed_and_unknown_roles(client: hvac.Client) -> None:
    client.secrets.database.create_role("other", "pg", CREATE[:1])
    with pytest.raises(InvalidRequest, match="other is not an allowed role"):
        client.secrets.database.generate_credentials("other")
    with pytest.raises(InvalidRequest, match="unknown role"):
        client.secrets.database.generate_credentials("missing")
