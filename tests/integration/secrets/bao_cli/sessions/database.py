"""The database engine against a real PostgreSQL: connection, role, creds, leases."""

from __future__ import annotations

from tests.integration.secrets.bao_cli.harness import Session, bao

CREATE_SQL = (
    """CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"""
    "\n"
)

SESSIONS = [
    Session(
        "database-postgres",
        [
            bao("secrets", "enable", "database"),
            bao(
                "write",
                "database/config/pg",
                "plugin_name=postgresql-database-plugin",
                "connection_url=${pg_url}",
                "username=${pg_user}",
                "password=${pg_password}",
                "allowed_roles=reader",
            ),
            bao("read", "database/config/pg"),
            bao("list", "database/config"),
            bao(
                "write",
                "database/roles/reader",
                "db_name=pg",
                "creation_statements=@create.sql",
                "default_ttl=1h",
                "max_ttl=2h",
                files={"create.sql": CREATE_SQL},
            ),
            bao("read", "database/roles/reader"),
            bao("list", "database/roles"),
            # As a child token: both name it "token" (dev root tokens differ in name).
            bao("token", "create", "-field=token", capture="dbt"),
            bao(
                "read",
                "-format=json",
                "database/creds/reader",
                capture_json={"lease": "lease_id"},
                token="${dbt}",
            ),
            bao("lease", "lookup", "${lease}"),
            bao("lease", "renew", "${lease}"),
            bao("lease", "renew", "-increment=30m", "${lease}"),
            bao("lease", "revoke", "${lease}"),
            bao("lease", "lookup", "${lease}"),
            bao("read", "database/creds/nobody"),
            bao("read", "database/creds/reader", token="${dbt}"),
            bao("lease", "revoke", "-prefix", "database/creds/reader"),
        ],
        needs_postgres=True,
    ),
]
