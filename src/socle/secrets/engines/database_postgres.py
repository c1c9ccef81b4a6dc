"""The ``postgresql-database-plugin``: dynamic PostgreSQL roles through psycopg.

Every call opens one short connection as the configured root user, does its work in a
transaction and closes it; psycopg is synchronous, so calls run in a worker thread and
never block the event loop. Errors from the driver are translated into
:class:`DatabaseError` with the root password scrubbed from the message.

Revocation without custom statements locks the role out first (``NOLOGIN``), ends its
sessions, hands whatever it created to the root user (``REASSIGN OWNED``), drops its
privileges (``DROP OWNED``) and drops it; a role that is already gone counts as revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from socle.secrets.engines._db_templates import (
    TemplateError,
    quote_identifier,
    quote_literal,
    render,
    render_connection_url,
)
from socle.secrets.engines._db_types import ConnectionConfig, DatabaseError

CONNECT_TIMEOUT = 5
T = TypeVar("T")


class PostgresPlugin:
    name = "postgresql-database-plugin"

    async def verify(self, config: ConnectionConfig) -> None:
        def check(conn: psycopg.Connection[Any]) -> None:
            conn.execute("SELECT 1")

        await self._run(config, check)

    async def create_user(
        self,
        config: ConnectionConfig,
        statements: Sequence[str],
        username: str,
        password: str,
        expiration: str,
    ) -> None:
        values = {
            "name": username,
            "username": username,
            "password": password,
            "expiration": expiration,
        }
        rendered = _render_all(statements, values)

        def create(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                for statement in rendered:
                    conn.execute(statement.encode())

        await self._run(config, create)

    async def renew_user(
        self, config: ConnectionConfig, statements: Sequence[str], username: str, expiration: str
    ) -> None:
        values = {"name": username, "username": username, "expiration": expiration}
        if statements:
            rendered = _render_all(statements, values)
        else:
            rendered = [
                f"ALTER ROLE {quote_identifier(username)} VALID UNTIL {quote_literal(expiration)}"
            ]

        def renew(conn: psycopg.Connection[Any]) -> None:
            if not _role_exists(conn, username):
                raise DatabaseError(f"role {username} does not exist")
            with conn.transaction():
                for statement in rendered:
                    conn.execute(statement.encode())

        await self._run(config, renew)

    async def revoke_user(
        self, config: ConnectionConfig, statements: Sequence[str], username: str
    ) -> None:
        values = {"name": username, "username": username}
        rendered = _render_all(statements, values) if statements else None

        def revoke(conn: psycopg.Connection[Any]) -> None:
            role = sql.Identifier(username)
            if not _role_exists(conn, username):
                if rendered is None:
                    return
            else:
                # Lock out and disconnect first so nothing new happens while we drop.
                conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE usename = %s AND pid <> pg_backend_pid()",
                    (username,),
                )
                if rendered is None:
                    # A CREATEROLE (not superuser) root may only reassign objects of roles
                    # it is a member of; become one (dropped with the role just after).
                    with contextlib.suppress(psycopg.Error):
                        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
            with conn.transaction():
                if rendered is not None:
                    for statement in rendered:
                        conn.execute(statement.encode())
                    return
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))
                conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))

        await self._run(config, revoke)

    async def rotate_root(
        self, config: ConnectionConfig, statements: Sequence[str], new_password: str
    ) -> None:
        values = {"name": config.username, "username": config.username, "password": new_password}
        if statements:
            rendered = _render_all(statements, values)
        else:
            rendered = [
                f"ALTER ROLE {quote_identifier(config.username)} WITH PASSWORD {quote_literal(new_password)}"
            ]

        def rotate(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                for statement in rendered:
                    conn.execute(statement.encode())

        await self._run(config, rotate, scrub=(new_password,))

    async def _run(
        self,
        config: ConnectionConfig,
        work: Callable[[psycopg.Connection[Any]], T],
        scrub: Sequence[str] = (),
    ) -> T:
        secrets_to_hide = [s for s in (config.password, *scrub) if s]

        def blocking() -> T:
            conninfo = render_connection_url(
                config.connection_url, config.username, config.password
            )
            try:
                with psycopg.connect(
                    conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True
                ) as conn:
                    return work(conn)
            except psycopg.Error as exc:
                raise DatabaseError(_scrub(str(exc).strip(), secrets_to_hide)) from None

        return await asyncio.to_thread(blocking)


def _role_exists(conn: psycopg.Connection[Any], username: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)).fetchone()
    return row is not None


def _render_all(statements: Sequence[str], values: dict[str, str]) -> list[str]:
    try:
        return [render(statement, values) for statement in statements if statement.strip()]
    except TemplateError as exc:
        raise DatabaseError(f"cannot render statement: {exc}") from None


def _scrub(message: str, hidden: Sequence[str]) -> str:
    for secret in hidden:
        message = message.replace(secret, "*****")
    return message
